"""API fixtures on top of tests/conftest.py (real embedded PostgreSQL and Redis).

- ``app``: one application for the session, its lifespan entered once;
- ``db``: per test, one connection in a transaction that is rolled back at the end; every
  session the app opens during the test (requests, background tasks) is a session on that
  connection (in a savepoint), so nothing a test writes outlives it;
- ``api``: makes users, courses, rooms and logged-in ``httpx.AsyncClient``s over the app;
- ``live`` / ``live2``: the app served by uvicorn on 127.0.0.1 in background threads (real
  HTTP and WebSocket; data committed), two instances sharing one Redis.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from dagster import DagsterInstance
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from coagent.runs import run_room_job
from dbschema.models import AuthSession, Course, Room, User, UserRole
from knowledge import courses, rooms, users
from knowledge.platform import Platform, open_platform
from knowledge.sample import load_sample
from knowledge.settings import Settings
from serving.app import create_app
from serving.auth.security import (
    ACCESS_COOKIE,
    CSRF_COOKIE,
    CSRF_HEADER,
    create_access_token,
    hash_password,
    new_csrf_token,
)
from serving.state import AppState
from tests.conftest import make_room

SUPERUSER = "root@serving.test"
SUPERUSER_PASSWORD = "root-password-123"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def api_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "first_superuser": SUPERUSER,
            "first_superuser_password": SUPERUSER_PASSWORD,
            # Every test logs in from the same address.
            "login_ip_rate_limit": 100_000,
            "login_rate_limit": 5,
            "cors_origins": ["http://spa.test"],
            "secret_key": "serving-tests-secret-key-0123456789abcdef",
            # Agents' API keys are stored encrypted; without a key the API refuses them (422
            # secrets_unavailable), which the fuzzer rightly reports as valid data refused.
            "fernet_secret_key": base64.urlsafe_b64encode(
                b"serving-tests-fernet-key-32bytes"
            ).decode(),
        }
    )


@pytest.fixture(scope="session")
async def app(api_settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(api_settings)
    async with app.router.lifespan_context(app):
        yield app


def state_of(app: FastAPI) -> AppState:
    state: AppState = app.state.coagent
    return state


@pytest.fixture
async def db(app: FastAPI) -> AsyncIterator[AsyncSession]:
    state = state_of(app)
    original = state.session_factory
    async with state.platform.engine.connect() as conn:
        transaction = await conn.begin()
        session = AsyncSession(
            bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False
        )

        @asynccontextmanager
        async def shared() -> AsyncIterator[AsyncSession]:
            # Its own session (so a failing request's rollback does not expire the test's
            # objects) on the test's connection, inside a savepoint of the test's transaction.
            async with AsyncSession(
                bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False
            ) as request_session:
                yield request_session

        state.session_factory = shared
        try:
            yield session
        finally:
            state.session_factory = original
            await session.close()
            await transaction.rollback()


async def mint_cookies(session: AsyncSession, settings: Settings, user: User) -> dict[str, str]:
    """Cookies of a fresh login session of ``user`` (without the password round trip)."""
    login = AuthSession(user_id=user.id)
    session.add(login)
    await session.flush()
    access, _ = create_access_token(settings, user.id, login.id)
    return {ACCESS_COOKIE: access, CSRF_COOKIE: new_csrf_token()}


def client_with(app: FastAPI, cookies: dict[str, str] | None = None) -> httpx.AsyncClient:
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 50000)),
        base_url="http://testserver",
    )
    for name, value in (cookies or {}).items():
        client.cookies.set(name, value, domain="testserver.local")
    if cookies and CSRF_COOKIE in cookies:
        client.headers[CSRF_HEADER] = cookies[CSRF_COOKIE]
    return client


@dataclass
class Api:
    """Builds test data inside the test's transaction and clients logged in as anyone."""

    app: FastAPI
    session: AsyncSession
    settings: Settings

    async def user(
        self, role: UserRole = UserRole.student, password: str | None = None, name: str = "Tester"
    ) -> User:
        hashed = await hash_password(password) if password else None
        user = await users.create_user(
            self.session, f"{role.value}.{uuid.uuid4().hex[:10]}@serving.test", name, role, hashed
        )
        await self.commit()
        return user

    async def commit(self) -> None:
        """Make test data survive a failing request's rollback (it is a savepoint release:
        the test's transaction is still rolled back at the end)."""
        await self.session.commit()

    async def client(self, user: User | None = None) -> httpx.AsyncClient:
        cookies = await mint_cookies(self.session, self.settings, user) if user else None
        await self.commit()
        return client_with(self.app, cookies)

    async def member_of(self, room_id: str | uuid.UUID, role: UserRole = UserRole.student) -> User:
        """A new user, member of an existing (e.g. committed) room."""
        user = await self.user(role)
        await rooms.set_room_member(self.session, uuid.UUID(str(room_id)), user.id, "member")
        await self.commit()
        return user

    async def course(self, owner: User | None = None) -> Course:
        course = await courses.create_course(
            self.session, f"course {uuid.uuid4().hex[:6]}", owner.id if owner else None
        )
        await self.commit()
        return course

    async def room(
        self, *members: User, course: Course | None = None, role: str = "member"
    ) -> Room:
        course = course or await self.course()
        room = await rooms.create_room(self.session, course.id, f"room {uuid.uuid4().hex[:6]}")
        for member in members:
            await rooms.set_room_member(self.session, room.id, member.id, role)
        await self.commit()
        return room


