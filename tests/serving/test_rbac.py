"""Every room endpoint refuses anonymous callers (401) and non-members (403); role rules."""

from __future__ import annotations

import re
import uuid

import pytest
from fastapi import FastAPI

from dbschema.models import UserRole
from serving.permissions import Action, Permissions
from tests.serving.conftest import Api, error_code

BODIES = {
    "messages": {"content": "hello"},
    "artifacts": {"title": "t", "content": "c"},
    "agents": {"name": "helper"},
    "sandbox": {"message": "what happened?"},
    "query": {"question": "what happened?"},
    "members": {"user_id": str(uuid.uuid4()), "role": "member"},
    "golden-questions": {"question": "what happened?", "gold_message_ids": [1]},
    "import": {"format": "jsonl", "content": '{"speaker": "A", "text": "hello"}\n'},
}


def room_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every HTTP operation on a room, from the OpenAPI schema."""
    routes = []
    for path, operations in app.openapi()["paths"].items():
        if "{room_id}" in path:
            routes.extend((method.upper(), path) for method in operations)
    return routes


def _url(path: str, room_id: uuid.UUID) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "room_id":
            return str(room_id)
        if name in ("message_id", "version"):
            return "1"
        return str(uuid.uuid4())

    return re.sub(r"\{(\w+)\}", fill, path)


def _body(method: str, path: str) -> dict | None:
    if method in ("GET", "DELETE"):
        return None
    for key, body in BODIES.items():
        if path.rstrip("/").endswith(key) or (f"/{key}/" in path and path.endswith("}")):
            return body
    if path.endswith("/graph/build"):
        return {"full": False}
    if "/artifacts/" in path:
        return {"title": "t2"}
    if "/agents/" in path:
        return {"system_prompt": "x"}
    if "/messages/" in path:
        return {"content": "edited"}
    return {"name": "renamed"}


async def test_the_room_endpoints_are_all_covered(app: FastAPI) -> None:
    paths = {p for _, p in room_routes(app)}
    for part in (
        "messages",
        "artifacts",
        "agents",
        "graph/build",
        "graph/query",
        "graph/visualize",
        "graph/communities",
        "graph/status",
        "members",
    ):
        assert any(part in p for p in paths), part
    assert len(room_routes(app)) >= 25


async def test_every_room_endpoint_refuses_anonymous_and_non_members(
    api: Api, app: FastAPI
) -> None:
    member = await api.user()
    outsider = await api.user()
    room = await api.room(member)
    anonymous = await api.client()
    stranger = await api.client(outsider)
    checked = 0
    for method, path in room_routes(app):
        url = _url(path, room.id)
        body = _body(method, path)
        response = await anonymous.request(method, url, json=body)
        assert response.status_code == 401, (method, path, response.text)
        assert error_code(response) == "not_authenticated"
        response = await stranger.request(method, url, json=body)
        assert response.status_code == 403, (method, path, response.text)
        assert error_code(response) == "forbidden"
        checked += 1
    assert checked >= 25


async def test_a_missing_room_is_404_for_everyone_logged_in(api: Api) -> None:
    client = await api.client(await api.user(UserRole.admin))
    response = await client.get(f"/api/v1/rooms/{uuid.uuid4()}/messages")
    assert response.status_code == 404
    assert error_code(response) == "not_found"
    malformed = await client.get("/api/v1/rooms/not-a-uuid/messages")
    assert malformed.status_code == 422
    assert error_code(malformed) == "validation_error"


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        (UserRole.super_admin, {"list", "create_admin", "create_student", "course"}),
        (UserRole.admin, {"list", "create_admin", "create_student", "course"}),
        (UserRole.teacher, {"list", "course"}),
        (UserRole.student, set()),
        (UserRole.agent, set()),
    ],
)
async def test_global_permissions_by_role(api: Api, role: UserRole, allowed: set[str]) -> None:
    user = await api.user(role)
    perms = Permissions(api.session)
    found = set()
    if await perms.allowed(user, Action.USER_LIST):
        found.add("list")
    if await perms.allowed(user, Action.USER_CREATE, UserRole.admin):
        found.add("create_admin")
    if await perms.allowed(user, Action.USER_CREATE, UserRole.student):
        found.add("create_student")
    if await perms.allowed(user, Action.COURSE_CREATE):
        found.add("course")
    assert found == allowed
    # Nobody but a super admin grants super admin.
    assert await perms.allowed(user, Action.USER_GRANT_ROLE, UserRole.super_admin) == (
        role == UserRole.super_admin
    )


async def test_room_levels(api: Api) -> None:
    teacher = await api.user(UserRole.teacher)
    course = await api.course(owner=teacher)
    member, moderator, outsider = await api.user(), await api.user(), await api.user()
    agent = await api.user(UserRole.agent)
    room = await api.room(member, agent, course=course)
    await api.room(course=course)
    from knowledge import rooms

    await rooms.set_room_member(api.session, room.id, moderator.id, "moderator")
    perms = Permissions(api.session)
    assert await perms.allowed(member, Action.MESSAGE_POST, room)
    assert not await perms.allowed(member, Action.ROOM_MANAGE, room)
    assert await perms.allowed(moderator, Action.ROOM_MANAGE, room)
    assert await perms.allowed(teacher, Action.ROOM_MANAGE, room)  # owns the course
    assert await perms.allowed(agent, Action.MESSAGE_POST, room)
    assert not await perms.allowed(agent, Action.AGENT_MANAGE, room)
    assert not await perms.allowed(outsider, Action.ROOM_READ, room)
    admin = await api.user(UserRole.admin)
    assert await perms.allowed(admin, Action.ROOM_MANAGE, room)
    member.is_active = False
    assert not await perms.allowed(member, Action.ROOM_READ, room)


async def test_admins_cannot_touch_super_admins(api: Api) -> None:
    admin = await api.user(UserRole.admin)
    root = await api.user(UserRole.super_admin)
    client = await api.client(admin)
    response = await client.patch(f"/api/v1/users/{root.id}", json={"full_name": "pwned"})
    assert response.status_code == 403
    response = await client.delete(f"/api/v1/users/{root.id}")
    assert response.status_code == 403
    response = await client.post(
        "/api/v1/users",
        json={"email": "x@y.z", "full_name": "X", "password": "password123", "role": "super_admin"},
    )
    assert response.status_code == 403
