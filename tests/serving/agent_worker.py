"""Agent test helpers: the agent worker (``serving.agents.worker``) run in a background thread,
the same code ``coagent worker`` runs, on the tests' PostgreSQL and Redis; room members and
agents whose endpoint is the local OpenAI server."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

from dbschema.models import UserRole
from knowledge import rooms
from knowledge.platform import Platform
from knowledge.settings import Settings
from serving.agents.worker import serve_worker
from tests.llm_server import FakeOpenAI
from tests.serving.conftest import LiveServer, Person, committed_person


class WorkerThread:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="agent-worker")

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await serve_worker(self.settings, self._stop)

        try:
            asyncio.run(main())
        except BaseException as error:  # surfaced by stop()
            self.error = error
            self._ready.set()

    def start(self) -> WorkerThread:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the agent worker did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
        if self.error is not None:
            raise self.error


async def member_of(platform: Platform, settings: Settings, room_id: str, role: UserRole) -> Person:
    """A committed user of ``role``, made a member of the room."""
    person = await committed_person(platform, settings, role)
    async with platform.session() as session:
        await rooms.add_member(session, uuid.UUID(room_id), person.user.id)
        await session.commit()
    return person


async def create_agent(
    server: LiveServer,
    admin: Person,
    room_id: str,
    fake: FakeOpenAI,
    *,
    model: str,
    api_key: str,
    prefix: str = "helper",
    **extra: Any,
) -> dict[str, Any]:
    """An agent of the room whose own endpoint is the local OpenAI server."""
    body = {
        "name": f"{prefix}{uuid.uuid4().hex[:6]}",
        "system_prompt": "You are a careful tutor.",
        "model": model,
        "tools": ["graph_query", "search_messages"],
        "base_url": fake.base_url,
        "api_key": api_key,
        **extra,
    }
    async with admin.http(server) as client:
        response = await client.post(f"/api/v1/rooms/{room_id}/agents", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())
