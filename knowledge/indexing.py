"""The room index, step by step: chunks → graph → communities → reports.

Each step is incremental and idempotent: it diffs what the room's sources say against what is
stored, writes only the difference, and running it again changes nothing. Dagster assets are
thin wrappers around these functions.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert

from dbschema.models import ChunkExtraction, EntityAlias, RoomChunk
from knowledge.chunking import Chunk, chunk_room
from knowledge.communities import hierarchical_communities
from knowledge.extraction.base import Extraction, ExtractionFailure
from knowledge.graph import Entity, RoomGraph, merge_extractions
from knowledge.lexical import ANALYZER
from knowledge.llm import prompts
from knowledge.llm.provider import LLMError, LLMProvider
from knowledge.llm.schemas import EntitySummary, SameEntity
from knowledge.platform import Platform
from knowledge.reports import build_context, report_text
from knowledge.resolution import AliasRecord, embedding_pairs, resolve
from knowledge.rooms import get_room, load_room_sources, room_speakers
from knowledge.stores.base import CHUNKS, COMMUNITIES, ENTITIES, EVIDENCE, VectorRecord

_EXTRACT_BATCH = 16
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


# --- chunks -------------------------------------------------------------------------------------


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
                index_elements=["id"], set_={"ordinal": stmt.excluded.ordinal}
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
        "text": chunk.text,
        "n_tokens": chunk.n_tokens,
        "message_ids": list(chunk.message_ids),
        "artifact_id": chunk.artifact_id,
    }


async def room_chunks(platform: Platform, room_id: str) -> list[RoomChunk]:
    async with platform.session() as session:
        rows = await session.execute(
            select(RoomChunk).where(RoomChunk.room_id == room_id).order_by(RoomChunk.ordinal)
        )
        return list(rows.scalars().all())


# --- evidence: messages and artifact passages ---------------------------------------------------


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


# --- entities and relationships -----------------------------------------------------------------


@dataclass
class GraphBuild:
    chunks: int
    chunks_extracted: int
    entities: int
    relationships: int
    dropped_relationships: int
    vectors: VectorSync
    seconds: float
    entity_types: dict[str, int] = field(default_factory=dict)
    # names merged into another entity by entity resolution
    aliases: int = 0
    # chunk id -> error, for chunks whose extraction failed after retries
    failed_chunks: dict[str, str] = field(default_factory=dict)


async def _summarize_descriptions(llm: LLMProvider, graph: RoomGraph) -> None:
    """One description per entity merged from several. Cached on the set of descriptions, so
    it is recomputed only when that set changed."""

    async def summarize(entity: Entity) -> None:
        try:
            summary = await llm.structured(
                prompts.summarize_entity(entity.display_name, entity.descriptions),
                EntitySummary,
                kind="summary",
            )
        except LLMError:
            return  # keep the joined descriptions
        entity.description = summary.description

    await asyncio.gather(*(summarize(e) for e in graph.entities if len(e.descriptions) > 1))


_MODEL_MERGE = 0.92
_LOWER_WORD = re.compile(r"(?<![\w'’])[a-z][a-z'’-]*")


def ordinary_words(texts: Iterable[str]) -> set[str]:
    """Words the room writes in lower case somewhere (so they are not parts of names)."""
    found: set[str] = set()
    for text in texts:
        found.update(_LOWER_WORD.findall(text))
    return found


async def _model_merges(platform: Platform, graph: RoomGraph) -> dict[str, tuple[str, str, float]]:
    """Aliases found by the embedding model (and, on the LLM path, confirmed by the LLM for a
    borderline similarity): alias -> (canonical, method, score). The more mentioned name is
    the canonical one."""
    entities = sorted(graph.entities, key=lambda e: (-e.mentions, e.name))[:300]
    vectors = await platform.embedder.embed([e.display_name for e in entities])
    by_name = {e.name: e for e in entities}
    out: dict[str, tuple[str, str, float]] = {}
    for a, b, score in embedding_pairs(entities, vectors):
        alias, canonical = sorted((a, b), key=lambda n: (by_name[n].mentions, -len(n), n))
        if alias in out:
            continue
        if score >= _MODEL_MERGE:
            out[alias] = (canonical, "embedding", score)
        elif platform.llm is not None:
            try:
                verdict = await platform.llm.structured(
                    prompts.same_entity(
                        by_name[a].display_name,
                        by_name[a].description,
                        by_name[b].display_name,
                        by_name[b].description,
                    ),
                    SameEntity,
                    kind="resolve",
                )
            except LLMError:
                continue
            if verdict.same:
                out[alias] = (canonical, "llm", score)
    return out


async def _store_aliases(platform: Platform, room_id: str, aliases: list[AliasRecord]) -> None:
    """Make the room's alias rows exactly ``aliases`` (recomputed every build)."""
    async with platform.session() as session:
        await session.execute(delete(EntityAlias).where(EntityAlias.room_id == room_id))
        if aliases:
            await session.execute(
                insert(EntityAlias).values(
                    [
                        {
                            "room_id": room_id,
                            "alias": a.alias,
                            "canonical": a.canonical,
                            "method": a.method,
                            "score": a.score,
                            "source_chunk_ids": list(a.source_chunk_ids),
                        }
                        for a in aliases
                    ]
                )
            )
        await session.commit()


