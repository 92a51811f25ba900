"""The change log of the index steps (``room_changes``): what each step has yet to see.

Triggers (migration 0009) write one row per step (``consumer``) for every message or artifact
written, in the writer's transaction; a row with neither a message nor an artifact stands for
the whole room. A step reads its rows under a per-room lock, works on what they name, and
deletes exactly those rows (by id) in the transaction that writes its result: a row committed
while it ran stays for the next run, and a failed run leaves every row in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import RoomChange

CHUNKS_CONSUMER = "chunks"
EVIDENCE_CONSUMER = "evidence"
CONSUMERS = (CHUNKS_CONSUMER, EVIDENCE_CONSUMER)


@dataclass
class PendingChanges:
    ids: list[int] = field(default_factory=list)
    whole_room: bool = False
    message_ids: set[int] = field(default_factory=set)
    artifact_ids: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.ids)


async def lock_room(session: AsyncSession, room_id: str, consumer: str) -> None:
    """One run of a step per room at a time (until the transaction ends)."""
    await session.execute(
        select(
            func.pg_advisory_xact_lock(func.hashtext(f"room_changes\x1f{consumer}\x1f{room_id}"))
        )
    )


async def pending_changes(session: AsyncSession, room_id: str, consumer: str) -> PendingChanges:
    rows = await session.execute(
        select(RoomChange.id, RoomChange.message_id, RoomChange.artifact_id)
        .where(RoomChange.room_id == room_id, RoomChange.consumer == consumer)
        .order_by(RoomChange.id)
    )
    pending = PendingChanges()
    for change_id, message_id, artifact_id in rows:
        pending.ids.append(change_id)
        if message_id is not None:
            pending.message_ids.add(message_id)
        if artifact_id is not None:
            pending.artifact_ids.add(artifact_id)
        if message_id is None and artifact_id is None:
            pending.whole_room = True
    return pending


async def consume(session: AsyncSession, ids: Sequence[int]) -> None:
    """Delete the rows a run has seen (in the transaction that writes its result)."""
    if ids:
        await session.execute(
            text("DELETE FROM room_changes WHERE id = ANY(:ids)"), {"ids": list(ids)}
        )


async def add_changes(
    session: AsyncSession,
    room_id: str,
    consumer: str,
    artifact_ids: Iterable[str] = (),
) -> None:
    """Rows for one step: one per artifact (a later step's input changed)."""
    rows = [
        {"room_id": room_id, "consumer": consumer, "artifact_id": a} for a in sorted(artifact_ids)
    ]
    if rows:
        await session.execute(insert(RoomChange), rows)


async def reset_room(session: AsyncSession, room_id: str) -> None:
    """Forget the room's rows and ask every step for the whole room (after a wipe)."""
    await session.execute(delete(RoomChange).where(RoomChange.room_id == room_id))
    await session.execute(
        insert(RoomChange), [{"room_id": room_id, "consumer": c} for c in CONSUMERS]
    )
