"""Step 1: the room's messages and artifacts as token-bounded chunks (``room_chunks``).

A run reads the step's pending rows of ``room_changes`` (``knowledge.indexing.changes``) and
works in one of three modes:

``unchanged``
    No pending rows: nothing is read but the rows' absence and one probe point.
``delta``
    Only what the changed messages and artifacts touch. For the conversation: each changed
    message has a place in the old chunking (the chunks that hold it, found by message id) and
    in the new one (its time); re-chunking starts at the last *clean-start* chunk before the
    first such place (a chunk whose first message is not in the chunk before it: the chunker
    reaches it from an empty state, so its output from there depends on nothing earlier),
    reads messages forward in batches, and stops as soon as it emits, after every change so
    far, a clean-start chunk that is stored as it is (same id, same messages): from there the
    old and new chunkings agree until the next change, which starts the next stretch the same
    way. Artifacts are chunked one by one, so a changed artifact is re-chunked alone. Only
    added, moved and removed chunks are written, and only their vectors.
``full``
    Every message and artifact (no chunks stored yet, a whole-room row, or a case the delta
    cannot do exactly: a chunk text that occurs twice in the room, which stores one row for
    several places; chunks written by an older version). The same result as a wipe + build.

Either way the stored chunks are exactly what chunking every source gives (the tests check
this against a full build), and the consumed rows are deleted in the transaction that writes
the chunks, after the vectors are written: a failure anywhere leaves the rows for a retry.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import ChunkExtraction, RoomChunk
from knowledge.chat import live_artifacts, live_messages, load_room_sources, messages_from
from knowledge.chunking import (
    Chunk,
    MessageChunker,
    SourceArtifact,
    SourceMessage,
    chunk_artifact,
    dedupe,
    message_position,
    parse_message_position,
    room_emissions,
)
from knowledge.indexing.changes import (
    CHUNKS_CONSUMER,
    EVIDENCE_CONSUMER,
    PendingChanges,
    add_changes,
    consume,
    lock_room,
    pending_changes,
)
from knowledge.indexing.vectors import (
    VectorSync,
    probe_vector,
    searched_by_vector,
    sync_vector_ids,
    sync_vectors,
)
from knowledge.platform import Platform
from knowledge.rooms import get_room
from knowledge.settings import Settings
from knowledge.stores.base import CHUNKS

FULL = "full"
DELTA = "delta"
UNCHANGED = "unchanged"
#: Artifact chunks' positions start with "z", after every conversation chunk's "m…".
_ARTIFACTS_FROM = "z"


@dataclass
class ChunkSync:
    #: Chunks of the room after the run, and their tokens.
    total: int
    #: Chunk ids new to the room / removed from it by this run.
    added: int
    removed: int
    tokens: int
    #: Messages and artifacts read (all of the room's in ``full`` mode).
    messages: int
    artifacts: int
    vectors: VectorSync
    seconds: float
    #: ``full``, ``delta`` or ``unchanged``; ``reason`` says why a run was full.
    mode: str = FULL
    reason: str = ""
    #: Kept ids whose place or messages changed (same text elsewhere).
    moved: int = 0
    #: ``room_changes`` rows consumed.
    changes: int = 0
    #: Message rows and stored chunk rows read, all queries of the run together.
    messages_read: int = 0
    chunks_read: int = 0

    def metadata(self) -> dict[str, str | int | float]:
        """What a Dagster materialization shows."""
        return {
            "mode": self.mode,
            "reason": self.reason,
            "chunks": self.total,
            "chunks_added": self.added,
            "chunks_removed": self.removed,
            "chunks_moved": self.moved,
            "tokens": self.tokens,
            "changes": self.changes,
            "messages_read": self.messages_read,
            "chunks_read": self.chunks_read,
            "artifacts_read": self.artifacts,
            "vectors_written": self.vectors.written,
            "vectors_deleted": self.vectors.deleted,
            "seconds": round(self.seconds, 3),
        }


class _FullRebuild(Exception):
    """The delta cannot be exact here: re-chunk the room whole (the message says why)."""


@dataclass(frozen=True)
class _Stored:
    id: str
    position: str
    message_ids: tuple[int, ...]


@dataclass
class _Work:
    """What a run writes: rows to insert or update (with their copies), ids to delete."""

    upserts: list[tuple[Chunk, int]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    added: int = 0
    #: Artifacts whose chunks changed (the evidence step re-reads their passages).
    artifacts_changed: set[str] = field(default_factory=set)
    messages_read: int = 0
    chunks_read: int = 0
    artifacts_read: int = 0
    #: Full mode: every chunk of the room (the vectors are then compared all).
    everything: list[Chunk] | None = None


async def sync_chunks(platform: Platform, room_id: str) -> ChunkSync:
    started = time.perf_counter()
    settings = platform.settings
    dense = searched_by_vector(platform)
    async with platform.session() as session:
        await get_room(session, room_id)
        await lock_room(session, room_id, CHUNKS_CONSUMER)
        pending = await pending_changes(session, room_id, CHUNKS_CONSUMER)
        first = (
            await session.execute(
                select(RoomChunk.id, RoomChunk.text, RoomChunk.message_ids, RoomChunk.artifact_id)
                .where(RoomChunk.room_id == room_id)
                .order_by(RoomChunk.position)
                .limit(1)
            )
        ).first()
        mode, reason = DELTA if pending else UNCHANGED, ""
        if first is None:
            mode, reason = FULL, "no chunks stored"
        elif pending.whole_room:
            mode, reason = FULL, "whole room requested"
        elif not await probe_vector(
            platform,
            CHUNKS,
            room_id,
            first.id,
            *_vector_item(first.text, first.message_ids, first.artifact_id),
            dense=dense,
        ):
            mode, reason = FULL, "vector store behind the chunks"
        work = _Work(chunks_read=0 if first is None else 1)
        if mode == DELTA:
            try:
                work = await _delta(session, room_id, settings, pending)
                work.chunks_read += 1
            except _FullRebuild as why:
                mode, reason = FULL, str(why)
        if mode == FULL:
            work = await _full(session, room_id, settings)
        await _write(session, room_id, work)
        if work.everything is not None:
            vectors = await sync_vectors(
                platform,
                CHUNKS,
                room_id,
                {c.id: _vector_item(c.text, c.message_ids, c.artifact_id) for c in work.everything},
                dense=dense,
            )
        else:
            vectors = await sync_vector_ids(
                platform,
                CHUNKS,
                room_id,
                work.removed,
                {c.id: _vector_item(c.text, c.message_ids, c.artifact_id) for c, _ in work.upserts},
                dense=dense,
            )
        await consume(session, pending.ids)
        total, tokens = (
            await session.execute(
                select(func.count(), func.coalesce(func.sum(RoomChunk.n_tokens), 0)).where(
                    RoomChunk.room_id == room_id
                )
            )
        ).one()
        await session.commit()
    return ChunkSync(
        total=int(total),
        added=work.added,
        removed=len(work.removed),
        tokens=int(tokens),
        messages=work.messages_read,
        artifacts=work.artifacts_read,
        vectors=vectors,
        seconds=time.perf_counter() - started,
        mode=mode,
        reason=reason,
        moved=len(work.upserts) - work.added,
        changes=len(pending.ids),
        messages_read=work.messages_read,
        chunks_read=work.chunks_read,
    )


def _vector_item(
    text: str, message_ids: Iterable[int], artifact_id: str | None
) -> tuple[str, dict]:
    return text, {"message_ids": list(message_ids), "artifact_id": artifact_id}


def _chunk_row(chunk: Chunk, copies: int = 1) -> dict:
    return {
        "id": chunk.id,
        "room_id": chunk.room_id,
        "ordinal": chunk.ordinal,
        "position": chunk.position,
        "text": chunk.text,
        "n_tokens": chunk.n_tokens,
        "message_ids": list(chunk.message_ids),
        "artifact_id": chunk.artifact_id,
        "copies": copies,
    }


async def _write(session: AsyncSession, room_id: str, work: _Work) -> None:
    if work.removed:
        await session.execute(delete(RoomChunk).where(RoomChunk.id.in_(work.removed)))
        await session.execute(
            delete(ChunkExtraction).where(ChunkExtraction.chunk_id.in_(work.removed))
        )
    rows = [_chunk_row(c, copies) for c, copies in work.upserts]
    for start in range(0, len(rows), 500):
        stmt = insert(RoomChunk).values(rows[start : start + 500])
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={
                column: stmt.excluded[column]
                for column in ("ordinal", "position", "n_tokens", "message_ids", "artifact_id")
            }
            | {"copies": stmt.excluded.copies},
        )
        await session.execute(stmt)
    await add_changes(session, room_id, EVIDENCE_CONSUMER, artifact_ids=work.artifacts_changed)


# --- full mode ------------------------------------------------------------------------------------


async def _full(session: AsyncSession, room_id: str, settings: Settings) -> _Work:
    messages, artifacts = await load_room_sources(session, room_id)
    unique, copies = dedupe(
        room_emissions(
            room_id, messages, artifacts, settings.chunk_tokens, settings.chunk_overlap_tokens
        )
    )
    stored = {
        row.id: row
        for row in await session.execute(
            select(
                RoomChunk.id,
                RoomChunk.ordinal,
                RoomChunk.position,
                RoomChunk.n_tokens,
                RoomChunk.message_ids,
                RoomChunk.artifact_id,
                RoomChunk.copies,
            ).where(RoomChunk.room_id == room_id)
        )
    }
    work = _Work(
        messages_read=len(messages),
        artifacts_read=len(artifacts),
        chunks_read=len(stored),
        everything=unique,
    )
    wanted = {c.id for c in unique}
    for chunk in unique:
        row = stored.get(chunk.id)
        if row is None:
            work.added += 1
        elif (
            row.ordinal,
            row.position,
            row.n_tokens,
            tuple(row.message_ids),
            row.artifact_id,
            row.copies,
        ) == (
            chunk.ordinal,
            chunk.position,
            chunk.n_tokens,
            chunk.message_ids,
            chunk.artifact_id,
            copies[chunk.id],
        ):
            continue
        work.upserts.append((chunk, copies[chunk.id]))
        if chunk.artifact_id:
            work.artifacts_changed.add(chunk.artifact_id)
    for chunk_id, row in stored.items():
        if chunk_id not in wanted:
            work.removed.append(chunk_id)
            if row.artifact_id:
                work.artifacts_changed.add(row.artifact_id)
    work.removed.sort()
    return work


# --- delta mode -----------------------------------------------------------------------------------


async def _delta(
    session: AsyncSession, room_id: str, settings: Settings, pending: PendingChanges
) -> _Work:
    repeated = {
        is_message: n
        for is_message, n in await session.execute(
            select(RoomChunk.artifact_id.is_(None), func.count())
            .where(RoomChunk.room_id == room_id, RoomChunk.copies > 1)
            .group_by(RoomChunk.artifact_id.is_(None))
        )
    }
    if repeated.get(True):
        raise _FullRebuild("a conversation chunk text occurs more than once")
    work = _Work()
    if pending.message_ids:
        await _delta_messages(session, room_id, settings, pending.message_ids, work)
    if pending.artifact_ids:
        await _delta_artifacts(
            session, room_id, settings, pending.artifact_ids, bool(repeated.get(False)), work
        )
    ids = [c.id for c, _ in work.upserts]
    if len(set(ids)) != len(ids):
        raise _FullRebuild("a new chunk text occurs more than once")
    return work


async def _delta_messages(
    session: AsyncSession, room_id: str, settings: Settings, changed: set[int], work: _Work
) -> None:
    live = await live_messages(session, room_id, changed)
    work.messages_read += len(live)
    holding = (
        await session.execute(
            select(RoomChunk.position, RoomChunk.message_ids).where(
                RoomChunk.room_id == room_id,
                RoomChunk.artifact_id.is_(None),
                RoomChunk.message_ids.overlap(sorted(changed)),
            )
        )
    ).all()
    work.chunks_read += len(holding)
    # Every place of a changed message, old (the chunks that hold it) and new (its time).
    places: dict[int, list[str]] = defaultdict(list)
    for position, message_ids in holding:
        for message_id in message_ids:
            if message_id in changed:
                places[message_id].append(position)
    for message in live.values():
        if message.content.strip():
            places[message.id].append(message_position(message))
    points = sorted((min(p), max(p)) for p in places.values())

    emitted: list[Chunk] = []
    old: dict[str, _Stored] = {}
    floor: _Stored | None = None
    while points:
        resume = await _resume_point(session, room_id, points[0][0], floor, work)
        start = None
        if resume is not None:
            parsed = parse_message_position(resume.position)
            if parsed is None:
                raise _FullRebuild("chunks stored by an older version")
            start = parsed[0], parsed[1]
        older = _OldChunks(session, room_id, resume.position if resume else None, work)
        chunker = MessageChunker(room_id, settings.chunk_tokens, settings.chunk_overlap_tokens)
        converged: Chunk | None = None
        async for message in _messages(session, room_id, start, work):
            for chunk in chunker.feed(message):
                if converged is None and await _converges(chunk, points, older):
                    converged = chunk
                if converged is None:
                    emitted.append(chunk)
            if converged is not None:
                break
        if converged is None:
            emitted += chunker.finish()
            for stored in await older.rest():
                old[stored.id] = stored
            points = []
        else:
            for stored in await older.before(converged.position):
                old[stored.id] = stored
            if floor is not None and converged.position <= floor.position:
                raise _FullRebuild("re-chunking did not move forward")  # a safety net
            floor = await older.at(converged.position)
            points = [p for p in points if p[0] > converged.position]

    new_ids = {c.id for c in emitted}
    if len(new_ids) != len(emitted):
        raise _FullRebuild("a new chunk text occurs more than once")
    fresh = [c.id for c in emitted if c.id not in old]
    if fresh and await _stored_ids(session, fresh):
        raise _FullRebuild("a new chunk text is already stored elsewhere in the room")
    for chunk in emitted:
        before = old.get(chunk.id)
        if before is None:
            work.added += 1
        elif (before.position, before.message_ids) == (chunk.position, chunk.message_ids):
            continue
        work.upserts.append((chunk, 1))
    work.removed += sorted(i for i in old if i not in new_ids)


async def _stored_ids(session: AsyncSession, ids: Sequence[str]) -> list[str]:
    rows = await session.execute(select(RoomChunk.id).where(RoomChunk.id.in_(list(ids))))
    return list(rows.scalars())


def _stored(row: Sequence) -> _Stored:  # type: ignore[type-arg]
    return _Stored(row[0], row[1], tuple(row[2]))


_STORED_COLUMNS = (RoomChunk.id, RoomChunk.position, RoomChunk.message_ids)


async def _resume_point(
    session: AsyncSession, room_id: str, before: str, floor: _Stored | None, work: _Work
) -> _Stored | None:
    """The last clean-start conversation chunk placed before ``before`` (and not before
    ``floor``, a clean-start chunk where an earlier stretch converged); None: the room's
    start. A chunk is a clean start when its first message is not in the chunk before it."""
    later: _Stored | None = None  # the chunk after the one being read, waiting for its verdict
    bound, page = before, 8
    while True:
        query = (
            select(*_STORED_COLUMNS)
            .where(
                RoomChunk.room_id == room_id,
                RoomChunk.artifact_id.is_(None),
                RoomChunk.position < bound,
            )
            .order_by(RoomChunk.position.desc())
            .limit(page)
        )
        if floor is not None:
            query = query.where(RoomChunk.position >= floor.position)
        rows = [_stored(r) for r in await session.execute(query)]
        work.chunks_read += len(rows)
        for row in rows:
            if later is not None and later.message_ids[0] not in row.message_ids:
                return later
            if floor is not None and row.position == floor.position:
                return row
            later = row
        if len(rows) < page:
            # The room's first chunk starts clean (None: no chunk before ``before``).
            return later
        bound, page = rows[-1].position, min(page * 4, 512)


async def _converges(chunk: Chunk, points: list[tuple[str, str]], older: _OldChunks) -> bool:
    """Whether re-chunking can stop at ``chunk``: a clean start after the stretch's first
    change, with no change around it, stored as it is and a clean start there too."""
    if not chunk.clean_start or points[0][1] >= chunk.position:
        return False
    if any(lo <= chunk.position <= hi for lo, hi in points):
        return False
    stored = await older.at(chunk.position)
    if stored is None or (stored.id, stored.message_ids) != (chunk.id, chunk.message_ids):
        return False
    previous = older.previous(chunk.position)
    return previous is None or stored.message_ids[0] not in previous.message_ids


class _OldChunks:
    """The stored conversation chunks from a position on, read forward page by page."""

    def __init__(self, session: AsyncSession, room_id: str, start: str | None, work: _Work) -> None:
        self.session, self.room_id, self.start, self.work = session, room_id, start, work
        self.rows: list[_Stored] = []
        self.positions: list[str] = []
        self.done = False
        self.page = 16

    async def _more(self) -> None:
        query = (
            select(*_STORED_COLUMNS)
            .where(RoomChunk.room_id == self.room_id, RoomChunk.artifact_id.is_(None))
            .order_by(RoomChunk.position)
            .limit(self.page)
        )
        if self.rows:
            query = query.where(RoomChunk.position > self.rows[-1].position)
        elif self.start is not None:
            query = query.where(RoomChunk.position >= self.start)
        rows = [_stored(r) for r in await self.session.execute(query)]
        self.work.chunks_read += len(rows)
        self.rows += rows
        self.positions += [r.position for r in rows]
        self.done = len(rows) < self.page
        self.page = min(self.page * 2, 512)

    async def _through(self, position: str | None) -> None:
        while not self.done and (
            position is None or not self.rows or self.rows[-1].position < position
        ):
            await self._more()

    async def at(self, position: str) -> _Stored | None:
        await self._through(position)
        i = bisect.bisect_left(self.positions, position)
        return self.rows[i] if i < len(self.rows) and self.positions[i] == position else None

    def previous(self, position: str) -> _Stored | None:
        i = bisect.bisect_left(self.positions, position)
        return self.rows[i - 1] if i > 0 else None

    async def before(self, position: str) -> list[_Stored]:
        await self._through(position)
        return self.rows[: bisect.bisect_left(self.positions, position)]

    async def rest(self) -> list[_Stored]:
        await self._through(None)
        return self.rows


async def _messages(
    session: AsyncSession, room_id: str, start: tuple[datetime, int] | None, work: _Work
) -> AsyncIterator[SourceMessage]:
    """The room's live messages from ``start`` on, in time order, read in growing batches."""
    size, inclusive = 64, True
    while True:
        batch = await messages_from(session, room_id, start, size, inclusive)
        work.messages_read += len(batch)
        for message in batch:
            yield message
        if len(batch) < size:
            return
        last = batch[-1]
        assert last.created_at is not None
        start, inclusive, size = (last.created_at, last.id), False, min(size * 2, 2048)