async def room_aliases(platform: Platform, room_id: str) -> list[AliasRecord]:
    async with platform.session() as session:
        rows = await session.execute(
            select(EntityAlias).where(EntityAlias.room_id == room_id).order_by(EntityAlias.alias)
        )
        return [
            AliasRecord(r.alias, r.canonical, r.method, r.score, tuple(r.source_chunk_ids))
            for r in rows.scalars()
        ]


async def build_graph(platform: Platform, room_id: str) -> GraphBuild:
    """Extract only chunks not yet extracted, then merge every current chunk into the graph."""
    started = time.perf_counter()
    extractor = platform.extractor
    chunks = await room_chunks(platform, room_id)
    async with platform.session() as session:
        rows = await session.execute(
            select(ChunkExtraction.chunk_id, ChunkExtraction.payload).where(
                ChunkExtraction.room_id == room_id, ChunkExtraction.extractor == extractor.name
            )
        )
        stored = {cid: Extraction.model_validate(payload) for cid, payload in rows}
        todo = [c for c in chunks if c.id not in stored]
        failed: dict[str, str] = {}
        batch_size = max(_EXTRACT_BATCH, platform.settings.llm_concurrency * 4)
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            results = await extractor.extract([c.text for c in batch])
            done = []
            for chunk, result in zip(batch, results, strict=True):
                if isinstance(result, ExtractionFailure):
                    failed[chunk.id] = result.error
                else:
                    done.append((chunk, result))
                    stored[chunk.id] = result
            if done:
                values = [
                    {
                        "chunk_id": c.id,
                        "extractor": extractor.name,
                        "room_id": room_id,
                        "payload": result.model_dump(),
                    }
                    for c, result in done
                ]
                await session.execute(
                    insert(ChunkExtraction).values(values).on_conflict_do_nothing()
                )
                # Committed per batch: a killed run keeps what it already extracted.
                await session.commit()

    # A chunk that failed for good is left out now and extracted again on the next run.
    graph = merge_extractions((c.id, stored[c.id]) for c in chunks if c.id in stored)
    decided = await _model_merges(platform, graph) if platform.embedder.semantic else {}
    async with platform.session() as session:
        speakers = await room_speakers(session, room_id)
    graph, aliases = resolve(graph, decided, speakers, ordinary_words(c.text for c in chunks))
    if platform.llm is not None:
        await _summarize_descriptions(platform.llm, graph)
    await platform.graph.replace_graph(room_id, graph)
    await _store_aliases(platform, room_id, aliases)
    aliases_of: dict[str, list[str]] = {}
    for record in aliases:
        aliases_of.setdefault(record.canonical, []).append(record.alias)
    vectors = await sync_vectors(
        platform,
        ENTITIES,
        room_id,
        {
            e.name: (
                f"{e.display_name} ({e.type})"
                + (f", also called {', '.join(aliases_of[e.name])}" if e.name in aliases_of else "")
                + f": {e.description}",
                {"name": e.name, "type": e.type},
            )
            for e in graph.entities
        },
    )
    types: dict[str, int] = {}
    for e in graph.entities:
        types[e.type] = types.get(e.type, 0) + 1
    return GraphBuild(
        chunks=len(chunks),
        chunks_extracted=len(todo) - len(failed),
        failed_chunks=failed,
        entities=len(graph.entities),
        relationships=len(graph.relationships),
        aliases=len(aliases),
        dropped_relationships=sum(
            stored[c.id].dropped_relationships for c in chunks if c.id in stored
        ),
        vectors=vectors,
        seconds=time.perf_counter() - started,
        entity_types=dict(sorted(types.items())),
    )


# --- communities --------------------------------------------------------------------------------


@dataclass
class CommunityBuild:
    total: int
    levels: int
    unchanged: int
    top_level: int
    largest: int
    seconds: float


