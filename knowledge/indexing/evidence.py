"""Step 2: every message and artifact passage as a unit of evidence (the ``evidence`` collection)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select

from dbschema.models import RoomChunk
from knowledge.chat import load_room_sources
from knowledge.indexing.vectors import VectorSync, sync_vectors
from knowledge.platform import Platform
from knowledge.stores.base import EVIDENCE


@dataclass
class EvidenceSync:
    messages: int
    passages: int
    vectors: VectorSync
    seconds: float


def message_unit_id(message_id: int) -> str:
    return f"m:{message_id}"


def passage_unit_id(chunk_id: str) -> str:
    return f"a:{chunk_id}"


async def sync_evidence(platform: Platform, room_id: str) -> EvidenceSync:
    """Index every live message and artifact passage of the room as a unit of evidence.

    One point per message (BM25 over its text; a dense vector of speaker + text) and per
    artifact chunk, with speaker and time (epoch seconds, ``ts``) in the payload for filters.
    Only new or edited units are re-indexed (fingerprints), deleted ones are removed.
    """
    started = time.perf_counter()
    async with platform.session() as session:
        messages, _ = await load_room_sources(session, room_id)
        passages = (
            await session.execute(
                select(RoomChunk.id, RoomChunk.artifact_id, RoomChunk.text).where(
                    RoomChunk.room_id == room_id, RoomChunk.artifact_id.is_not(None)
                )
            )
        ).all()
    items: dict[str, tuple[str, dict]] = {}
    embed_texts: dict[str, str] = {}
    for m in messages:
        uid = message_unit_id(m.id)
        payload = {
            "kind": "message",
            "ref": str(m.id),
            "speaker": m.speaker,
            "ts": m.created_at.timestamp() if m.created_at else None,
        }
        items[uid] = (m.content, payload)
        embed_texts[uid] = f"{m.speaker}: {m.content}"
    for chunk_id, artifact_id, text in passages:
        items[passage_unit_id(chunk_id)] = (
            text,
            {"kind": "artifact", "ref": str(artifact_id), "speaker": None, "ts": None},
        )
    vectors = await sync_vectors(platform, EVIDENCE, room_id, items, embed_texts)
    return EvidenceSync(
        messages=len(messages),
        passages=len(passages),
        vectors=vectors,
        seconds=time.perf_counter() - started,
    )
