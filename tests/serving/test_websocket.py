"""The room WebSocket against real uvicorn servers (committed data, real Redis pub/sub)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import jwt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from dbschema.models import User, UserRole
from knowledge import courses, rooms, users
from knowledge.platform import Platform
from knowledge.settings import Settings
from serving.auth.security import ACCESS_COOKIE, CSRF_COOKIE, CSRF_HEADER
from serving.chat.broadcast import (
    CLOSE_REMOVED,
    CLOSE_ROOM_DELETED,
    CLOSE_SESSION_ENDED,
    CLOSE_SLOW_CLIENT,
    Broadcaster,
    Connection,
)
from tests.serving.conftest import (
    LiveServer,
    Person,
    committed_person,
    committed_room,
    mint_cookies,
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
    return refused.value.response.status_code


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def server_log() -> Iterator[list[logging.LogRecord]]:
    """What uvicorn logs meanwhile (its loggers do not propagate to pytest's handler)."""
    handler = _Records()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


#: A socket must be closed this soon after the change that ends its access.
CLOSE_WITHIN = 1.0


async def closed_within(ws: ClientConnection, seconds: float = CLOSE_WITHIN) -> int:
    """The close code the server sends within ``seconds`` (a timeout fails the test)."""

    async def drain() -> None:
        while True:
            await ws.recv()

    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(drain(), seconds)
    assert closed.value.rcvd is not None, "the server did not send a close frame"
    return closed.value.rcvd.code


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
    """Every refused handshake is closed before it is accepted (HTTP 403) and the server logs
    no error for it (a denial response makes uvicorn log "ASGI callable returned without
    completing handshake")."""
    member = await committed_person(platform, api_settings)
    outsider = await committed_person(platform, api_settings)
    room = await committed_room(platform, member)
    tampered = member.cookies[ACCESS_COOKIE][:-3] + "abc"
    claims = jwt.decode(member.cookies[ACCESS_COOKIE], options={"verify_signature": False})
    expired = jwt.encode(
        {**claims, "iat": int(time.time()) - 600, "exp": int(time.time()) - 5},
        api_settings.secret_key,
        algorithm="HS256",
    )
    with server_log() as records:
        refusals = [
            await denied(live, room),  # anonymous
            await denied(live, room, person=outsider),  # not a member
            await denied(live, str(uuid.uuid4()), person=member),  # no such room
            await denied(live, room, cookie=f"{ACCESS_COOKIE}={tampered}"),
            await denied(live, room, person=member, origin="http://evil.test"),
            await denied(live, room, cookie=f"{ACCESS_COOKIE}={expired}"),
            await denied(live, "not-a-uuid", person=member),  # path validation
            await denied(live, room, person=member, after=-1),  # query validation
        ]
        with pytest.raises(InvalidStatus) as nul:  # NUL in the query (input hygiene)
            async with connect(
                f"{live.ws_url}/api/v1/rooms/{room}/ws?after=1%00",
                additional_headers={"Cookie": member.cookie_header},
            ):
                pass
        refusals.append(nul.value.response.status_code)
        await asyncio.sleep(0.2)  # let the server finish each connection
    errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    assert errors == []
    assert refusals == [403] * len(refusals)
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
    live: LiveServer, live2: LiveServer, platform: Platform, api_settings: Settings
) -> None:
    """Removed on one API process, the socket held by the other closes at once; another
    member's socket stays open."""
    admin = await committed_person(platform, api_settings, UserRole.admin)
    hal = await committed_person(platform, api_settings)
    ida = await committed_person(platform, api_settings)
    room = await committed_room(platform, hal, ida)
    async with socket(live2, hal, room) as ws, socket(live2, ida, room) as stays:
        await ready(ws)
        await ready(stays)
        async with admin.http(live) as client:
            removed = await client.delete(f"/api/v1/rooms/{room}/members/{hal.user.id}")
            assert removed.status_code == 204
        assert await closed_within(ws) == CLOSE_REMOVED
        assert (await frame(stays))["type"] == "member.removed"
        message = await post(live, ida, room, "still here")
        assert (await frame(stays))["message"]["id"] == message["id"]


async def second_session(platform: Platform, settings: Settings, person: Person) -> Person:
    """The same user logged in a second time (another login session)."""
    async with platform.session() as session:
        user = await session.get(User, person.user.id)
        assert user is not None
        cookies = await mint_cookies(session, settings, user)
        await session.commit()
    return Person(person.user, cookies)


async def test_logout_closes_that_sessions_sockets(
    live: LiveServer, live2: LiveServer, platform: Platform, api_settings: Settings
) -> None:
    kim = await committed_person(platform, api_settings)
    other_tab = await second_session(platform, api_settings, kim)
    room = await committed_room(platform, kim)
    async with socket(live2, kim, room) as ws, socket(live2, other_tab, room) as kept:
        await ready(ws)
        await ready(kept)
        async with kim.http(live) as client:
            assert (await client.post("/api/v1/auth/logout")).status_code == 204
        assert await closed_within(ws) == CLOSE_SESSION_ENDED
        # The user's other login session is not logged out: its socket goes on.
        message = await post(live, other_tab, room, "other tab")
        assert (await frame(kept))["message"]["id"] == message["id"]


