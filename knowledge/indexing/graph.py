"""Step 3: entities and relationships extracted from the chunks, resolved, stored with vectors.

The step works on the delta. PostgreSQL keeps, per room, what the stored graph was built from
(``graph_build_*`` and the other tables of migration 0010): every chunk seen (its position, the
words it writes in lower case, whether its extraction is merged), each merged chunk's entity
and relationship *mentions* (``knowledge.graph.EntityMention``), and the entities and
relationships merged from them before entity resolution. A build then

1. compares the chunk ids it has seen with the room's current chunk ids (an id-only query):
   chunks gone, chunks new, chunks whose extraction failed before;
2. reads the texts and stored extractions of the new chunks only, extracts what is missing;
3. deletes the mentions of the chunks gone, inserts those of the chunks extracted, and merges
   again only the names and pairs they touch (their mentions in chunk position order, through
   the same :class:`~knowledge.graph.GraphMerger` a full merge uses, so the rows are the same);
4. resolves aliases over the merged names (small rows; ordinary words from a per-room word
   count), and recomputes only the resolved entities and relationships whose merged rows or
   alias groups changed;
5. writes only the rows that differ from the stored ones (``GraphStore.apply_graph_changes``),
   the alias rows that changed, the vectors of the entities whose text changed, and summarizes
   (LLM path) only the entities it recomputed.

A room without that state (never built, built before migration 0010, another extractor) or
whose last delta build stopped part-way (``dirty``) gets a full build, which fills it. Either
way the stored state is the one a full build from the current chunks gives.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import (
    ChunkExtraction,
    EntityAlias,
    GraphBuildChunk,
    GraphBuildRoom,
    GraphEntityMention,
    GraphMergedEntity,
    GraphMergedRelationship,
    GraphRelationshipMention,
    GraphRoomWord,
    RoomChunk,
)
from knowledge.chat import room_speakers
from knowledge.extraction.base import Extraction, ExtractionFailure
from knowledge.graph import (
    MAX_DESCRIPTIONS,
    Entity,
    EntityMention,
    GraphMerger,
    Relationship,
    RelationshipMention,
    RoomGraph,
    extraction_mentions,
)
from knowledge.indexing.changes import log_graph_changes
from knowledge.indexing.vectors import (
    VectorSync,
    searched_by_vector,
    sync_vector_ids,
    sync_vectors,
)
from knowledge.llm import prompts
from knowledge.llm.provider import LLMError, LLMProvider
from knowledge.llm.schemas import EntitySummary, SameEntity
from knowledge.platform import Platform
from knowledge.relational import insert_records
from knowledge.reports import entity_report_key, mention_bucket, relationship_report_key
from knowledge.resolution import (
    AliasRecord,
    alias_map,
    alias_record,
    alias_root,
    embedding_pairs,
    merge_entity_group,
    merge_relationship_group,
    resolve,
    resolved_pair,
    speaker_people,
)
from knowledge.stores.base import ENTITIES

_EXTRACT_BATCH = 16
#: Rows per ``jsonb_to_recordset`` insert.
_ROWS = 5000


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
    #: "full" (every chunk merged), "delta" (the changed chunks applied) or "unchanged".
    mode: str = "full"
    #: Counted reads and writes (what the step cost, whatever the machine):
    #: chunk texts and stored extractions read, mention rows read back to merge again,
    chunks_read: int = 0
    extractions_read: int = 0
    mentions_read: int = 0
    #: names whose new mentions were folded into their stored merged row (nothing read back)
    names_folded: int = 0
    #: stored entity / relationship rows written (upserted) and deleted, alias rows written
    #: or deleted, entities summarized by the LLM.
    entities_written: int = 0
    entities_deleted: int = 0
    relationships_written: int = 0
    relationships_deleted: int = 0
    aliases_written: int = 0
    summarized: int = 0


async def _summarize_descriptions(llm: LLMProvider, entities: Iterable[Entity]) -> int:
    """One description per entity merged from several. Cached on the set of descriptions, so
    it is recomputed only when that set changed. Returns how many were asked for."""

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

    todo = [e for e in entities if len(e.descriptions) > 1]
    await asyncio.gather(*(summarize(e) for e in todo))
    return len(todo)


_MODEL_MERGE = 0.92
_LOWER_WORD = re.compile(r"(?<![\w'’])[a-z][a-z'’-]*")


def ordinary_words(texts: Iterable[str]) -> set[str]:
    """Words the room writes in lower case somewhere (so they are not parts of names)."""
    found: set[str] = set()
    for chunk_text in texts:
        found.update(_LOWER_WORD.findall(chunk_text))
    return found


def _top_entities(entities: Iterable[Entity]) -> list[Entity]:
    """The entities the embedding model compares (the most mentioned)."""
    return sorted(entities, key=lambda e: (-e.mentions, e.name))[:300]


async def _model_merges(
    platform: Platform, graph: RoomGraph | Sequence[Entity]
) -> dict[str, tuple[str, str, float]]:
    """Aliases found by the embedding model (and, on the LLM path, confirmed by the LLM for a
    borderline similarity) among the graph's most mentioned entities (or these, already
    chosen by :func:`_top_entities`): alias -> (canonical, method, score). The more mentioned
    name is the canonical one."""
    entities = _top_entities(graph.entities) if isinstance(graph, RoomGraph) else graph
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


def _alias_values(room_id: str, a: AliasRecord) -> dict[str, Any]:
    return {
        "room_id": room_id,
        "alias": a.alias,
        "canonical": a.canonical,
        "method": a.method,
        "score": a.score,
        "source_chunk_ids": list(a.source_chunk_ids),
    }


async def _store_aliases(platform: Platform, room_id: str, aliases: list[AliasRecord]) -> None:
    """Make the room's alias rows exactly ``aliases`` (a full build)."""
    async with platform.session() as session:
        await session.execute(delete(EntityAlias).where(EntityAlias.room_id == room_id))
        for start in range(0, len(aliases), _ROWS):
            await session.execute(
                insert(EntityAlias).values(
                    [_alias_values(room_id, a) for a in aliases[start : start + _ROWS]]
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


def _vector_item(entity: Entity, aliases: Sequence[str]) -> tuple[str, dict[str, Any]]:
    return (
        f"{entity.display_name} ({entity.type})"
        + (f", also called {', '.join(aliases)}" if aliases else "")
        + f": {entity.description}",
        {"name": entity.name, "type": entity.type},
    )


# --- PostgreSQL helpers -------------------------------------------------------------------------

_CHUNK_COLUMNS = (
    "room_id text, chunk_id text, position text, merged boolean, words text[], dropped int"
)
_ENTITY_MENTION_COLUMNS = (
    "room_id text, chunk_id text, seq int, position text, name text, display_name text, "
    "type text, description text"
)
_RELATIONSHIP_MENTION_COLUMNS = (
    "room_id text, chunk_id text, seq int, position text, source text, target text, "
    "weight float8, description text"
)
_MERGED_ENTITY_COLUMNS = (
    "room_id text, name text, display_name text, type text, descriptions text[], "
    "source_chunk_ids text[], mentions int, type_counts jsonb"
)
_MERGED_RELATIONSHIP_COLUMNS = (
    "room_id text, source text, target text, weight float8, descriptions text[], "
    "source_chunk_ids text[]"
)


def _mention_rows(
    room_id: str, chunk_id: str, position: str, extraction: Extraction
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    entities, relationships = extraction_mentions(extraction)
    return (
        [
            {
                "room_id": room_id,
                "chunk_id": chunk_id,
                "seq": i,
                "position": position,
                "name": m.name,
                "display_name": m.display_name,
                "type": m.type,
                "description": m.description,
            }
            for i, m in enumerate(entities)
        ],
        [
            {
                "room_id": room_id,
                "chunk_id": chunk_id,
                "seq": i,
                "position": position,
                "source": m.source,
                "target": m.target,
                "weight": m.weight,
                "description": m.description,
            }
            for i, m in enumerate(relationships)
        ],
    )


def _merged_entity_row(room_id: str, e: Entity, type_counts: Mapping[str, int]) -> dict[str, Any]:
    return {
        "room_id": room_id,
        "name": e.name,
        "display_name": e.display_name,
        "type": e.type,
        "descriptions": list(e.descriptions),
        "source_chunk_ids": list(e.source_chunk_ids),
        "mentions": e.mentions,
        "type_counts": dict(type_counts),
    }


def _merged_relationship_row(room_id: str, r: Relationship, descriptions: list[str]) -> dict:
    return {
        "room_id": room_id,
        "source": r.source,
        "target": r.target,
        "weight": r.weight,
        "descriptions": descriptions,
        "source_chunk_ids": list(r.source_chunk_ids),
    }


def _entity_of(row: Any) -> Entity:
    """A merged (pre-resolution) entity row as the merge gives it."""
    descriptions = list(row.descriptions)
    return Entity(
        name=row.name,
        display_name=row.display_name,
        type=row.type,
        description=" ".join(descriptions),
        source_chunk_ids=list(row.source_chunk_ids),
        mentions=row.mentions,
        descriptions=descriptions,
    )


def _relationship_of(row: Any) -> Relationship:
    return Relationship(
        source=row.source,
        target=row.target,
        weight=row.weight,
        description=" ".join(row.descriptions),
        source_chunk_ids=list(row.source_chunk_ids),
    )


async def _add_words(session: AsyncSession, room_id: str, counts: dict[str, int]) -> None:
    if not counts:
        return
    words = sorted(counts)
    await session.execute(
        text(
            "INSERT INTO graph_room_words (room_id, word, chunks) "
            "SELECT :room, w, n FROM unnest(CAST(:words AS text[]), CAST(:counts AS int[])) "
            "AS u(w, n) ON CONFLICT (room_id, word) "
            "DO UPDATE SET chunks = graph_room_words.chunks + excluded.chunks"
        ),
        {"room": room_id, "words": words, "counts": [counts[w] for w in words]},
    )


async def _remove_words(session: AsyncSession, room_id: str, counts: dict[str, int]) -> None:
    if not counts:
        return
    words = sorted(counts)
    params = {"room": room_id, "words": words, "counts": [counts[w] for w in words]}
    await session.execute(
        text(
            "UPDATE graph_room_words g SET chunks = g.chunks - u.n "
            "FROM unnest(CAST(:words AS text[]), CAST(:counts AS int[])) AS u(w, n) "
            "WHERE g.room_id = :room AND g.word = u.w"
        ),
        params,
    )
    await session.execute(
        text(
            "DELETE FROM graph_room_words WHERE room_id = :room AND chunks <= 0 "
            "AND word = ANY(CAST(:words AS text[]))"
        ),
        params,
    )


async def _extract(
    platform: Platform,
    session: AsyncSession,
    room_id: str,
    todo: Sequence[tuple[str, str]],
    stored: dict[str, Extraction],
) -> dict[str, str]:
    """Extract the (chunk id, text) pairs, store the results (committed per batch: a killed
    run keeps what it already extracted) into ``stored``; chunk id -> error of failures."""
    extractor = platform.extractor
    failed: dict[str, str] = {}
    batch_size = max(_EXTRACT_BATCH, platform.settings.llm_concurrency * 4)
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        results = await extractor.extract([chunk_text for _, chunk_text in batch])
        done = []
        for (chunk_id, _), result in zip(batch, results, strict=True):
            if isinstance(result, ExtractionFailure):
                failed[chunk_id] = result.error
            else:
                done.append((chunk_id, result))
                stored[chunk_id] = result
        if done:
            values = [
                {
                    "chunk_id": chunk_id,
                    "extractor": extractor.name,
                    "room_id": room_id,
                    "payload": result.model_dump(),
                }
                for chunk_id, result in done
            ]
            await session.execute(insert(ChunkExtraction).values(values).on_conflict_do_nothing())
            await session.commit()
    return failed


async def _stored_extractions(
    session: AsyncSession, platform: Platform, room_id: str, chunk_ids: Sequence[str] | None
) -> dict[str, Extraction]:
    query = select(ChunkExtraction.chunk_id, ChunkExtraction.payload).where(
        ChunkExtraction.room_id == room_id, ChunkExtraction.extractor == platform.extractor.name
    )
    if chunk_ids is not None:
        if not chunk_ids:
            return {}
        query = query.where(ChunkExtraction.chunk_id.in_(list(chunk_ids)))
    rows = await session.execute(query)
    return {cid: Extraction.model_validate(payload) for cid, payload in rows}


def _type_counts(entities: Iterable[Entity]) -> dict[str, int]:
    types: dict[str, int] = {}
    for e in entities:
        types[e.type] = types.get(e.type, 0) + 1
    return dict(sorted(types.items()))


def _target(platform: Platform) -> str:
    """Where the build writes and with what: the graph store, the vector store, the embedder
    and the LLM (a room built into other stores, or with another model, is built in full)."""
    graph, vectors = platform.graph, platform.vectors
    return json.dumps(
        [
            type(graph).__name__,
            getattr(graph, "uri", ""),
            getattr(graph, "database", ""),
            type(vectors).__name__,
            getattr(vectors, "prefix", ""),
            platform.embedder.name,
            platform.llm.chat_model if platform.llm is not None else "",
        ]
    )


async def _set_state(
    platform: Platform,
    room_id: str,
    speakers: Sequence[str],
    dirty: bool,
    entity_types: dict[str, int] | None = None,
    session: AsyncSession | None = None,
) -> None:
    values: dict[str, Any] = {
        "room_id": room_id,
        "extractor": platform.extractor.name,
        "target": _target(platform),
        "speakers": list(speakers),
        "dirty": dirty,
        "entity_types": entity_types or {},
    }
    stmt = insert(GraphBuildRoom).values(**values)
    update_keys = ["extractor", "target", "speakers", "dirty"] + (
        ["entity_types"] if entity_types is not None else []
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["room_id"], set_={k: stmt.excluded[k] for k in update_keys}
    )
    if session is not None:
        await session.execute(stmt)
        return
    async with platform.session() as own:
        await own.execute(stmt)
        await own.commit()


async def _clear_build_state(session: AsyncSession, room_id: str) -> None:
    for model in BUILD_TABLES:
        await session.execute(delete(model).where(model.room_id == room_id))


#: The tables of the graph build's own state (wiped with the room, purged with it).
BUILD_TABLES: tuple[Any, ...] = (
    GraphEntityMention,
    GraphRelationshipMention,
    GraphMergedEntity,
    GraphMergedRelationship,
    GraphRoomWord,
    GraphBuildChunk,
    GraphBuildRoom,
)


# --- the step -----------------------------------------------------------------------------------


async def build_graph(platform: Platform, room_id: str) -> GraphBuild:
    """Apply the room's changed chunks to its stored graph (a full build when the room has no
    build state of this extractor, or its last build stopped part-way)."""
    started = time.perf_counter()
    async with platform.session() as session:
        state = await session.get(GraphBuildRoom, room_id)
    if (
        state is None
        or state.dirty
        or state.extractor != platform.extractor.name
        or state.target != _target(platform)
        or not await _stores_agree(platform, room_id, sum(state.entity_types.values()))
    ):
        build = await _full_build(platform, room_id)
    else:
        build = await _delta_build(
            platform, room_id, list(state.speakers), dict(state.entity_types)
        )
    build.seconds = time.perf_counter() - started
    return build


async def _stores_agree(platform: Platform, room_id: str, entities: int) -> bool:
    """The stores still hold as many entities (and entity points) as the last build wrote
    (not so after a store was wiped or swapped on its own): two counts."""
    if (await platform.graph.counts(room_id, ["entities"]))["entities"] != entities:
        return False
    return await platform.vectors.count(ENTITIES, room_id) == entities


async def _full_build(platform: Platform, room_id: str) -> GraphBuild:
    """Merge every current chunk (what a rebuild does), and write the build state beside."""
    async with platform.session() as session:
        chunks = list(
            (
                await session.execute(
                    select(RoomChunk.id, RoomChunk.position, RoomChunk.text)
                    .where(RoomChunk.room_id == room_id)
                    .order_by(RoomChunk.position)
                )
            ).all()
        )
        stored = await _stored_extractions(session, platform, room_id, None)
        extractions_read = len(stored)
        todo = [(c.id, c.text) for c in chunks if c.id not in stored]
        failed = await _extract(platform, session, room_id, todo, stored)
        speakers = await room_speakers(session, room_id)

    words_of = {c.id: sorted(set(_LOWER_WORD.findall(c.text))) for c in chunks}
    merger = GraphMerger()
    chunk_rows: list[dict[str, Any]] = []
    entity_mentions: list[dict[str, Any]] = []
    relationship_mentions: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for c in chunks:
        extraction = stored.get(c.id)
        chunk_rows.append(
            {
                "room_id": room_id,
                "chunk_id": c.id,
                "position": c.position,
                "merged": extraction is not None,
                "words": words_of[c.id],
                "dropped": extraction.dropped_relationships if extraction else 0,
            }
        )
        for word in words_of[c.id]:
            counts[word] = counts.get(word, 0) + 1
        # A chunk that failed for good is left out now and extracted again on the next run.
        if extraction is None:
            continue
        merger.add_extraction(c.id, extraction)
        ents, rels = _mention_rows(room_id, c.id, c.position, extraction)
        entity_mentions.extend(ents)
        relationship_mentions.extend(rels)
    graph = merger.graph()

    async with platform.session() as session:
        await _clear_build_state(session, room_id)
        await _set_state(platform, room_id, speakers, True, session=session)
        await insert_records(session, "graph_build_chunks", _CHUNK_COLUMNS, chunk_rows)
        await _add_words(session, room_id, counts)
        await insert_records(
            session, "graph_entity_mentions", _ENTITY_MENTION_COLUMNS, entity_mentions
        )
        await insert_records(
            session,
            "graph_relationship_mentions",
            _RELATIONSHIP_MENTION_COLUMNS,
            relationship_mentions,
        )
        await insert_records(
            session,
            "graph_merged_entities",
            _MERGED_ENTITY_COLUMNS,
            [_merged_entity_row(room_id, e, merger.types[e.name]) for e in graph.entities],
        )
        await insert_records(
            session,
            "graph_merged_relationships",
            _MERGED_RELATIONSHIP_COLUMNS,
            [
                _merged_relationship_row(room_id, r, merger.rel_descriptions[r.pair])
                for r in graph.relationships
            ],
        )
        await session.commit()

    decided = (
        await _model_merges(platform, _top_entities(graph.entities))
        if platform.embedder.semantic
        else {}
    )
    resolved, aliases = resolve(graph, decided, speakers, set(counts))
    summarized = (
        await _summarize_descriptions(platform.llm, resolved.entities)
        if platform.llm is not None
        else 0
    )
    # Logged before the graph is replaced (a crash in between costs a full reports pass,
    # never a stale report).
    await log_graph_changes(platform, room_id, whole_room=True)
    await platform.graph.replace_graph(room_id, resolved)
    await _store_aliases(platform, room_id, aliases)
    aliases_of: dict[str, list[str]] = {}
    for record in aliases:
        aliases_of.setdefault(record.canonical, []).append(record.alias)
    vectors = await sync_vectors(
        platform,
        ENTITIES,
        room_id,
        {e.name: _vector_item(e, aliases_of.get(e.name, ())) for e in resolved.entities},
        dense=searched_by_vector(platform),
    )
    types = _type_counts(resolved.entities)
    await _set_state(platform, room_id, speakers, False, types)
    return GraphBuild(
        chunks=len(chunks),
        chunks_extracted=len(todo) - len(failed),
        failed_chunks=failed,
        entities=len(resolved.entities),
        relationships=len(resolved.relationships),
        aliases=len(aliases),
        dropped_relationships=sum(e.dropped_relationships for e in stored.values()),
        vectors=vectors,
        seconds=0.0,
        entity_types=types,
        mode="full",
        chunks_read=len(chunks),
        extractions_read=extractions_read,
        entities_written=len(resolved.entities),
        relationships_written=len(resolved.relationships),
        aliases_written=len(aliases),
        summarized=summarized,
    )


@dataclass
class _Merged:
    """What applying the changed chunks did to the merged (pre-resolution) rows."""

    names: set[str] = field(default_factory=set)
    pairs: set[tuple[str, str]] = field(default_factory=set)
    mentions_read: int = 0
    #: Names whose new mentions were folded into their stored row (none read back).
    names_folded: int = 0


async def _apply_chunks(
    session: AsyncSession,
    room_id: str,
    gone: Sequence[str],
    new: Sequence[Any],
    merged_now: dict[str, tuple[str, Extraction]],
) -> _Merged:
    """Delete the chunks gone (their mentions and words), add the new ones, insert the
    mentions of ``merged_now`` (chunk id -> (position, extraction)), and merge again the names
    and pairs they touch, from their mentions in chunk order."""
    out = _Merged()
    gone_mentions: dict[str, _GoneMentions] = {}
    if gone:
        ids = list(gone)
        rows = await session.execute(
            delete(GraphEntityMention)
            .where(GraphEntityMention.room_id == room_id, GraphEntityMention.chunk_id.in_(ids))
            .returning(
                GraphEntityMention.name,
                GraphEntityMention.chunk_id,
                GraphEntityMention.type,
                GraphEntityMention.description,
            )
        )
        for name, chunk_id, kind, description in rows:
            left = gone_mentions.setdefault(name, _GoneMentions())
            left.count += 1
            left.types[kind] += 1
            left.chunks.add(chunk_id)
            if description:
                left.descriptions.add(description)
        out.names.update(gone_mentions)
        rel_rows = await session.execute(
            delete(GraphRelationshipMention)
            .where(
                GraphRelationshipMention.room_id == room_id,
                GraphRelationshipMention.chunk_id.in_(ids),
            )
            .returning(GraphRelationshipMention.source, GraphRelationshipMention.target)
        )
        out.pairs.update((s, t) for s, t in rel_rows)
        word_rows = await session.execute(
            delete(GraphBuildChunk)
            .where(GraphBuildChunk.room_id == room_id, GraphBuildChunk.chunk_id.in_(ids))
            .returning(GraphBuildChunk.words)
        )
        removed: dict[str, int] = {}
        for (words,) in word_rows:
            for word in words:
                removed[word] = removed.get(word, 0) + 1
        await _remove_words(session, room_id, removed)
    if new:
        added: dict[str, int] = {}
        chunk_rows = []
        for c in new:
            words = sorted(set(_LOWER_WORD.findall(c.text)))
            for word in words:
                added[word] = added.get(word, 0) + 1
            chunk_rows.append(
                {
                    "room_id": room_id,
                    "chunk_id": c.id,
                    "position": c.position,
                    "merged": False,
                    "words": words,
                    "dropped": 0,
                }
            )
        await insert_records(session, "graph_build_chunks", _CHUNK_COLUMNS, chunk_rows)
        await _add_words(session, room_id, added)
    entity_rows: list[dict[str, Any]] = []
    if merged_now:
        rel_mention_rows: list[dict[str, Any]] = []
        for chunk_id, (position, extraction) in merged_now.items():
            ents, rels = _mention_rows(room_id, chunk_id, position, extraction)
            entity_rows.extend(ents)
            rel_mention_rows.extend(rels)
            await session.execute(
                update(GraphBuildChunk)
                .where(GraphBuildChunk.room_id == room_id, GraphBuildChunk.chunk_id == chunk_id)
                .values(merged=True, dropped=extraction.dropped_relationships)
            )
        out.names.update(r["name"] for r in entity_rows)
        out.pairs.update((r["source"], r["target"]) for r in rel_mention_rows)
        await insert_records(session, "graph_entity_mentions", _ENTITY_MENTION_COLUMNS, entity_rows)
        await insert_records(
            session,
            "graph_relationship_mentions",
            _RELATIONSHIP_MENTION_COLUMNS,
            rel_mention_rows,
        )
    # The names' new mentions (the rows just inserted), in chunk order: the fold's order.
    arriving: dict[str, list[tuple[str, str, EntityMention]]] = {}
    for r in sorted(entity_rows, key=lambda r: (r["position"], r["chunk_id"], r["seq"])):
        mention = EntityMention(r["name"], r["display_name"], r["type"], r["description"])
        arriving.setdefault(r["name"], []).append((r["position"], r["chunk_id"], mention))
    await _merge_names(session, room_id, out, gone_mentions, arriving)
    await _merge_pairs(session, room_id, out)
    return out


#: The merged row of each name from its mentions, in the server: the same fold as
#: ``GraphMerger.add_entity`` (display name of the first mention; type the most counted one
#: other than ENTITY, ties to the first by code point; the first ``MAX_DESCRIPTIONS`` distinct
#: non-empty descriptions and the distinct chunks, in first-mention order), over the mentions
#: in chunk order. A busy entity has tens of thousands of mentions at 100k messages: shipping
#: them to Python to fold them was most of a one-message refresh of this step.
_MERGE_NAMES_SQL = f"""
WITH m AS MATERIALIZED (
  SELECT name, chunk_id, display_name, type, description,
         row_number() OVER (PARTITION BY name ORDER BY position, chunk_id, seq) AS i
  FROM graph_entity_mentions
  WHERE room_id = :room AND name = ANY(CAST(:names AS text[]))
), heads AS (
  SELECT name, display_name FROM m WHERE i = 1
), counted AS (
  SELECT name, count(*) AS mentions FROM m GROUP BY name
), typed AS (
  SELECT name, type, count(*) AS n FROM m GROUP BY name, type
), types AS (
  SELECT DISTINCT ON (name) name, type FROM typed
  ORDER BY name, (type = 'ENTITY'), n DESC, type COLLATE "C"
), type_counts AS (
  SELECT name, jsonb_object_agg(type, n) AS counts FROM typed GROUP BY name
), descriptions AS (
  SELECT name, (array_agg(description ORDER BY first))[1:{MAX_DESCRIPTIONS}] AS descriptions
  FROM (
    SELECT name, description, min(i) AS first FROM m WHERE description <> ''
    GROUP BY name, description
  ) d
  GROUP BY name
), chunks AS (
  SELECT name, array_agg(chunk_id ORDER BY first) AS chunk_ids
  FROM (
    SELECT name, chunk_id, min(i) AS first FROM m WHERE chunk_id <> '' GROUP BY name, chunk_id
  ) c
  GROUP BY name
)
INSERT INTO graph_merged_entities
  (room_id, name, display_name, type, descriptions, source_chunk_ids, mentions, type_counts)
SELECT :room, h.name, h.display_name, t.type, coalesce(d.descriptions, '{{}}'),
       coalesce(c.chunk_ids, '{{}}'), n.mentions, k.counts
FROM heads h JOIN counted n USING (name) JOIN types t USING (name) JOIN type_counts k USING (name)
LEFT JOIN descriptions d USING (name) LEFT JOIN chunks c USING (name)
RETURNING mentions
"""


#: How many of a merged entity's last chunk ids are read to take re-chunked tail chunks back
#: out of it (more gone chunks of one name than this: that name is merged from its mentions).
_TAIL = 8

_MERGED_STATE_SQL = f"""
SELECT name, display_name, type_counts, descriptions, mentions,
       coalesce(array_length(source_chunk_ids, 1), 0) AS n_chunks,
       source_chunk_ids[greatest(coalesce(array_length(source_chunk_ids, 1), 0) - {_TAIL} + 1, 1):]
         AS tail
FROM graph_merged_entities
WHERE room_id = :room AND name = ANY(CAST(:names AS text[]))
"""

_UPDATE_MERGED_SQL = """
UPDATE graph_merged_entities g
SET display_name = x.display_name, type = x.type, descriptions = x.descriptions,
    mentions = x.mentions, type_counts = x.type_counts,
    source_chunk_ids = g.source_chunk_ids[1:x.keep] || x.added
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(
  name text, display_name text, type text, descriptions text[], mentions int,
  type_counts jsonb, keep int, added text[]
)
WHERE g.room_id = :room AND g.name = x.name
"""


@dataclass
class _GoneMentions:
    """The mentions of one name that left with the chunks gone."""

    count: int = 0
    types: Counter[str] = field(default_factory=Counter)
    chunks: set[str] = field(default_factory=set)
    descriptions: set[str] = field(default_factory=set)


async def _merge_names(
    session: AsyncSession,
    room_id: str,
    out: _Merged,
    gone: Mapping[str, _GoneMentions],
    arriving: Mapping[str, list[tuple[str, str, EntityMention]]],
) -> None:
    """Merge the touched names again. The merge is a left fold over a name's mentions in
    chunk order, and the stored row is its whole state (``type_counts`` included); so when a
    refresh only appends mentions after a name's last chunk (and takes back out mentions of
    chunks at the end of its chunk list, the tail a new message re-chunks), the new mentions
    fold into the stored row and nothing is read back. Any other change of a name (a chunk
    gone from the middle, a gone description the row keeps, a row from before 0017) merges it
    from all its mentions, in the server."""
    if not out.names:
        return
    names = sorted(out.names)
    stored = {
        r.name: r
        for r in await session.execute(text(_MERGED_STATE_SQL), {"room": room_id, "names": names})
    }
    tails = sorted({cid for r in stored.values() for cid in r.tail})
    positions = (
        dict(
            (
                await session.execute(
                    select(GraphBuildChunk.chunk_id, GraphBuildChunk.position).where(
                        GraphBuildChunk.room_id == room_id, GraphBuildChunk.chunk_id.in_(tails)
                    )
                )
            ).all()
        )
        if tails
        else {}
    )

    remerge: list[str] = []
    updates: list[dict[str, Any]] = []
    inserts: list[dict[str, Any]] = []
    emptied: list[str] = []
    for name in names:
        row = stored.get(name)
        left = gone.get(name, _GoneMentions())
        new = arriving.get(name, [])
        merger = GraphMerger()
        keep = 0
        if row is not None:
            if row.type_counts is None:
                remerge.append(name)
                continue
            tail, k = list(row.tail), len(left.chunks)
            types = Counter(row.type_counts)
            types.subtract(left.types)
            remaining = row.mentions - left.count
            keep = row.n_chunks - k
            # The chunk the name's remaining mentions end in, and its position.
            last = tail[len(tail) - k - 1] if len(tail) > k else None
            last_position = positions.get(last) if last is not None else None
            resumable = (
                k <= len(tail)
                and set(tail[len(tail) - k :]) == left.chunks  # the gone ones are its tail
                and not left.descriptions & set(row.descriptions)
                and min(types.values(), default=0) >= 0
                and remaining >= 0
                and (remaining == 0) == (keep == 0)
                and not any(cid in tail for _, cid, _ in new)
                and (
                    remaining == 0
                    or (
                        last_position is not None
                        and all(position > last_position for position, _, _ in new)
                    )
                )
            )
            if not resumable:
                remerge.append(name)
                continue
            if remaining:
                merger.resume_entity(
                    name, row.display_name, +types, list(row.descriptions), remaining
                )
        elif left.count:
            remerge.append(name)  # mentions gone of a name without a row: merge from scratch
            continue
        for _, chunk_id, mention in new:
            merger.add_entity(chunk_id, mention)
        if name not in merger.display:
            if row is not None:
                emptied.append(name)
            continue
        entity = merger.entity(name)
        record = _merged_entity_row(room_id, entity, merger.types[name])
        if row is None:
            inserts.append(record)
        else:
            del record["source_chunk_ids"], record["room_id"]
            updates.append({**record, "keep": keep, "added": entity.source_chunk_ids})

    if emptied or remerge:
        await session.execute(
            delete(GraphMergedEntity).where(
                GraphMergedEntity.room_id == room_id,
                GraphMergedEntity.name.in_([*emptied, *remerge]),
            )
        )
    if remerge:
        merged = await session.execute(
            text(_MERGE_NAMES_SQL), {"room": room_id, "names": sorted(remerge)}
        )
        out.mentions_read += sum(merged.scalars())
    if updates:
        await session.execute(
            text(_UPDATE_MERGED_SQL),
            {"room": room_id, "rows": json.dumps(updates, ensure_ascii=False)},
        )
    await insert_records(session, "graph_merged_entities", _MERGED_ENTITY_COLUMNS, inserts)
    out.names_folded += len(updates) + len(inserts) + len(emptied)


async def _merge_pairs(session: AsyncSession, room_id: str, out: _Merged) -> None:
    if not out.pairs:
        return
    pairs = sorted(out.pairs)
    params = {
        "room": room_id,
        "sources": [s for s, _ in pairs],
        "targets": [t for _, t in pairs],
    }
    rows = (
        await session.execute(
            text(
                "SELECT m.source, m.target, m.chunk_id, m.weight, m.description "
                "FROM graph_relationship_mentions m JOIN unnest(CAST(:sources AS text[]), "
                "CAST(:targets AS text[])) AS d(s, t) ON m.source = d.s AND m.target = d.t "
                "WHERE m.room_id = :room ORDER BY m.position, m.chunk_id, m.seq"
            ),
            params,
        )
    ).all()
    out.mentions_read += len(rows)
    merger = GraphMerger()
    for r in rows:
        merger.add_relationship(
            r.chunk_id, RelationshipMention(r.source, r.target, r.weight, r.description)
        )
    await session.execute(
        text(
            "DELETE FROM graph_merged_relationships g USING unnest(CAST(:sources AS text[]), "
            "CAST(:targets AS text[])) AS d(s, t) "
            "WHERE g.room_id = :room AND g.source = d.s AND g.target = d.t"
        ),
        params,
    )
    await insert_records(
        session,
        "graph_merged_relationships",
        _MERGED_RELATIONSHIP_COLUMNS,
        [
            _merged_relationship_row(room_id, merger.relationship(p), merger.rel_descriptions[p])
            for p in pairs
            if p in merger.weights
        ],
    )


class _Roots:
    """``name in final``: the names no alias merges away (as :func:`resolve`'s ``final``: every
    alias is a merged entity, so every name an alias ends in is a stored entity)."""

    def __init__(self, aliases: dict[str, tuple[str, str, float]]) -> None:
        self.aliases = aliases

    def __contains__(self, name: object) -> bool:
        return name not in self.aliases


async def _delta_build(
    platform: Platform, room_id: str, old_speakers: list[str], entity_types: dict[str, int]
) -> GraphBuild:
    # 1. Which chunks changed: the ids (and positions) seen vs the room's current ones.
    async with platform.session() as session:
        seen = {
            r.chunk_id: (r.position, r.merged)
            for r in await session.execute(
                select(
                    GraphBuildChunk.chunk_id, GraphBuildChunk.position, GraphBuildChunk.merged
                ).where(GraphBuildChunk.room_id == room_id)
            )
        }
        current = {
            cid: position
            for cid, position in await session.execute(
                select(RoomChunk.id, RoomChunk.position).where(RoomChunk.room_id == room_id)
            )
        }
        gone = sorted(cid for cid, (pos, _) in seen.items() if current.get(cid) != pos)
        new_ids = sorted(cid for cid, pos in current.items() if seen.get(cid, (None,))[0] != pos)
        retry = sorted(cid for cid, (pos, merged) in seen.items() if not merged and cid not in gone)
        # 2. The texts of those chunks only, their stored extractions, the missing extracted.
        wanted = [*new_ids, *retry]
        chunks = (
            list(
                (
                    await session.execute(
                        select(RoomChunk.id, RoomChunk.position, RoomChunk.text).where(
                            RoomChunk.room_id == room_id, RoomChunk.id.in_(wanted)
                        )
                    )
                ).all()
            )
            if wanted
            else []
        )
        stored = await _stored_extractions(session, platform, room_id, wanted)
        extractions_read = len(stored)
        todo = [(c.id, c.text) for c in chunks if c.id not in stored]
        failed = await _extract(platform, session, room_id, todo, stored)
        speakers = await room_speakers(session, room_id)
    new = [c for c in chunks if c.id in set(new_ids)]
    merged_now = {c.id: (c.position, stored[c.id]) for c in chunks if c.id in stored}
    base = {
        "chunks": len(current),
        "chunks_extracted": len(todo) - len(failed),
        "failed_chunks": failed,
        "chunks_read": len(chunks),
        "extractions_read": extractions_read,
        "seconds": 0.0,
    }
    if not gone and not new and not merged_now and speakers == old_speakers:
        return await _summary(platform, room_id, entity_types, "unchanged", VectorSync(), base)

    # 3. Mentions of the changed chunks applied; their names and pairs merged again.
    async with platform.session() as session:
        await _set_state(platform, room_id, speakers, True, session=session)
        changed = await _apply_chunks(session, room_id, gone, new, merged_now)
        await session.commit()

    # 4. Resolution over the merged names (small rows), then only what it touches.
    async with platform.session() as session:
        light = [
            Entity(name=n, display_name=d, type=t, mentions=m)
            for n, d, t, m in await session.execute(
                select(
                    GraphMergedEntity.name,
                    GraphMergedEntity.display_name,
                    GraphMergedEntity.type,
                    GraphMergedEntity.mentions,
                ).where(GraphMergedEntity.room_id == room_id)
            )
        ]
        light.sort(key=lambda e: e.name)
        name_words = sorted({w for e in light if " " in e.name for w in e.name.split()})
        ordinary = set(
            (
                await session.execute(
                    select(GraphRoomWord.word).where(
                        GraphRoomWord.room_id == room_id, GraphRoomWord.word.in_(name_words)
                    )
                )
            ).scalars()
        )
        old_aliases = {
            r.alias: (r.canonical, r.method, r.score)
            for r in await session.execute(
                select(
                    EntityAlias.alias, EntityAlias.canonical, EntityAlias.method, EntityAlias.score
                ).where(EntityAlias.room_id == room_id)
            )
        }
        decided: dict[str, tuple[str, str, float]] = {}
        if platform.embedder.semantic:
            top = [e.name for e in _top_entities(light)]
            rows = await session.execute(
                select(GraphMergedEntity).where(
                    GraphMergedEntity.room_id == room_id, GraphMergedEntity.name.in_(top)
                )
            )
            by_top = {r.name: _entity_of(r) for r in rows.scalars()}
            decided = await _model_merges(platform, [by_top[n] for n in top])
    people = speaker_people({e.name for e in light}, speakers)
    aliases = alias_map(light, people, decided, speakers, ordinary)

    def old_root(name: str) -> str:
        return old_aliases[name][0] if name in old_aliases else name

    def new_root(name: str) -> str:
        return alias_root(aliases, name)

    moved = {n for n in set(old_aliases) | set(aliases) if old_root(n) != new_root(n)}
    touched = changed.names | moved
    if speakers != old_speakers:
        touched |= {" ".join(s.lower().split()) for s in [*old_speakers, *speakers]}
    old_roots = {old_root(n) for n in touched}
    # A root that lost a name to another one is built again too.
    roots = {new_root(n) for n in touched | old_roots}
    members: dict[str, list[str]] = {}
    for alias in aliases:
        members.setdefault(new_root(alias), []).append(alias)
    alias_changed = {
        a
        for a in aliases
        if a not in old_aliases
        or a in changed.names
        or (old_aliases[a][0], old_aliases[a][1], old_aliases[a][2])
        != (new_root(a), aliases[a][1], round(aliases[a][2], 4))
    }
    stale_aliases = sorted(set(old_aliases) - set(aliases))
    need = roots | {m for r in roots for m in members.get(r, ())} | alias_changed

    async with platform.session() as session:
        full_rows = await session.execute(
            select(GraphMergedEntity).where(
                GraphMergedEntity.room_id == room_id, GraphMergedEntity.name.in_(sorted(need))
            )
        )
        merged_by_name = {r.name: _entity_of(r) for r in full_rows.scalars()}
        # Relationships: the changed merged pairs, and every merged pair of a name that moved.
        moved_list = sorted(moved)
        touching = (
            (
                await session.execute(
                    text(
                        "SELECT source, target FROM graph_merged_relationships "
                        "WHERE room_id = :room AND (source = ANY(CAST(:names AS text[])) "
                        "OR target = ANY(CAST(:names AS text[])))"
                    ),
                    {"room": room_id, "names": moved_list},
                )
            ).all()
            if moved_list
            else []
        )
        raw_pairs = changed.pairs | {(s, t) for s, t in touching}
        old_pairs: set[tuple[str, str]] = set()
        new_pairs: set[tuple[str, str]] = set()
        for s, t in raw_pairs:
            a, b = old_root(s), old_root(t)
            if a != b:
                old_pairs.add((a, b) if a < b else (b, a))
            pair = resolved_pair(aliases, s, t)
            if pair is not None:
                new_pairs.add(pair)
        # A resolved pair that lost a merged pair to another one is built again too.
        for a, b in list(old_pairs):
            pair = resolved_pair(aliases, a, b)
            if pair is not None:
                new_pairs.add(pair)
        group_names = sorted(
            {n for pair in new_pairs for r in pair for n in (r, *members.get(r, ()))}
        )
        candidates = (
            (
                await session.execute(
                    select(GraphMergedRelationship).where(
                        GraphMergedRelationship.room_id == room_id,
                        GraphMergedRelationship.source.in_(group_names),
                        GraphMergedRelationship.target.in_(group_names),
                    )
                )
            )
            .scalars()
            .all()
            if group_names
            else []
        )
    by_pair: dict[tuple[str, str], list[Relationship]] = {}
    for row in sorted(candidates, key=lambda r: (r.source, r.target)):
        pair = resolved_pair(aliases, row.source, row.target)
        if pair in new_pairs:
            by_pair.setdefault(pair, []).append(_relationship_of(row))
    relationships = {p: merge_relationship_group(p, rels) for p, rels in by_pair.items()}

    # The resolved entities of the touched roots, as apply_aliases builds them.
    people_by_name = {p.name: p for p in people}
    entities: dict[str, Entity] = {}
    for root in sorted(roots):
        base_entity = merged_by_name.get(root) or people_by_name.get(root)
        if base_entity is None:
            continue
        group = [merged_by_name[m] for m in sorted(members.get(root, ()))]
        entity = merge_entity_group(base_entity, group)
        if entity.mentions > 0 or entity.source_chunk_ids:
            entities[root] = entity
    summarized = (
        await _summarize_descriptions(platform.llm, entities.values())
        if platform.llm is not None
        else 0
    )

    # 5. Only the rows that differ from the stored ones.
    graph = platform.graph
    entity_names = sorted(roots | old_roots)
    stored_entities = {e.name: e for e in await graph.get_entities(room_id, entity_names)}
    pair_keys = sorted(old_pairs | new_pairs)
    stored_pairs = {r.pair: r for r in await graph.get_relationships(room_id, pair_keys)}
    upsert_entities = [e for n, e in sorted(entities.items()) if stored_entities.get(n) != e]
    delete_entities = sorted(n for n in stored_entities if n not in entities)
    upsert_rels = [r for p, r in sorted(relationships.items()) if stored_pairs.get(p) != r]
    delete_pairs = sorted(p for p in stored_pairs if p not in relationships)
    # The reports step's input, logged before the change is applied: only the changes a
    # report's content hash can see (one more mention of a busy entity within its power of
    # two, or one more co-mention of a pair within its, rewrites no report, so it need not
    # make the reports step hash the large communities those entities are in).
    changed_names = {
        e.name
        for e in upsert_entities
        if (old := stored_entities.get(e.name)) is None
        or entity_report_key(old) != entity_report_key(e)
        or mention_bucket(old) != mention_bucket(e)
    } | set(delete_entities)
    changed_names |= {
        n
        for r in upsert_rels
        if (old_rel := stored_pairs.get(r.pair)) is None
        or relationship_report_key(old_rel) != relationship_report_key(r)
        for n in r.pair
    } | {n for p in delete_pairs for n in p}
    await log_graph_changes(platform, room_id, entity_names=changed_names)
    await graph.apply_graph_changes(
        room_id, upsert_entities, upsert_rels, delete_entities, delete_pairs
    )

    records = [
        alias_record(aliases, a, _Roots(aliases), merged_by_name[a].source_chunk_ids)
        for a in sorted(alias_changed)
    ]
    async with platform.session() as session:
        if stale_aliases:
            await session.execute(
                delete(EntityAlias).where(
                    EntityAlias.room_id == room_id, EntityAlias.alias.in_(stale_aliases)
                )
            )
        for start in range(0, len(records), _ROWS):
            stmt = insert(EntityAlias).values(
                [_alias_values(room_id, a) for a in records[start : start + _ROWS]]
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=["room_id", "alias"],
                set_={
                    k: stmt.excluded[k]
                    for k in ("canonical", "method", "score", "source_chunk_ids")
                },
            )
            await session.execute(stmt)
        await session.commit()

    # Vectors of the entities whose text changed (a new provenance alone leaves it as it was).
    regrouped = {new_root(n) for n in moved} | {old_root(n) for n in moved}
    old_members: dict[str, list[str]] = {}
    for alias, (canonical, _, _) in old_aliases.items():
        old_members.setdefault(canonical, []).append(alias)
    dirty_vectors = {
        e.name
        for e in upsert_entities
        if e.name not in stored_entities
        or _vector_item(e, sorted(members.get(e.name, ())))
        != _vector_item(stored_entities[e.name], sorted(old_members.get(e.name, ())))
    } | (regrouped & set(entities))
    vectors = await sync_vector_ids(
        platform,
        ENTITIES,
        room_id,
        [*dirty_vectors, *delete_entities],
        {n: _vector_item(entities[n], sorted(members.get(n, ()))) for n in sorted(dirty_vectors)},
        dense=searched_by_vector(platform),
    )
    for name in delete_entities:
        _count_type(entity_types, stored_entities[name].type, -1)
    for e in upsert_entities:
        if e.name in stored_entities:
            _count_type(entity_types, stored_entities[e.name].type, -1)
        _count_type(entity_types, e.type, 1)
    entity_types = dict(sorted(entity_types.items()))
    await _set_state(platform, room_id, speakers, False, entity_types)
    base.update(
        mentions_read=changed.mentions_read,
        names_folded=changed.names_folded,
        entities_written=len(upsert_entities),
        entities_deleted=len(delete_entities),
        relationships_written=len(upsert_rels),
        relationships_deleted=len(delete_pairs),
        aliases_written=len(records) + len(stale_aliases),
        summarized=summarized,
    )
    return await _summary(platform, room_id, entity_types, "delta", vectors, base)


def _count_type(types: dict[str, int], kind: str, delta: int) -> None:
    types[kind] = types.get(kind, 0) + delta
    if types[kind] <= 0:
        del types[kind]


async def _summary(
    platform: Platform,
    room_id: str,
    entity_types: dict[str, int],
    mode: str,
    vectors: VectorSync,
    fields: dict[str, Any],
) -> GraphBuild:
    counts = await platform.graph.counts(room_id, ["entities", "relationships"])
    async with platform.session() as session:
        dropped, aliases = (
            await session.execute(
                text(
                    "SELECT (SELECT coalesce(sum(dropped), 0) FROM graph_build_chunks "
                    "WHERE room_id = :room AND merged), "
                    "(SELECT count(*) FROM entity_aliases WHERE room_id = :room)"
                ),
                {"room": room_id},
            )
        ).one()
    vectors.total = counts["entities"]
    return GraphBuild(
        entities=counts["entities"],
        relationships=counts["relationships"],
        dropped_relationships=int(dropped),
        aliases=int(aliases),
        vectors=vectors,
        entity_types=entity_types,
        mode=mode,
        **fields,
    )