@pytest.fixture
async def api(app: FastAPI, db: AsyncSession, api_settings: Settings) -> AsyncIterator[Api]:
    yield Api(app, db, api_settings)


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message"} <= set(body["error"]), body
    return str(body["error"]["code"])


async def stream_events(app: FastAPI, room_id: Any, since: str = "-") -> list[dict[str, str]]:
    """Entries of ``graphrag:events`` for one room after ``since``, oldest first."""
    state = state_of(app)
    start = since if since == "-" else f"({since}"  # exclusive of ``since`` itself
    entries = await state.redis.xrange(state.events.stream, start, "+")
    found = []
    for _, fields in entries:
        decoded = {k.decode(): v.decode() for k, v in fields.items()}
        if decoded["room_id"] == str(room_id):
            found.append(decoded)
    return found


async def last_stream_id(app: FastAPI) -> str:
    state = state_of(app)
    last = await state.redis.xrevrange(state.events.stream, "+", "-", count=1)
    return last[0][0].decode() if last else "0-0"


GRAPH_SAMPLE = [(s.speaker, s.text) for s in load_sample()[:90]]


@pytest.fixture(scope="session")
def built_room(settings: Settings, dagster_instance: DagsterInstance) -> str:
    """A committed room of sample dialogue whose graph a real Dagster run materialized."""

    async def create() -> str:
        async with open_platform(settings) as platform:
            return await make_room(platform, GRAPH_SAMPLE, "graph api")

    room_id = asyncio.run(create())
    outcome = run_room_job(dagster_instance, "refresh_room", room_id, show_progress=False)
    assert outcome.success, outcome.error
    return room_id


# live servers


class LiveServer:
    """One app served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        self.settings = settings
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self._socket = sock
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on", ws_ping_interval=None)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the live server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self._socket.close()


@pytest.fixture(scope="session")
def live(api_settings: Settings) -> Iterator[LiveServer]:
    server = LiveServer(api_settings)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def live2(api_settings: Settings) -> Iterator[LiveServer]:
    """A second API process (same database, same Redis), with a fast heartbeat."""
    server = LiveServer(api_settings.model_copy(update={"ws_heartbeat_seconds": 0.2}))
    server.start()
    yield server
    server.stop()


@dataclass
class Person:
    user: User
    cookies: dict[str, str]

    @property
    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())

    def http(self, server: LiveServer) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=server.url, timeout=30)
        for name, value in self.cookies.items():
            client.cookies.set(name, value)
        client.headers[CSRF_HEADER] = self.cookies[CSRF_COOKIE]
        return client


async def committed_person(
    platform: Platform, settings: Settings, role: UserRole = UserRole.student
) -> Person:
    async with platform.session() as session:
        user = await users.create_user(
            session, f"live.{uuid.uuid4().hex[:10]}@serving.test", "Live Tester", role
        )
        cookies = await mint_cookies(session, settings, user)
        await session.commit()
    return Person(user, cookies)


async def committed_room(platform: Platform, *members: Person) -> str:
    async with platform.session() as session:
        course = await courses.create_course(session, f"live {uuid.uuid4().hex[:6]}")
        room = await rooms.create_room(session, course.id, "live room")
        for member in members:
            await rooms.add_member(session, room.id, member.user.id)
        await session.commit()
    return str(room.id)


async def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    """Poll until ``predicate()`` is true (a hang guard, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)
