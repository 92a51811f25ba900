"""Step 1: the room's messages and artifacts as token-bounded chunks (``room_chunks``)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert

from dbschema.models import ChunkExtraction, RoomChunk
from knowledge.chat import load_room_sources
from knowledge.chunking import Chunk, chunk_room
from knowledge.indexing.vectors import VectorSync, sync_vectors
from knowledge.platform import Platform
from knowledge.stores.base import CHUNKS


@dataclass
class ChunkSync:
    total: int
    added: int
    removed: int
    tokens: int
    messages: int
    artifacts: int
    vectors: VectorSync
    seconds: float


async def sync_chunks(platform: Platform, room_id: str) -> ChunkSync:
    started = time.perf_counter()
    settings = platform.settings
    async with platform.session() as session:
        messages, artifacts = await load_room_sources(session, room_id)
        chunks = chunk_room(
            room_id, messages, artifacts, settings.chunk_tokens, settings.chunk_overlap_tokens
        )
        wanted = {c.id: c for c in chunks}
        existing = set(
            (await session.execute(select(RoomChunk.id).where(RoomChunk.room_id == room_id)))
            .scalars()
            .all()
        )
        removed = sorted(existing - set(wanted))
        added = [c for c in chunks if c.id not in existing]
        if removed:
            await session.execute(delete(RoomChunk).where(RoomChunk.id.in_(removed)))
            await session.execute(
                delete(ChunkExtraction).where(ChunkExtraction.chunk_id.in_(removed))
            )
        if chunks:
            stmt = insert(RoomChunk).values([_chunk_row(c) for c in chunks])
            stmt = stmt.on_conflict_do_update(
                index_elements=["id"],
                set_={"ordinal": stmt.excluded.ordinal, "position": stmt.excluded.position},
            )
            await session.execute(stmt)
        await session.commit()
    vectors = await sync_vectors(
        platform,
        CHUNKS,
        room_id,
        {
            c.id: (
                c.text,
                {"message_ids": list(c.message_ids), "artifact_id": c.artifact_id},
            )
            for c in chunks
        },
    )
    return ChunkSync(
        total=len(chunks),
        added=len(added),
        removed=len(removed),
        tokens=sum(c.n_tokens for c in chunks),
        messages=len(messages),
        artifacts=len(artifacts),
        vectors=vectors,
        seconds=time.perf_counter() - started,
    )


def _chunk_row(chunk: Chunk) -> dict:
    return {
        "id": chunk.id,
        "room_id": chunk.room_id,
        "ordinal": chunk.ordinal,
        "position": chunk.position,
        "text": chunk.text,
        "n_tokens": chunk.n_tokens,
        "message_ids": list(chunk.message_ids),
        "artifact_id": chunk.artifact_id,
    }


async def room_chunks(platform: Platform, room_id: str) -> list[RoomChunk]:
    async with platform.session() as session:
        rows = await session.execute(
            select(RoomChunk).where(RoomChunk.room_id == room_id).order_by(RoomChunk.position)
        )
        return list(rows.scalars().all())
