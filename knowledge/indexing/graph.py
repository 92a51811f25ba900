"""Step 3: entities and relationships extracted from the chunks, resolved, stored with vectors."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert

from dbschema.models import ChunkExtraction, EntityAlias
from knowledge.chat import room_speakers
from knowledge.extraction.base import Extraction, ExtractionFailure
from knowledge.graph import Entity, RoomGraph, merge_extractions
from knowledge.indexing.chunks import room_chunks
from knowledge.indexing.vectors import VectorSync, sync_vectors
from knowledge.llm import prompts
from knowledge.llm.provider import LLMError, LLMProvider
from knowledge.llm.schemas import EntitySummary, SameEntity
from knowledge.platform import Platform
from knowledge.resolution import AliasRecord, embedding_pairs, resolve
from knowledge.stores.base import ENTITIES

_EXTRACT_BATCH = 16


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
