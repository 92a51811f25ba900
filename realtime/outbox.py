"""Transactional outbox of ``graphrag:events``: a change event is a row of ``event_outbox``
written in the transaction of the change, so it exists exactly when the change does; a relay
appends unsent rows to the stream and marks them sent.

- **Lease.** A delivery pass locks the rows it sends with ``SELECT … FOR UPDATE SKIP LOCKED``
  and marks them sent in the same transaction: several relays (one in every API process's
  lifespan, so ``coagent dev`` through its API; the agent worker runs one too) share the work
  without sending a row twice, and a relay that dies releases its rows with its connection.
- **Idempotent appends.** Every entry carries ``outbox_id``, and ``EventPublisher.append_once``
  appends an outbox id at most once (a Lua check-and-XADD): a relay that appended but died
  before its commit re-sends the row without a duplicate entry. Consumers may still see one
  (after the dedupe key expired): the sensor drops repeated ``outbox_id`` entries of a read and
  its runs are idempotent.
- **Freshness.** The request that committed a change delivers its own rows at once
  (``deliver(ids)``), so the usual path costs what the old after-commit XADD did. When Redis is
  down that attempt fails fast and is skipped until the relay has reached Redis again; the
  relay retries with exponential backoff (``min_backoff`` … ``max_backoff``) and otherwise polls
  every ``poll_seconds`` for rows other processes left; ``wake()`` ends a wait at once.
- Sent rows are pruned after ``retention_seconds``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, suppress
from datetime import timedelta

from pydantic import ValidationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import EventOutbox
from realtime.events import BaseEvent, event_from_payload
from realtime.publisher import EventPublisher

log = logging.getLogger(__name__)

SessionFactory = Callable[[], AbstractAsyncContextManager[AsyncSession]]


async def stage(session: AsyncSession, *events: BaseEvent) -> list[int]:
    """Write ``events`` to the outbox in the session's transaction; returns their outbox ids
    (hand them to ``OutboxRelay.deliver`` after the commit)."""
    rows = [
        EventOutbox(
            room_id=uuid.UUID(event.room_id),
            event_type=event.type,
            event_id=event.event_id,
            payload=event.model_dump(mode="json"),
        )
        for event in events
    ]
    session.add_all(rows)
    await session.flush()
    return [row.id for row in rows]


def stream_fields(row: EventOutbox) -> dict[str, str]:
    """The stream entry of a row: the event's own fields (``BaseEvent.to_fields``)."""
    try:
        return event_from_payload(row.payload).to_fields()
    except ValidationError:
        # A type this process does not know (a newer producer): relay it as it was written.
        return {
            "type": row.event_type,
            "room_id": str(row.room_id),
            "ts": str(row.payload.get("ts", "")),
            "data": json.dumps(row.payload, separators=(",", ":")),
        }


