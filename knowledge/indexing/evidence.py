"""Step 2: every message and artifact passage as a unit of evidence (the ``evidence`` collection).

Like the chunks step, a run reads its pending ``room_changes`` rows (consumer ``evidence``):
none → nothing to do (after one probe point); messages and artifacts → only their points
(a message's point is read, written or deleted by id; an artifact's passages are the artifact
chunks the chunks step stored, so when an artifact changed the room's passages are compared,
which are few); a whole-room row, or a vector store that fell behind → every unit.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import RoomChunk
from knowledge.chat import live_messages, load_room_sources, messages_from
from knowledge.chunking import SourceMessage
from knowledge.indexing.changes import EVIDENCE_CONSUMER, consume, lock_room, pending_changes
from knowledge.indexing.vectors import (
    VectorSync,
    probe_vector,
    searched_by_vector,
    sync_vector_ids,
    sync_vectors,
)
from knowledge.platform import Platform
from knowledge.rooms import get_room
from knowledge.stores.base import EVIDENCE

FULL = "full"
DELTA = "delta"
UNCHANGED = "unchanged"
#: Artifact chunks' positions start with "z", after every conversation chunk's "m…".
_ARTIFACTS_FROM = "z"


@dataclass
class EvidenceSync:
    #: Messages and artifact passages read by the run (all of the room's in ``full`` mode).
    messages: int
    passages: int
    vectors: VectorSync
    seconds: float
    #: ``full``, ``delta`` or ``unchanged``; ``reason`` says why a run was full.
    mode: str = FULL
    reason: str = ""
    #: ``room_changes`` rows consumed.
    changes: int = 0

    def metadata(self) -> dict[str, str | int | float]:
        """What a Dagster materialization shows."""
        return {
            "mode": self.mode,
            "reason": self.reason,
            "changes": self.changes,
            "messages_read": self.messages,
            "artifact_passages_read": self.passages,
            "units_indexed": self.vectors.written,
            "units_removed": self.vectors.deleted,
            "seconds": round(self.seconds, 3),
        }


def message_unit_id(message_id: int) -> str:
    return f"m:{message_id}"


def passage_unit_id(chunk_id: str) -> str:
    return f"a:{chunk_id}"


def _message_unit(m: SourceMessage) -> tuple[str, dict, str]:
    """(stored text, payload, embedded text) of a message's point."""
    payload = {
        "kind": "message",
        "ref": str(m.id),
        "speaker": m.speaker,
        "ts": m.created_at.timestamp() if m.created_at else None,
    }
    return m.content, payload, f"{m.speaker}: {m.content}"


def _passage_unit(artifact_id: str | None, text: str) -> tuple[str, dict]:
    return text, {"kind": "artifact", "ref": str(artifact_id), "speaker": None, "ts": None}


async def _passages(session: AsyncSession, room_id: str) -> dict[str, tuple[str, dict]]:
    rows = await session.execute(
        select(RoomChunk.id, RoomChunk.artifact_id, RoomChunk.text).where(
            RoomChunk.room_id == room_id,
            RoomChunk.position >= _ARTIFACTS_FROM,
            RoomChunk.artifact_id.is_not(None),
        )
    )
    return {
        passage_unit_id(chunk_id): _passage_unit(artifact_id, text)
        for chunk_id, artifact_id, text in rows
    }


def _items(
    messages: Iterable[SourceMessage],
) -> tuple[dict[str, tuple[str, dict]], dict[str, str]]:
    items: dict[str, tuple[str, dict]] = {}
    embed_texts: dict[str, str] = {}
    for m in messages:
        uid = message_unit_id(m.id)
        text, payload, embedded = _message_unit(m)
        items[uid] = (text, payload)
        embed_texts[uid] = embedded
    return items, embed_texts


async def sync_evidence(platform: Platform, room_id: str) -> EvidenceSync:
    """Index every live message and artifact passage of the room as a unit of evidence.

    One point per message (BM25 over its text; a dense vector of speaker + text when the
    embedder is a real model) and per artifact chunk, with speaker and time (epoch seconds,
    ``ts``) in the payload for filters.
    Only new or edited units are re-indexed (fingerprints), deleted ones are removed; only the
    units of pending changes are looked at (see the module docstring).
    """
    started = time.perf_counter()
    dense = searched_by_vector(platform)
    async with platform.session() as session:
        await get_room(session, room_id)
        await lock_room(session, room_id, EVIDENCE_CONSUMER)
        pending = await pending_changes(session, room_id, EVIDENCE_CONSUMER)
        mode, reason = DELTA if pending else UNCHANGED, ""
        if pending.whole_room:
            mode, reason = FULL, "whole room requested"
        else:
            # The first live message that is not itself pending: its point must be as written.
            probe = next(
                (
                    m
                    for m in await messages_from(session, room_id, None, 8)
                    if m.id not in pending.message_ids
                ),
                None,
            )
            if probe is None:
                if not pending:
                    mode, reason = FULL, "no message to probe"
            else:
                text, payload, embedded = _message_unit(probe)
                if not await probe_vector(
                    platform,
                    EVIDENCE,
                    room_id,
                    message_unit_id(probe.id),
                    text,
                    payload,
                    embedded,
                    dense,
                ):
                    mode, reason = FULL, "vector store behind the messages"
        if mode == FULL:
            messages, _ = await load_room_sources(session, room_id)
            passages = await _passages(session, room_id)
            items, embed_texts = _items(messages)
            items.update(passages)
            vectors = await sync_vectors(platform, EVIDENCE, room_id, items, embed_texts, dense)
            n_messages = len(messages)
        else:
            live = await live_messages(session, room_id, pending.message_ids)
            items, embed_texts = _items(live.values())
            ids = {message_unit_id(m) for m in pending.message_ids}
            passages = {}
            if pending.artifact_ids:
                passages = await _passages(session, room_id)
                stored = await platform.vectors.fingerprints(EVIDENCE, room_id, kind="artifact")
                ids |= set(stored) | set(passages)
                items.update(passages)
            vectors = await sync_vector_ids(
                platform, EVIDENCE, room_id, ids, items, embed_texts, dense
            )
            n_messages = len(live)
        await consume(session, pending.ids)
        await session.commit()
    return EvidenceSync(
        messages=n_messages,
        passages=len(passages),
        vectors=vectors,
        seconds=time.perf_counter() - started,
        mode=mode,
        reason=reason,
        changes=len(pending.ids),
    )