async def _delta_artifacts(
    session: AsyncSession,
    room_id: str,
    settings: Settings,
    changed: set[str],
    repeated: bool,
    work: _Work,
) -> None:
    """Re-chunk the changed artifacts; all of the room's when a text repeats among them (the
    first artifact in order keeps a repeated chunk, so one artifact alone cannot tell)."""

    def chunks_of(artifacts: Iterable[SourceArtifact]) -> list[Chunk]:
        return [
            chunk
            for artifact in artifacts
            for chunk in chunk_artifact(
                room_id, artifact, settings.chunk_tokens, settings.chunk_overlap_tokens
            )
        ]

    scope: set[str] | None = None if repeated else changed
    while True:
        query = select(
            RoomChunk.id, RoomChunk.position, RoomChunk.artifact_id, RoomChunk.copies
        ).where(
            RoomChunk.room_id == room_id,
            RoomChunk.position >= _ARTIFACTS_FROM,
            RoomChunk.artifact_id.is_not(None),
        )
        if scope is not None:
            query = query.where(RoomChunk.artifact_id.in_(sorted(scope)))
        old = {row.id: row for row in await session.execute(query)}
        artifacts = await live_artifacts(session, room_id, scope)
        work.chunks_read += len(old)
        work.artifacts_read += len(artifacts)
        emitted = chunks_of(artifacts)
        unique, copies = dedupe(emitted)
        fresh = [c.id for c in unique if c.id not in old]
        clash = await _stored_ids(session, fresh) if fresh else []
        if scope is not None and (len(unique) != len(emitted) or clash):
            scope = None  # a repeated text: decide over every artifact
            continue
        if clash:
            raise _FullRebuild("an artifact chunk repeats a conversation chunk")
        break
    wanted = {c.id for c in unique}
    for chunk in unique:
        before = old.get(chunk.id)
        if before is None:
            work.added += 1
        elif (before.position, before.artifact_id, before.copies) == (
            chunk.position,
            chunk.artifact_id,
            copies[chunk.id],
        ):
            continue
        work.upserts.append((chunk, copies[chunk.id]))
        work.artifacts_changed.add(str(chunk.artifact_id))
    for chunk_id, row in old.items():
        if chunk_id not in wanted:
            work.removed.append(chunk_id)
            work.artifacts_changed.add(row.artifact_id)


async def room_chunks(platform: Platform, room_id: str) -> list[RoomChunk]:
    async with platform.session() as session:
        rows = await session.execute(
            select(RoomChunk).where(RoomChunk.room_id == room_id).order_by(RoomChunk.position)
        )
        return list(rows.scalars().all())
