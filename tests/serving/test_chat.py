"""Messages over HTTP: post, edit, delete, history with cursors, and stream events."""

from __future__ import annotations

from fastapi import FastAPI

from dbschema.models import UserRole
from realtime.events import parse_event
from tests.serving.conftest import Api, error_code, last_stream_id, stream_events


async def test_post_edit_delete_and_events(api: Api, app: FastAPI) -> None:
    alice, bob = await api.user(name="Alice"), await api.user(name="Bob")
    room = await api.room(alice, bob)
    a, b = await api.client(alice), await api.client(bob)
    since = await last_stream_id(app)

    posted = await a.post(f"/api/v1/rooms/{room.id}/messages", json={"content": "Hello, Bob"})
    assert posted.status_code == 201, posted.text
    message = posted.json()
    assert message["author_name"] == "Alice" and message["author_kind"] == "human"
    assert message["edited_at"] is None
    mid = message["id"]

    assert (
        await b.patch(f"/api/v1/rooms/{room.id}/messages/{mid}", json={"content": "x"})
    ).status_code == 403
    assert (await b.delete(f"/api/v1/rooms/{room.id}/messages/{mid}")).status_code == 403
    edited = await a.patch(
        f"/api/v1/rooms/{room.id}/messages/{mid}", json={"content": "Hello, Bob!"}
    )
    assert edited.status_code == 200
    assert edited.json()["content"] == "Hello, Bob!" and edited.json()["edited_at"]
    assert (await b.get(f"/api/v1/rooms/{room.id}/messages/{mid}")).json()[
        "content"
    ] == "Hello, Bob!"
    assert (await a.delete(f"/api/v1/rooms/{room.id}/messages/{mid}")).status_code == 204
    gone = await b.get(f"/api/v1/rooms/{room.id}/messages/{mid}")
    assert gone.status_code == 404
    assert (await a.delete(f"/api/v1/rooms/{room.id}/messages/{mid}")).status_code == 404

    events = await stream_events(app, room.id, since)
    assert [e["type"] for e in events] == ["message.created", "message.edited", "message.deleted"]
    parsed = [parse_event(e) for e in events]
    assert all(getattr(p, "message_id", None) == mid for p in parsed)
    assert parsed[0].actor_id == str(alice.id)


async def test_moderators_delete_any_message(api: Api) -> None:
    author, moderator = await api.user(), await api.user()
    room = await api.room(author)
    from knowledge import rooms

    await rooms.set_room_member(api.session, room.id, moderator.id, "moderator")
    await api.commit()
    mid = (
        await (await api.client(author)).post(
            f"/api/v1/rooms/{room.id}/messages", json={"content": "spam"}
        )
    ).json()["id"]
    mod = await api.client(moderator)
    # Moderators may delete but not rewrite someone else's words.
    assert (
        await mod.patch(f"/api/v1/rooms/{room.id}/messages/{mid}", json={"content": "x"})
    ).status_code == 403
    assert (await mod.delete(f"/api/v1/rooms/{room.id}/messages/{mid}")).status_code == 204


async def test_history_cursor_pagination(api: Api) -> None:
    user = await api.user()
    room = await api.room(user)
    client = await api.client(user)
    ids = []
    for i in range(7):
        response = await client.post(f"/api/v1/rooms/{room.id}/messages", json={"content": f"m{i}"})
        ids.append(response.json()["id"])
    url = f"/api/v1/rooms/{room.id}/messages"

    newest = (await client.get(url, params={"limit": 3})).json()
    assert [m["id"] for m in newest["items"]] == ids[4:]
    assert newest["has_more"] and newest["next_cursor"] == ids[4]
    older = (await client.get(url, params={"limit": 3, "before": newest["next_cursor"]})).json()
    assert [m["id"] for m in older["items"]] == ids[1:4]
    oldest = (await client.get(url, params={"limit": 3, "before": older["next_cursor"]})).json()
    assert [m["id"] for m in oldest["items"]] == ids[:1]
    assert not oldest["has_more"] and oldest["next_cursor"] is None

    catch_up = (await client.get(url, params={"limit": 4, "after": ids[1]})).json()
    assert [m["id"] for m in catch_up["items"]] == ids[2:6]
    assert catch_up["has_more"] and catch_up["next_cursor"] == ids[5]
    rest = (await client.get(url, params={"after": catch_up["next_cursor"]})).json()
    assert [m["id"] for m in rest["items"]] == ids[6:]
    assert not rest["has_more"]


async def test_bad_messages_are_refused(api: Api, app: FastAPI) -> None:
    user = await api.user()
    room = await api.room(user)
    client = await api.client(user)
    url = f"/api/v1/rooms/{room.id}/messages"
    limit = api.settings.max_message_chars
    for body in (
        {"content": ""},
        {"content": "   "},
        {"content": "x" * (limit + 1)},
        {},
        {"content": 5},
    ):
        response = await client.post(url, json=body)
        assert response.status_code == 422, body
        assert error_code(response) in ("validation_error", "invalid_input")
    for params in ({"limit": 0}, {"limit": 10_000}, {"before": -1}, {"after": 2**64}):
        assert (await client.get(url, params=params)).status_code == 422, params
    assert (await client.get(f"{url}/0")).status_code == 422
    assert (await client.get(f"{url}/{2**63 - 1}")).status_code == 404
    assert (await client.get(url)).json()["items"] == []


async def test_agents_post_as_agents(api: Api) -> None:
    agent = await api.user(UserRole.agent, name="Helper")
    room = await api.room(agent)
    client = await api.client(agent)
    response = await client.post(f"/api/v1/rooms/{room.id}/messages", json={"content": "beep"})
    assert response.status_code == 201
    assert response.json()["author_kind"] == "agent"