async def detect_communities(platform: Platform, room_id: str) -> CommunityBuild:
    started = time.perf_counter()
    # A store that runs Leiden itself (Neo4j: GDS) does; otherwise Leiden runs here in Python.
    from knowledge.stores.base import CommunityDetector

    if isinstance(platform.graph, CommunityDetector):
        communities = await platform.graph.detect_communities(
            room_id,
            seed=platform.settings.leiden_seed,
            max_cluster_size=platform.settings.leiden_max_cluster_size,
        )
    else:
        graph = await platform.graph.get_graph(room_id)
        communities = hierarchical_communities(
            room_id,
            (e.name for e in graph.entities),
            [(r.source, r.target, r.weight) for r in graph.relationships],
            seed=platform.settings.leiden_seed,
            max_cluster_size=platform.settings.leiden_max_cluster_size,
        )
    before = {c.id for c in await platform.graph.get_communities(room_id)}
    await platform.graph.replace_communities(room_id, communities)
    return CommunityBuild(
        total=len(communities),
        levels=len({c.level for c in communities}),
        unchanged=sum(1 for c in communities if c.id in before),
        top_level=sum(1 for c in communities if c.level == 0),
        largest=max((len(c.entity_names) for c in communities), default=0),
        seconds=time.perf_counter() - started,
    )


# --- community reports --------------------------------------------------------------------------


@dataclass
class ReportBuild:
    total: int
    regenerated: int
    deleted: int
    vectors: VectorSync
    seconds: float


async def write_reports(platform: Platform, room_id: str) -> ReportBuild:
    """Write a report for each community whose content changed; drop reports of gone ones."""
    started = time.perf_counter()
    writer = platform.report_writer
    graph: RoomGraph = await platform.graph.get_graph(room_id)
    communities = await platform.graph.get_communities(room_id)
    existing = {r.community_id: r for r in await platform.graph.get_reports(room_id)}
    chunk_texts = {c.id: c.text for c in await room_chunks(platform, room_id)}
    entities = {e.name: e for e in graph.entities}

    reports = []
    contexts = []
    for community in communities:
        context = build_context(community, entities, graph.relationships, chunk_texts)
        old = existing.get(community.id)
        if old is not None and old.content_hash == context.content_hash():
            reports.append(old)
        else:
            contexts.append(context)
    fresh = list(await asyncio.gather(*(writer.write(c) for c in contexts)))
    reports += fresh
    await platform.graph.upsert_reports(room_id, fresh)
    gone = sorted(set(existing) - {c.id for c in communities})
    await platform.graph.delete_reports(room_id, gone)
    vectors = await sync_vectors(
        platform,
        COMMUNITIES,
        room_id,
        {
            r.community_id: (report_text(r), {"level": r.level, "rank": r.rank, "title": r.title})
            for r in reports
        },
    )
    return ReportBuild(
        total=len(reports),
        regenerated=len(fresh),
        deleted=len(gone),
        vectors=vectors,
        seconds=time.perf_counter() - started,
    )


# --- whole room ---------------------------------------------------------------------------------


@dataclass
class RoomIndex:
    chunks: ChunkSync
    evidence: EvidenceSync
    graph: GraphBuild
    communities: CommunityBuild
    reports: ReportBuild


async def index_room(platform: Platform, room_id: str) -> RoomIndex:
    """Every step in order, in this process (what a room refresh run materializes)."""
    chunks = await sync_chunks(platform, room_id)
    evidence = await sync_evidence(platform, room_id)
    graph = await build_graph(platform, room_id)
    communities = await detect_communities(platform, room_id)
    reports = await write_reports(platform, room_id)
    return RoomIndex(chunks, evidence, graph, communities, reports)


async def wipe_room(platform: Platform, room_id: str) -> None:
    """Remove every derived fact of a room from every store (the sources stay)."""
    async with platform.session() as session:
        await get_room(session, room_id)
        await session.execute(delete(ChunkExtraction).where(ChunkExtraction.room_id == room_id))
        await session.execute(delete(RoomChunk).where(RoomChunk.room_id == room_id))
        await session.execute(delete(EntityAlias).where(EntityAlias.room_id == room_id))
        await session.commit()
    await platform.graph.wipe_room(room_id)
    await platform.vectors.wipe_room(room_id)


async def room_state(platform: Platform, room_id: str) -> dict[str, int]:
    """Counts of every stored kind of fact of a room (used by tests, checks and the demo)."""
    counts = dict(await platform.graph.counts(room_id))
    async with platform.session() as session:
        chunks: Sequence[tuple[str, str | None]] = (
            await session.execute(
                select(RoomChunk.id, RoomChunk.artifact_id).where(RoomChunk.room_id == room_id)
            )
        ).all()
    counts["chunks"] = len(chunks)
    counts["artifact_chunks"] = sum(1 for _, artifact in chunks if artifact)
    for collection in (CHUNKS, ENTITIES, COMMUNITIES, EVIDENCE):
        counts[f"{collection}_vectors"] = await platform.vectors.count(collection, room_id)
    return counts
