"""What one API process holds for its lifetime (created in ``create_app``'s lifespan)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from knowledge.platform import Platform
from knowledge.settings import Settings
from realtime.outbox import OutboxRelay
from realtime.publisher import EventPublisher
from serving.chat.broadcast import Broadcaster
from serving.graph.dagster import DagsterGateway

SessionFactory = Callable[[], AbstractAsyncContextManager[AsyncSession]]


def platform_sessions(platform: Platform) -> SessionFactory:
    @asynccontextmanager
    async def factory() -> AsyncIterator[AsyncSession]:
        async with platform.session() as session:
            yield session

    return factory


@dataclass
class AppState:
    settings: Settings
    platform: Platform
    redis: Redis
    #: Appends directly to ``graphrag:events`` (reads go through its ``redis`` and ``stream``);
    #: change events go through ``outbox`` instead.
    events: EventPublisher
    #: Relays the transactional outbox to ``graphrag:events`` (``serving.notify``).
    outbox: OutboxRelay
    broadcaster: Broadcaster
    dagster: DagsterGateway
    #: Where requests, WebSockets and background work get their sessions. Tests replace it
    #: to run a whole request inside one rolled-back transaction.
    session_factory: SessionFactory
