"""The change logs of the index steps: what each step has yet to see.

``room_changes`` (messages and artifacts, for the chunks and evidence steps):

Triggers (migration 0009) write one row per step (``consumer``) for every message or artifact
written, in the writer's transaction; a row with neither a message nor an artifact stands for
the whole room. A step reads its rows under a per-room lock, works on what they name, and
deletes exactly those rows (by id) in the transaction that writes its result: a row committed
while it ran stays for the next run, and a failed run leaves every row in place.

``graph_changes`` (entities and communities, for the reports step): the graph and communities
steps write the names and ids they are about to change, committed before the change itself,
so a crash in between leaves a row too many (a report hashed again), never one too few.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import GraphChange, RoomChange
from knowledge.platform import Platform

CHUNKS_CONSUMER = "chunks"
EVIDENCE_CONSUMER = "evidence"
REPORTS_CONSUMER = "reports"
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
    await session.execute(delete(GraphChange).where(GraphChange.room_id == room_id))
    await session.execute(insert(GraphChange).values(room_id=room_id))


@dataclass
class PendingGraphChanges:
    ids: list[int] = field(default_factory=list)
    whole_room: bool = False
    entity_names: set[str] = field(default_factory=set)
    community_ids: set[str] = field(default_factory=set)


async def log_graph_changes(
    platform: Platform,
    room_id: str,
    entity_names: Iterable[str] = (),
    community_ids: Iterable[str] = (),
    whole_room: bool = False,
) -> None:
    """Rows for the reports step: the entities and communities about to change (or the whole
    room), committed in a transaction of their own before the caller writes the change."""
    rows: list[dict[str, object]] = [
        {"room_id": room_id, "entity_name": n} for n in sorted(set(entity_names))
    ]
    rows += [{"room_id": room_id, "community_id": c} for c in sorted(set(community_ids))]
    if whole_room:
        rows.append({"room_id": room_id})
    if rows:
        async with platform.session() as session:
            await session.execute(insert(GraphChange), rows)
            await session.commit()


async def pending_graph_changes(session: AsyncSession, room_id: str) -> PendingGraphChanges:
    rows = await session.execute(
        select(GraphChange.id, GraphChange.entity_name, GraphChange.community_id)
        .where(GraphChange.room_id == room_id)
        .order_by(GraphChange.id)
    )
    pending = PendingGraphChanges()
    for change_id, name, community_id in rows:
        pending.ids.append(change_id)
        if name is not None:
            pending.entity_names.add(name)
        if community_id is not None:
            pending.community_ids.add(community_id)
        if name is None and community_id is None:
            pending.whole_room = True
    return pending


async def consume_graph_changes(session: AsyncSession, ids: Sequence[int]) -> None:
    if ids:
        await session.execute(
            text("DELETE FROM graph_changes WHERE id = ANY(:ids)"), {"ids": list(ids)}
        )
