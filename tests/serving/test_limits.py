"""What graph questions and builds cost: per-user rate limits (429 with ``Retry-After``) and
full rebuilds for room managers only."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from dbschema.models import UserRole
from tests.serving.conftest import Api, error_code, last_stream_id, state_of, stream_events


@pytest.fixture
def small_limits(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    settings = state_of(app).settings
    monkeypatch.setattr(settings, "graph_query_rate_limit", 3)
    monkeypatch.setattr(settings, "graph_build_rate_limit", 2)
    return 3, 2


async def test_the_query_after_the_limit_gets_429_with_retry_after(
    api: Api, small_limits: tuple[int, int], app: FastAPI, built_room: str
) -> None:
    """On the committed room a real Dagster run built (questions read it outside the test's
    transaction)."""
    queries, _ = small_limits
    member = await api.member_of(built_room)
    client = await api.client(member)
    url = f"/api/v1/rooms/{built_room}/graph/query"
    body = {"question": "who spoke?", "mode": "evidence"}
    for _ in range(queries):
        assert (await client.post(url, json=body)).status_code == 200
    limited = await client.post(url, json=body)
    assert limited.status_code == 429
    assert error_code(limited) == "rate_limited"
    window = state_of(app).settings.graph_rate_window_seconds
    assert 0 < int(limited.headers["Retry-After"]) <= window
    # Per user: someone else in the same room is not limited.
    other = await api.member_of(built_room)
    assert (await (await api.client(other)).post(url, json=body)).status_code == 200
    # A refused question is not counted against anything else: builds still go through.
    build = await client.post(f"/api/v1/rooms/{built_room}/graph/build")
    assert build.status_code == 202


async def test_the_build_after_the_limit_gets_429_and_appends_nothing(
    api: Api, small_limits: tuple[int, int], app: FastAPI
) -> None:
    _, builds = small_limits
    member = await api.user()
    room = await api.room(member)
    client = await api.client(member)
    url = f"/api/v1/rooms/{room.id}/graph/build"
    for _ in range(builds):
        assert (await client.post(url, json={"full": False})).status_code == 202
    since = await last_stream_id(app)
    limited = await client.post(url, json={"full": False})
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) > 0
    assert await stream_events(app, room.id, since) == []


async def test_the_429s_are_documented(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    for path in (
        "/api/v1/rooms/{room_id}/graph/query",
        "/api/v1/rooms/{room_id}/graph/build",
        "/api/v1/auth/login",
    ):
        documented = paths[path]["post"]["responses"]["429"]
        assert "Retry-After" in documented["headers"], path


@pytest.mark.parametrize("role", ["member", "moderator"])
async def test_a_full_rebuild_needs_a_room_manager(api: Api, app: FastAPI, role: str) -> None:
    user = await api.user()
    room = await api.room(user, role=role)
    client = await api.client(user)
    url = f"/api/v1/rooms/{room.id}/graph/build"
    since = await last_stream_id(app)
    full = await client.post(url, json={"full": True})
    if role == "member":
        assert full.status_code == 403
        assert error_code(full) == "forbidden"
        assert await stream_events(app, room.id, since) == []
    else:
        assert full.status_code == 202 and full.json()["full"] is True
    # Everyone in the room may ask for an incremental refresh.
    assert (await client.post(url, json={"full": False})).status_code == 202


async def test_course_teachers_and_admins_may_rebuild(api: Api) -> None:
    teacher = await api.user(UserRole.teacher)
    course = await api.course(teacher)
    room = await api.room(course=course)
    admin = await api.user(UserRole.admin)
    for user in (teacher, admin):
        client = await api.client(user)
        full = await client.post(f"/api/v1/rooms/{room.id}/graph/build", json={"full": True})
        assert full.status_code == 202, full.text