async def test_session_revoked_by_refresh_token_reuse_closes_its_sockets(
    live: LiveServer, platform: Platform, api_settings: Settings
) -> None:
    from datetime import timedelta

    import httpx
    from sqlalchemy import update

    from dbschema.models import RefreshToken
    from serving.auth.security import REFRESH_COOKIE, hash_password, hash_refresh_token

    async with platform.session() as session:
        user = await users.create_user(
            session,
            f"reuse.{uuid.uuid4().hex[:8]}@serving.test",
            "Reuse",
            UserRole.student,
            await hash_password("reuse-password-1"),
        )
        await session.commit()
    person = Person(user, {})
    room = await committed_room(platform, person)
    async with httpx.AsyncClient(base_url=live.url) as client:
        login = await client.post(
            "/api/v1/auth/login", json={"email": user.email, "password": "reuse-password-1"}
        )
        assert login.status_code == 200
        csrf = {CSRF_HEADER: client.cookies[CSRF_COOKIE]}
        spent = client.cookies.get(REFRESH_COOKIE, path="/api/v1/auth")
        assert (await client.post("/api/v1/auth/refresh", headers=csrf)).status_code == 200
        cookie = f"{ACCESS_COOKIE}={client.cookies[ACCESS_COOKIE]}"
        async with socket(live, None, room, cookie=cookie) as ws:
            await ready(ws)
            async with platform.session() as session:  # first used long ago
                await session.execute(
                    update(RefreshToken)
                    .where(RefreshToken.token_hash == hash_refresh_token(str(spent)))
                    .values(used_at=RefreshToken.used_at - timedelta(minutes=10))
                )
                await session.commit()
            async with httpx.AsyncClient(base_url=live.url) as thief:
                thief.cookies.set(REFRESH_COOKIE, str(spent), path="/api/v1/auth")
                thief.cookies.set(CSRF_COOKIE, csrf[CSRF_HEADER])
                reused = await thief.post("/api/v1/auth/refresh", headers=csrf)
                assert reused.status_code == 401
            assert await closed_within(ws) == CLOSE_SESSION_ENDED


async def test_disabling_an_account_closes_its_sockets(
    live: LiveServer, live2: LiveServer, platform: Platform, api_settings: Settings
) -> None:
    admin = await committed_person(platform, api_settings, UserRole.admin)
    lou = await committed_person(platform, api_settings)
    lou_elsewhere = await second_session(platform, api_settings, lou)
    room = await committed_room(platform, lou)
    async with socket(live, lou, room) as one, socket(live2, lou_elsewhere, room) as two:
        await ready(one)
        await ready(two)
        async with admin.http(live) as client:
            changed = await client.patch(f"/api/v1/users/{lou.user.id}", json={"is_active": False})
            assert changed.status_code == 200
        assert await closed_within(one) == CLOSE_SESSION_ENDED
        assert await closed_within(two) == CLOSE_SESSION_ENDED


async def test_deleting_a_room_closes_its_sockets(
    live: LiveServer, live2: LiveServer, platform: Platform, api_settings: Settings
) -> None:
    admin = await committed_person(platform, api_settings, UserRole.admin)
    max_, ned, oli = [await committed_person(platform, api_settings) for _ in range(3)]
    room = await committed_room(platform, max_, ned)
    elsewhere = await committed_room(platform, oli)
    async with (
        socket(live, max_, room) as first,
        socket(live2, ned, room) as second,
        socket(live2, oli, elsewhere) as other_room,
    ):
        for ws in (first, second, other_room):
            await ready(ws)
        async with admin.http(live) as client:
            assert (await client.delete(f"/api/v1/rooms/{room}")).status_code == 204
        assert await closed_within(first) == CLOSE_ROOM_DELETED
        assert await closed_within(second) == CLOSE_ROOM_DELETED
        message = await post(live, oli, elsewhere, "unaffected")
        assert (await frame(other_room))["message"]["id"] == message["id"]


async def test_a_teacher_removed_from_the_course_loses_its_rooms_sockets(
    live: LiveServer, platform: Platform, api_settings: Settings
) -> None:
    """Not a room member but a teacher of the course: removal from the course is what ends
    the access, and the socket re-checks it at once."""
    admin = await committed_person(platform, api_settings, UserRole.admin)
    pam = await committed_person(platform, api_settings, UserRole.teacher)
    room = await committed_room(platform)
    async with platform.session() as session:
        course_id = (await rooms.get_room(session, uuid.UUID(room))).course_id
        await courses.set_course_member(session, course_id, pam.user.id, "teacher")
        await session.commit()
    async with socket(live, pam, room) as ws:
        await ready(ws)
        async with admin.http(live) as client:
            removed = await client.delete(f"/api/v1/courses/{course_id}/members/{pam.user.id}")
            assert removed.status_code == 204
        assert await closed_within(ws) == CLOSE_REMOVED


async def test_login_over_http_then_listen(
    live: LiveServer, platform: Platform, api_settings: Settings
) -> None:
    """The README walk-through: real login, cookies from the response, then the socket."""
    import httpx

    from serving.auth.security import hash_password

    async with platform.session() as session:
        user = await users.create_user(
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
