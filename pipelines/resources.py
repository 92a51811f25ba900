"""Typed Dagster resources around the domain layer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from dagster import ConfigurableResource, InitResourceContext
from dagster._core.errors import DagsterExecutionInterruptedError
from pydantic import Field, PrivateAttr
from sqlalchemy import select

from dbschema.models import EventOutbox, Room
from knowledge.errors import NotFoundError
from knowledge.gcpolicy import build_collection
from knowledge.platform import Platform, open_platform
from knowledge.rooms import parse_room_id
from knowledge.settings import Settings, get_settings

T = TypeVar("T")
#: The ``type`` of ``realtime.events.RoomDeleted``.
ROOM_DELETED = "room.deleted"


class KnowledgeResource(ConfigurableResource):
    """The stores, extractor and embedder of one room index.

    Unset fields come from the environment (``knowledge.settings.Settings``), so the same
    definitions run on the embedded defaults and on the production services.
    """

    #: Settings that differ from the environment, by field name (e.g. ``llm_base_url``).
    overrides: dict[str, str] = Field(default_factory=dict)
    _context: InitResourceContext | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._context = context

    def settings(self) -> Settings:
        settings = get_settings()
        if not self.overrides:
            return settings
        return Settings.model_validate({**settings.model_dump(), **self.overrides})

    def run(self, work: Callable[[Platform], Awaitable[T]]) -> tuple[T, dict[str, Any]]:
        """Run async domain work against a freshly opened platform (one event loop per step).

        Returns the work's result and the LLM usage it caused (empty in the offline mode).

        When the run's room (its partition) was deleted (under it, or while it was queued), the
        run is cancelled: a refresh of a room that is gone ends as cancelled, not failed, and
        the purge follows. A room that never existed still fails the run, with the reason.
        """
        room = self._run_room()

        async def main() -> tuple[T, dict[str, Any]]:
            async with open_platform(self.settings()) as platform:
                # The chat LLM, or an embeddings-only provider (EMBEDDING_BASE_URL).
                provider = platform.llm or platform.embedding_llm
                before = provider.usage.snapshot() if provider else None
                try:
                    result = await work(platform)
                except NotFoundError:
                    if room is not None and await _room_was_deleted(platform, room):
                        raise _RoomDeleted(room) from None
                    raise
                usage = provider.usage.since(before) if provider and before else {}
                return result, usage

        try:
            with build_collection():
                return asyncio.run(main())
        except _RoomDeleted as deleted:
            self._cancel_run(f"room {deleted.room_id} was deleted: nothing to refresh")
            raise DagsterExecutionInterruptedError(str(deleted)) from None

    def _run_room(self) -> str | None:
        run = self._context.dagster_run if self._context is not None else None
        return run.tags.get("dagster/partition") if run is not None else None

    def _cancel_run(self, message: str) -> None:
        context = self._context
        if context is None or context.dagster_run is None or context.instance is None:
            return
        run = context.instance.get_run_by_id(context.dagster_run.run_id)
        if run is not None and not run.is_finished:
            context.instance.report_run_canceling(run, message)


class _RoomDeleted(Exception):
    def __init__(self, room_id: str) -> None:
        super().__init__(f"room {room_id} no longer exists")
        self.room_id = room_id


async def _room_was_deleted(platform: Platform, room_id: str) -> bool:
    """No such room any more, and its ``room.deleted`` event is in the outbox (kept a day)."""
    try:
        key = parse_room_id(room_id)
    except NotFoundError:
        return False
    async with platform.session() as session:
        if (await session.execute(select(Room.id).where(Room.id == key))).first() is not None:
            return False
        deleted = select(EventOutbox.id).where(
            EventOutbox.room_id == key, EventOutbox.event_type == ROOM_DELETED
        )
        return (await session.execute(deleted.limit(1))).first() is not None
