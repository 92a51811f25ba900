"""The room WebSocket against real uvicorn servers (committed data, real Redis pub/sub)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from dbschema.models import UserRole
from knowledge import rooms
from knowledge.platform import Platform
from knowledge.settings import Settings
from serving.auth.security import ACCESS_COOKIE, CSRF_COOKIE, CSRF_HEADER
from serving.chat.broadcast import CLOSE_SLOW_CLIENT, Broadcaster, Connection
from tests.serving.conftest import (
    LiveServer,
    Person,
    committed_person,
    committed_room,
    wait_for,
)

RECV_TIMEOUT = 20  # a hang guard, not a timing assertion


@asynccontextmanager
async def socket(
    server: LiveServer,
    person: Person | None,
    room_id: str,
    after: int | None = None,
    origin: str | None = None,
    cookie: str | None = None,
) -> AsyncIterator[ClientConnection]:
    url = f"{server.ws_url}/api/v1/rooms/{room_id}/ws"
    if after is not None:
        url += f"?after={after}"
    headers = {}
    if cookie is not None:
        headers["Cookie"] = cookie
    elif person is not None:
        headers["Cookie"] = person.cookie_header
    async with connect(url, additional_headers=headers, origin=origin, open_timeout=30) as ws:  # type: ignore[arg-type]
        yield ws


async def frame(ws: ClientConnection, skip: tuple[str, ...] = ("ping",)) -> dict[str, Any]:
    while True:
        data = json.loads(await asyncio.wait_for(ws.recv(), RECV_TIMEOUT))
        if data["type"] not in skip:
            return data


async def ready(ws: ClientConnection) -> dict[str, Any]:
    first = await frame(ws)
    assert first["type"] == "ready", first
    return first


async def post(server: LiveServer, person: Person, room_id: str, content: str) -> dict[str, Any]:
    async with person.http(server) as client:
        response = await client.post(f"/api/v1/rooms/{room_id}/messages", json={"content": content})
    assert response.status_code == 201, response.text
    return response.json()


async def denied(server: LiveServer, room_id: str, **kwargs: Any) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with socket(server, kwargs.pop("person", None), room_id, **kwargs):
            pass
    body = json.loads(refused.value.response.body or b"{}")
    assert "error" in body
    return refused.value.response.status_code


async def test_two_clients_in_a_room_and_one_in_another(
    live: LiveServer, platform: Platform, api_settings: Settings
) -> None:
    alice = await committed_person(platform, api_settings)
    bob = await committed_person(platform, api_settings)
    carol = await committed_person(platform, api_settings)
    room_a = await committed_room(platform, alice, bob)
    room_b = await committed_room(platform, carol)
    async with (
        socket(live, alice, room_a) as wa,
        socket(live, bob, room_a) as wb,
        socket(live, carol, room_b) as wc,
    ):
        for ws in (wa, wb, wc):
            await ready(ws)
        message = await post(live, alice, room_a, "hello room A")
        for ws in (wa, wb):
            got = await frame(ws)
            assert got["type"] == "message.created"
            assert got["message"]["id"] == message["id"]
            assert got["message"]["content"] == "hello room A"

        async with alice.http(live) as client:
            edited = await client.patch(
                f"/api/v1/rooms/{room_a}/messages/{message['id']}", json={"content": "hi A"}
            )
            assert edited.status_code == 200
            for ws in (wa, wb):
                got = await frame(ws)
                assert got["type"] == "message.edited" and got["message"]["content"] == "hi A"
            deleted = await client.delete(f"/api/v1/rooms/{room_a}/messages/{message['id']}")
            assert deleted.status_code == 204
            for ws in (wa, wb):
                got = await frame(ws)
                assert got == {
                    "type": "message.deleted",
                    "message_id": message["id"],
                    "room_id": room_a,
                }

        # Room B saw none of it: its first frame is its own message.
        own = await post(live, carol, room_b, "hello room B")
        got = await frame(wc)
        assert got["type"] == "message.created" and got["message"]["id"] == own["id"]


async def test_two_app_instances_share_broadcasts_through_redis(
    live: LiveServer, live2: LiveServer, platform: Platform, api_settings: Settings
) -> None:
    dave = await committed_person(platform, api_settings)
    erin = await committed_person(platform, api_settings)
    room = await committed_room(platform, dave, erin)
    async with socket(live2, dave, room) as on_second, socket(live, erin, room) as on_first:
        await ready(on_second)
        await ready(on_first)
        via_first = await post(live, erin, room, "posted through instance 1")
        via_second = await post(live2, dave, room, "posted through instance 2")
        for ws in (on_first, on_second):
            ids = [(await frame(ws))["message"]["id"] for _ in range(2)]
            assert ids == [via_first["id"], via_second["id"]]


async def test_reconnect_with_after_fills_the_gap(
    live: LiveServer, platform: Platform, api_settings: Settings
) -> None:
    fay = await committed_person(platform, api_settings)
    room = await committed_room(platform, fay)
    async with socket(live, fay, room) as ws:
        start = await ready(ws)
        assert start["last_message_id"] is None
        seen = await post(live, fay, room, "before the disconnect")
        assert (await frame(ws))["message"]["id"] == seen["id"]
    missed = [await post(live, fay, room, f"missed {i}") for i in range(3)]
    async with socket(live, fay, room, after=seen["id"]) as ws:
        replayed = [await frame(ws) for _ in missed]
        assert [f["message"]["id"] for f in replayed] == [m["id"] for m in missed]
        assert all(f["replay"] is True for f in replayed)
        resumed = await ready(ws)
        assert resumed["last_message_id"] == missed[-1]["id"]
        assert resumed["replay_complete"] is True
        live_one = await post(live, fay, room, "after the reconnect")
        got = await frame(ws)
        assert got["message"]["id"] == live_one["id"] and "replay" not in got


async def test_handshake_refusals(
    live: LiveServer, platform: Platform, api_settings: Settings
) -> None:
    member = await committed_person(platform, api_settings)
    outsider = await committed_person(platform, api_settings)
    room = await committed_room(platform, member)
    assert await denied(live, room) == 401
    assert await denied(live, room, person=outsider) == 403
    assert await denied(live, str(uuid.uuid4()), person=member) == 404
    tampered = member.cookies[ACCESS_COOKIE][:-3] + "abc"
    assert await denied(live, room, cookie=f"{ACCESS_COOKIE}={tampered}") == 401
    assert await denied(live, room, person=member, origin="http://evil.test") == 403
    claims = jwt.decode(member.cookies[ACCESS_COOKIE], options={"verify_signature": False})
    expired = jwt.encode(
        {**claims, "iat": int(time.time()) - 600, "exp": int(time.time()) - 5},
        api_settings.secret_key,
        algorithm="HS256",
    )
    assert await denied(live, room, cookie=f"{ACCESS_COOKIE}={expired}") == 401
    async with socket(live, member, room, origin="http://spa.test") as ws:
        await ready(ws)
    async with socket(live, member, room, origin=live.url) as ws:  # same origin
        await ready(ws)


async def test_the_socket_closes_when_the_access_token_expires(
    live: LiveServer, platform: Platform, api_settings: Settings
) -> None:
    jo = await committed_person(platform, api_settings)
    room = await committed_room(platform, jo)
    claims = jwt.decode(jo.cookies[ACCESS_COOKIE], options={"verify_signature": False})
    short = jwt.encode({**claims, "exp": int(time.time()) + 2}, api_settings.secret_key, "HS256")
    async with socket(live, None, room, cookie=f"{ACCESS_COOKIE}={short}") as ws:
        await ready(ws)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await frame(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_heartbeat_and_client_ping(
    live2: LiveServer, platform: Platform, api_settings: Settings
) -> None:
    gus = await committed_person(platform, api_settings)
    room = await committed_room(platform, gus)
    async with socket(live2, gus, room) as ws:
        await ready(ws)
        assert (await frame(ws, skip=()))["type"] == "ping"  # live2 beats every 0.2 s
        await ws.send(json.dumps({"type": "ping"}))
        await ws.send("not json")  # ignored
        await ws.send(b"\x00\x01")  # binary: ignored
        assert (await frame(ws))["type"] == "pong"


async def test_removed_member_is_disconnected(
    live: LiveServer, platform: Platform, api_settings: Settings
) -> None:
    admin = await committed_person(platform, api_settings, UserRole.admin)
    hal = await committed_person(platform, api_settings)
    room = await committed_room(platform, hal)
    async with socket(live, hal, room) as ws:
        await ready(ws)
        async with admin.http(live) as client:
            removed = await client.delete(f"/api/v1/rooms/{room}/members/{hal.user.id}")
            assert removed.status_code == 204
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await frame(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


async def test_agent_reply_is_broadcast_like_any_message(
    live: LiveServer, platform: Platform, api_settings: Settings
) -> None:
    ivy = await committed_person(platform, api_settings)
    room = await committed_room(platform, ivy)
    async with socket(live, ivy, room) as ws:
        await ready(ws)
        question = await post(live, ivy, room, "@analytics what is this room about?")
        first, second = await frame(ws), await frame(ws)
        assert first["message"]["id"] == question["id"]
        assert second["type"] == "message.created"
        assert second["message"]["author_kind"] == "agent"
        assert second["message"]["author_name"] == "Analytics Agent"
    async with platform.session() as session:
        stored = await rooms.get_message(session, uuid.UUID(room), second["message"]["id"])
    assert stored.content == second["message"]["content"]


async def test_login_over_http_then_listen(
    live: LiveServer, platform: Platform, api_settings: Settings
) -> None:
    """The README walk-through: real login, cookies from the response, then the socket."""
    import httpx

    from serving.auth.security import hash_password

    async with platform.session() as session:
        user = await rooms.create_user(
            session,
            f"walk.{uuid.uuid4().hex[:8]}@serving.test",
            "Walker",
            UserRole.teacher,
            await hash_password("walk-through-pass"),
        )
        await session.commit()
    async with httpx.AsyncClient(base_url=live.url) as client:
        login = await client.post(
            "/api/v1/auth/login", json={"email": user.email, "password": "walk-through-pass"}
        )
        assert login.status_code == 200
        csrf = {CSRF_HEADER: client.cookies[CSRF_COOKIE]}
        course = (await client.post("/api/v1/courses", json={"name": "Walk"}, headers=csrf)).json()
        room = (
            await client.post(
                "/api/v1/rooms", json={"course_id": course["id"], "name": "Walk"}, headers=csrf
            )
        ).json()
        cookie = f"{ACCESS_COOKIE}={client.cookies[ACCESS_COOKIE]}"
        async with socket(live, None, room["id"], cookie=cookie) as ws:
            await ready(ws)
            sent = await client.post(
                f"/api/v1/rooms/{room['id']}/messages", json={"content": "hi"}, headers=csrf
            )
            assert sent.status_code == 201
            assert (await frame(ws))["message"]["id"] == sent.json()["id"]


async def test_a_slow_client_is_dropped_not_the_room(live: LiveServer) -> None:
    """Fan-out through real Redis pub/sub to two connections, one of which never reads."""
    from redis.asyncio import Redis

    from knowledge.platform import redis_url

    redis = Redis.from_url(redis_url(live.settings))
    broadcaster = Broadcaster(redis)
    await broadcaster.start()
    try:
        room = str(uuid.uuid4())
        slow = Connection(user_id=uuid.uuid4(), queue_size=2)
        fast = Connection(user_id=uuid.uuid4(), queue_size=100)
        await broadcaster.join(room, slow)
        await broadcaster.join(room, fast)
        for i in range(5):
            await broadcaster.publish(room, {"type": "message.created", "message": {"id": i}})
        received = [
            (await asyncio.wait_for(fast.queue.get(), RECV_TIMEOUT)).message_id for _ in range(5)
        ]
        assert received == [0, 1, 2, 3, 4]
        assert slow.closed.is_set() and slow.close_code == CLOSE_SLOW_CLIENT
        # The room goes on for everyone else.
        await broadcaster.publish(room, {"type": "message.created", "message": {"id": 5}})
        assert (await asyncio.wait_for(fast.queue.get(), RECV_TIMEOUT)).message_id == 5
        await broadcaster.leave(room, slow)
        await broadcaster.leave(room, fast)
        assert broadcaster.local_connections(room) == 0

        async def unsubscribed() -> bool:
            counts = await redis.pubsub_numsub(Broadcaster.channel(room))
            return dict(counts).get(Broadcaster.channel(room).encode(), 0) == 0

        await wait_for(unsubscribed)
    finally:
        await broadcaster.stop()
        await redis.aclose()
