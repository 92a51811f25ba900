"""Vector points of a room kept equal to what its sources say, re-embedding only what changed."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from knowledge.lexical import ANALYZER
from knowledge.platform import Platform
from knowledge.stores.base import VectorRecord

_EMBED_BATCH = 256
#: Points per write when nothing is embedded: each write also updates the room's BM25 term
#: statistics once per distinct term, so fewer, larger writes update common terms less often.
_LEXICAL_BATCH = 4096


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def searched_by_vector(platform: Platform) -> bool:
    """Whether chunk, evidence and entity points get a dense vector. Only a real model's are
    searched (the dense generator, entity seeds, entity resolution); offline, retrieval is
    lexical (DESIGN.md), and the hashing embedder's vectors would cost an HNSW insert per point
    for nothing. (Community reports keep theirs: the report search fuses them offline too.)"""
    return platform.embedder.semantic


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
    dense: bool = True,
) -> VectorSync:
    """Make a collection's points for the room exactly ``items`` (id -> (text, payload)).

    The stored text is what lexical search reads; ``embed_texts`` (id -> text) gives the
    embedder another input where it differs (a message with its speaker). Only points whose
    texts (or payload) changed are re-embedded; stale points are deleted. ``dense=False``
    writes lexical-only points (no embedding: nothing searches them by vector).
    """
    embed_texts = embed_texts or {}
    await platform.vectors.ensure_collection(collection, platform.embedder.dim)
    stored = await platform.vectors.fingerprints(collection, room_id)
    return await _write(platform, collection, room_id, items, embed_texts, stored, dense)


async def sync_vector_ids(
    platform: Platform,
    collection: str,
    room_id: str,
    ids: Iterable[str],
    items: dict[str, tuple[str, dict]],
    embed_texts: dict[str, str] | None = None,
    dense: bool = True,
) -> VectorSync:
    """``sync_vectors`` for the points ``ids`` only (the rest of the room is not read): each
    becomes ``items[id]`` if it is there, else is deleted. ``total`` counts ``items``."""
    wanted_ids = sorted(set(ids) | set(items))
    if not wanted_ids:
        return VectorSync()
    await platform.vectors.ensure_collection(collection, platform.embedder.dim)
    stored = await platform.vectors.fingerprints(collection, room_id, ids=wanted_ids)
    return await _write(platform, collection, room_id, items, embed_texts or {}, stored, dense)


def _fingerprints(
    platform: Platform,
    items: dict[str, tuple[str, dict]],
    embed_texts: dict[str, str],
    dense: bool,
) -> dict[str, str]:
    # A lexical-only point does not depend on the embedder, but turning the dense vector on
    # or off must rewrite it.
    embedder = platform.embedder.name if dense else "lexical-only"
    prefix = f"{embedder}\x1f{ANALYZER}\x1f"
    return {
        pid: fingerprint(
            prefix + text + "\x1f" + embed_texts.get(pid, "") + repr(sorted(payload.items()))
        )
        for pid, (text, payload) in items.items()
    }


async def _write(
    platform: Platform,
    collection: str,
    room_id: str,
    items: dict[str, tuple[str, dict]],
    embed_texts: dict[str, str],
    stored: dict[str, str],
    dense: bool,
) -> VectorSync:
    """Embed and write the items whose fingerprint differs from ``stored``; delete the stored
    points that are not items."""
    wanted = _fingerprints(platform, items, embed_texts, dense)
    stale = sorted(set(stored) - set(wanted))
    changed = sorted(pid for pid, fp in wanted.items() if stored.get(pid) != fp)
    step = _EMBED_BATCH if dense else _LEXICAL_BATCH
    for start in range(0, len(changed), step):
        batch = changed[start : start + step]
        vectors = (
            await platform.embedder.embed([embed_texts.get(pid, items[pid][0]) for pid in batch])
            if dense
            else [[] for _ in batch]
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


async def probe_vector(
    platform: Platform,
    collection: str,
    room_id: str,
    pid: str,
    text: str,
    payload: dict,
    embed_text: str | None = None,
    dense: bool = True,
) -> bool:
    """Whether the point ``pid`` is stored as ``sync_vectors`` would write it now: a cheap check
    that the vector store has not fallen behind (another store configured, a collection
    dropped, another embedder) before a run that writes only what changed."""
    stored = await platform.vectors.fingerprints(collection, room_id, ids=[pid])
    embed_texts = {pid: embed_text} if embed_text is not None else {}
    wanted = _fingerprints(platform, {pid: (text, payload)}, embed_texts, dense)
    return stored.get(pid) == wanted[pid]