class OutboxRelay:
    def __init__(
        self,
        sessions: SessionFactory,
        publisher: EventPublisher,
        *,
        batch_size: int = 200,
        poll_seconds: float = 2.0,
        min_backoff: float = 0.5,
        max_backoff: float = 10.0,
        retention_seconds: float = 24 * 3600,
        prune_every_seconds: float = 600,
    ) -> None:
        self.sessions = sessions
        self.publisher = publisher
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.retention_seconds = retention_seconds
        self.prune_every_seconds = prune_every_seconds
        #: False from a failed append until the next one that succeeds.
        self.redis_ok = True
        #: The last delivery error (None once a delivery succeeded again).
        self.last_error: str | None = None
        self._failures = 0
        self._last_prune = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- one delivery pass -----------------------------------------------------------------

    async def deliver(
        self, ids: Sequence[int] | None = None, sessions: SessionFactory | None = None
    ) -> dict[int, str]:
        """Append up to ``batch_size`` unsent rows (only ``ids`` when given) and mark them sent;
        returns their stream ids by outbox id. Rows another relay has locked are skipped: it is sending them. A
        failed append is recorded on the rows (``attempts``, ``last_error``) and re-raised."""
        async with (sessions or self.sessions)() as session:
            query = select(EventOutbox).where(EventOutbox.sent_at.is_(None))
            if ids is not None:
                query = query.where(EventOutbox.id.in_(list(ids)))
            query = query.order_by(EventOutbox.id).limit(self.batch_size)
            rows = (await session.execute(query.with_for_update(skip_locked=True))).scalars().all()
            if not rows:
                await session.rollback()
                return {}
            locked = [row.id for row in rows]  # (a rollback expires the rows)
            try:
                stream_ids = await self.publisher.append_once(
                    [(row.id, stream_fields(row)) for row in rows]
                )
            except Exception as error:
                await session.rollback()
                self._failed(error)
                await self._record_failure(session, locked, error)
                raise
            for row, stream_id in zip(rows, stream_ids, strict=True):
                row.sent_at = func.clock_timestamp()  # type: ignore[assignment]
                row.stream_id = stream_id
            await session.commit()
        self.redis_ok, self.last_error, self._failures = True, None, 0
        return dict(zip(locked, stream_ids, strict=True))

    async def deliver_committed(
        self, ids: Sequence[int], sessions: SessionFactory
    ) -> dict[int, str]:
        """After a commit: send these rows now, unless Redis is known to be down (then the
        relay sends them once it is back). Never raises; the stream ids of those sent here."""
        if not ids or not self.redis_ok:
            return {}
        try:
            return await self.deliver(ids, sessions)
        except Exception as error:
            log.warning("could not append outbox rows %s now (%s); the relay will", ids, error)
            return {}

    def _failed(self, error: BaseException) -> None:
        if self.redis_ok:
            log.warning("graphrag:events unreachable (%s): events wait in event_outbox", error)
        self.redis_ok = False
        self.last_error = f"{type(error).__name__}: {error}"

    async def _record_failure(
        self, session: AsyncSession, ids: list[int], error: BaseException
    ) -> None:
        try:
            await session.execute(
                update(EventOutbox)
                .where(EventOutbox.id.in_(ids), EventOutbox.sent_at.is_(None))
                .values(attempts=EventOutbox.attempts + 1, last_error=str(error)[:500])
            )
            await session.commit()
        except Exception:
            log.exception("could not record the failed delivery of outbox rows %s", ids)
            await session.rollback()

    async def prune(self) -> int:
        """Delete rows sent more than ``retention_seconds`` ago."""
        cutoff = func.clock_timestamp() - timedelta(seconds=self.retention_seconds)
        async with self.sessions() as session:
            result = await session.execute(delete(EventOutbox).where(EventOutbox.sent_at < cutoff))
            await session.commit()
        self._last_prune = time.monotonic()
        return int(getattr(result, "rowcount", 0) or 0)

    async def unsent(self, room_id: str | None = None) -> int:
        """Rows not sent yet (of one room, when given)."""
        query = select(func.count()).select_from(EventOutbox).where(EventOutbox.sent_at.is_(None))
        if room_id is not None:
            query = query.where(EventOutbox.room_id == uuid.UUID(room_id))
        async with self.sessions() as session:
            return int((await session.execute(query)).scalar_one())

    # --- the background loop ---------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="event-outbox-relay")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        """Deliver until cancelled: full batches back to back, then poll (or wait to be woken);
        after a failure, back off exponentially."""
        while True:
            try:
                sent = len(await self.deliver())
                if sent >= self.batch_size:
                    continue
                if sent == 0 and not self.redis_ok:
                    # Nothing of ours to send (another relay sent it): is Redis back?
                    await self.publisher.redis.ping()
                    self.redis_ok, self.last_error, self._failures = True, None, 0
                if time.monotonic() - self._last_prune >= self.prune_every_seconds:
                    await self.prune()
                wait = self.poll_seconds
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if self._failures == 0:
                    log.warning("outbox relay pass failed (%s); backing off", error)
                self.last_error = self.last_error or f"{type(error).__name__}: {error}"
                self._failures += 1
                wait = min(self.max_backoff, self.min_backoff * 2 ** (self._failures - 1))
            await self._sleep(wait)

    async def _sleep(self, seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()
