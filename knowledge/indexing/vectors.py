"""Vector points of a room kept equal to what its sources say, re-embedding only what changed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from knowledge.lexical import ANALYZER
from knowledge.platform import Platform
from knowledge.stores.base import VectorRecord

_EMBED_BATCH = 256


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class VectorSync:
    written: int = 0
    deleted: int = 0
    total: int = 0


async def sync_vectors(
    platform: Platform,
    collection: str,
    room_id: str,
    items: dict[str, tuple[str, dict]],
    embed_texts: dict[str, str] | None = None,
) -> VectorSync:
    """Make a collection's points for the room exactly ``items`` (id -> (text, payload)).

    The stored text is what lexical search reads; ``embed_texts`` (id -> text) gives the
    embedder another input where it differs (a message with its speaker). Only points whose
    texts (or payload) changed are re-embedded; stale points are deleted.
    """
    embed_texts = embed_texts or {}
    await platform.vectors.ensure_collection(collection, platform.embedder.dim)
    stored = await platform.vectors.fingerprints(collection, room_id)
    prefix = f"{platform.embedder.name}\x1f{ANALYZER}\x1f"
    wanted = {
        pid: fingerprint(
            prefix + text + "\x1f" + embed_texts.get(pid, "") + repr(sorted(payload.items()))
        )
        for pid, (text, payload) in items.items()
    }
    stale = sorted(set(stored) - set(wanted))
    changed = sorted(pid for pid, fp in wanted.items() if stored.get(pid) != fp)
    for start in range(0, len(changed), _EMBED_BATCH):
        batch = changed[start : start + _EMBED_BATCH]
        vectors = await platform.embedder.embed(
            [embed_texts.get(pid, items[pid][0]) for pid in batch]
        )
        await platform.vectors.upsert(
            collection,
            room_id,
            [
                VectorRecord(
                    id=pid,
                    text=items[pid][0],
                    vector=vector,
                    payload={**items[pid][1], "fingerprint": wanted[pid]},
                )
                for pid, vector in zip(batch, vectors, strict=True)
            ],
        )
    await platform.vectors.delete(collection, room_id, stale)
    return VectorSync(written=len(changed), deleted=len(stale), total=len(wanted))
