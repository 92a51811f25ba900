"""Purging a deleted room (``knowledge.purge.purge_room``) from every store.

Each test builds two rooms through the whole pipeline (offline extractor), deletes one room's row
as the API does (its relational rows cascade), purges it, and then reads every store directly:
every PostgreSQL table with a ``room_id`` column (found in ``information_schema``, so a new
table cannot be missed), every Neo4j node and relationship with that ``room_id``, every Qdrant
collection under a room filter. Nothing of the purged room may remain, and the room beside it
must be exactly as it was.
"""

from __future__ import annotations

import dataclasses
import socket
import uuid
from collections.abc import AsyncIterator

import pytest
from qdrant_client import models
from sqlalchemy import select, text

from dbschema.models import Message
from knowledge import artifacts, evaluation, rooms
from knowledge.errors import InvalidInputError
from knowledge.indexing import index_room, room_state
from knowledge.platform import Platform
from knowledge.purge import PurgeIncomplete, purge_room
from knowledge.sample import load_sample
from knowledge.settings import Settings
from knowledge.stores.neo4j_graph import Neo4jGraphStore
from knowledge.stores.qdrant_store import QdrantVectorStore
from tests.conftest import make_room

SPEECHES = [(s.speaker, s.text) for s in load_sample()]

#: Tables with a ``room_id`` that the purge leaves by design (see ``knowledge.purge``).
NOT_PURGED = {"event_outbox"}


async def build_room(platform: Platform, lines: list[tuple[str, str]], name: str) -> str:
    """A room with messages, an artifact and a golden question, indexed by every step."""
    room_id = await make_room(platform, lines, name)
    async with platform.session() as session:
        await artifacts.create_artifact(
            session,
            uuid.UUID(room_id),
            "Battle plan",
            "Marcius leads the assault on Corioli. Cominius holds the field with the army.",
            platform.settings.max_artifact_chars,
        )
        first = (
            await session.execute(
                select(Message.id).where(Message.room_id == uuid.UUID(room_id)).limit(1)
            )
        ).scalar_one()
        await evaluation.add_golden_question(session, room_id, "Who speaks first?", [first])
        await session.commit()
    await index_room(platform, room_id)
    state = await room_state(platform, room_id)
    assert state["chunks"] and state["artifact_chunks"] and state["entities"], state
    assert state["reports"] and state["evidence_vectors"], state
    return room_id


async def delete_room_row(platform: Platform, room_id: str) -> None:
    """What the API does; the derived data stays behind for the purge."""
    async with platform.session() as session:
        await rooms.delete_room(session, uuid.UUID(room_id))
        await session.commit()


async def postgres_rows(platform: Platform, room_id: str) -> dict[str, int]:
    """Rows of the room in every table (any schema) that has a ``room_id`` column, but for
    those the purge leaves by design."""
    async with platform.engine.connect() as conn:
        tables = (
            await conn.execute(
                text(
                    "SELECT table_schema, table_name FROM information_schema.columns "
                    "WHERE column_name = 'room_id' "
                    "AND table_schema NOT IN ('pg_catalog', 'information_schema') "
                    "ORDER BY 1, 2"
                )
            )
        ).all()
        counts = {}
        for schema, table in tables:
            if table in NOT_PURGED:
                continue
            # Derived tables keep the id as text, the product's as uuid.
            counted = await conn.execute(
                text(f'SELECT count(*) FROM "{schema}"."{table}" WHERE room_id::text = :room'),
                {"room": room_id},
            )
            counts[table] = int(counted.scalar_one())
    # The derived tables and the product's, at the least (the discovery itself must work).
    assert {"room_chunks", "vector_points", "messages", "golden_questions"} <= counts.keys()
    return counts


def removed_from(removed: dict[str, int], store: str) -> dict[str, int]:
    return {k.removeprefix(f"{store}:"): v for k, v in removed.items() if k.startswith(f"{store}:")}


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


def dead_port() -> int:
    """A loopback port nothing listens on (a store that cannot be reached)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_bad_room_id_is_refused(platform: Platform) -> None:
    for bad in ("", "a\x00b", "x" * 65):
        with pytest.raises(InvalidInputError):
            await purge_room(platform, bad)


async def test_purge_on_postgres_and_pgvector(platform: Platform) -> None:
    gone = await build_room(platform, SPEECHES[:60], "purged")
    kept = await build_room(platform, SPEECHES[60:100], "kept")
    await delete_room_row(platform, gone)
    left = await postgres_rows(platform, gone)
    # The product's rows went with the room row; every derived table still holds some.
    assert left["messages"] == left["artifacts"] == left["golden_questions"] == 0
    derived = {
        "room_chunks",
        "chunk_extractions",
        "graph_entities",
        "graph_relationships",
        "graph_communities",
        "graph_community_reports",
        "vector_points",
        "lexical_postings",
        "lexical_rooms",
        "lexical_terms",
        # the graph build's state (knowledge.indexing.graph)
        "graph_build_rooms",
        "graph_build_chunks",
        "graph_room_words",
        "graph_entity_mentions",
        "graph_relationship_mentions",
        "graph_merged_entities",
        "graph_merged_relationships",
    }
    assert derived <= nonzero(left).keys(), left
    kept_before = await postgres_rows(platform, kept)
    kept_state = await room_state(platform, kept)

    # A vector store that cannot be reached: the PostgreSQL tables are purged all the same,
    # and the failure is raised after them.
    unreachable = QdrantVectorStore(f"http://127.0.0.1:{dead_port()}", prefix="purge_")
    try:
        with pytest.raises(PurgeIncomplete) as failed:
            await purge_room(dataclasses.replace(platform, vectors=unreachable), gone)
    finally:
        await unreachable.close()
    assert list(failed.value.failures) == ["vector store (QdrantVectorStore)"]
    assert nonzero(removed_from(failed.value.removed, "postgres")) == nonzero(left)

    assert nonzero(await postgres_rows(platform, gone)) == {}
    assert await postgres_rows(platform, kept) == kept_before
    assert await room_state(platform, kept) == kept_state

    # Again (the retry after that failure): nothing left to remove, and it succeeds.
    again = await purge_room(platform, uuid.UUID(gone))
    assert again and set(again.values()) == {0}
    # entity_aliases and room_changes (the index steps' pending changes) may be empty already.
    assert {
        f"postgres:{t}" for t in derived | {"entity_aliases", "room_changes", "graph_changes"}
    } == again.keys()
    assert await postgres_rows(platform, kept) == kept_before


# --- Neo4j + Qdrant ------------------------------------------------------------------------------


@pytest.fixture
async def services_platform(
    platform: Platform, neo4j_settings: Settings, qdrant_store: QdrantVectorStore
) -> AsyncIterator[Platform]:
    """The conftest platform with the graph in Neo4j and the vectors in Qdrant (the server of
    the run, under a prefix of this test's own)."""
    graph = Neo4jGraphStore.from_settings(neo4j_settings)
    await graph.ensure_schema()
    try:
        yield dataclasses.replace(platform, graph=graph, vectors=qdrant_store)
    finally:
        await graph.close()


async def neo4j_items(store: Neo4jGraphStore, room_id: str) -> dict[str, int]:
    """Nodes per label and relationships per type with that ``room_id``, any label or type."""
    driver = await store.driver()
    nodes, _, _ = await driver.execute_query(
        "MATCH (n {room_id: $room}) UNWIND labels(n) AS label RETURN label, count(*) AS n",
        room=room_id,
        database_=store.database,
    )
    relationships, _, _ = await driver.execute_query(
        "MATCH ()-[r {room_id: $room}]->() RETURN type(r) AS label, count(*) AS n",
        room=room_id,
        database_=store.database,
    )
    return {record["label"]: record["n"] for record in [*nodes, *relationships]}


async def qdrant_points(store: QdrantVectorStore, room_id: str) -> dict[str, int]:
    """The room's points in every collection the client sees (not only the store's prefix)."""
    room = models.Filter(
        must=[models.FieldCondition(key="room_id", match=models.MatchValue(value=room_id))]
    )
    counts = {}
    for collection in (await store.client.get_collections()).collections:
        counted = await store.client.count(collection.name, count_filter=room, exact=True)
        counts[collection.name] = counted.count
    return counts


@pytest.mark.neo4j
async def test_purge_on_neo4j_and_qdrant(services_platform: Platform) -> None:
    platform = services_platform
    assert isinstance(platform.graph, Neo4jGraphStore)
    assert isinstance(platform.vectors, QdrantVectorStore)
    graph, vectors = platform.graph, platform.vectors
    gone = await build_room(platform, SPEECHES[100:150], "purged")
    kept = await build_room(platform, SPEECHES[150:180], "kept")
    await delete_room_row(platform, gone)

    left_tables = nonzero(await postgres_rows(platform, gone))
    # The graph and the vectors went to Neo4j and Qdrant: PostgreSQL holds the chunks only.
    assert {"room_chunks", "chunk_extractions"} <= left_tables.keys()
    assert not {"graph_entities", "vector_points"} & left_tables.keys()
    left_graph = await neo4j_items(graph, gone)
    assert {"Entity", "RELATED", "Community", "Report"} <= left_graph.keys(), left_graph
    left_points = nonzero(await qdrant_points(vectors, gone))
    assert {vectors.name(c) for c in ("chunks", "entities", "communities", "evidence")} <= (
        left_points.keys()
    )
    kept_before = (
        await postgres_rows(platform, kept),
        await neo4j_items(graph, kept),
        await qdrant_points(vectors, kept),
    )

    # Qdrant cannot be reached: PostgreSQL and Neo4j are purged, Qdrant keeps the points.
    unreachable = QdrantVectorStore(f"http://127.0.0.1:{dead_port()}", prefix=vectors.prefix)
    try:
        with pytest.raises(PurgeIncomplete, match="run the purge again"):
            await purge_room(dataclasses.replace(platform, vectors=unreachable), gone)
    finally:
        await unreachable.close()
    assert nonzero(await postgres_rows(platform, gone)) == {}
    assert await neo4j_items(graph, gone) == {}
    assert nonzero(await qdrant_points(vectors, gone)) == left_points

    # The retry finishes the job; what it reports removed is what was there.
    removed = await purge_room(platform, gone)
    assert nonzero(removed_from(removed, "qdrant")) == left_points
    assert nonzero(removed_from(removed, "neo4j")) == {}
    assert nonzero(removed_from(removed, "postgres")) == {}
    assert nonzero(await postgres_rows(platform, gone)) == {}
    assert await neo4j_items(graph, gone) == {}
    assert nonzero(await qdrant_points(vectors, gone)) == {}

    # Once more: nothing left, and it succeeds.
    again = await purge_room(platform, gone)
    assert again.keys() == removed.keys() and set(again.values()) == {0}

    assert (
        await postgres_rows(platform, kept),
        await neo4j_items(graph, kept),
        await qdrant_points(vectors, kept),
    ) == kept_before


@pytest.mark.neo4j
async def test_purge_counts_what_each_store_held(services_platform: Platform) -> None:
    """One uninterrupted purge: the counts it returns are the rows, nodes and points that
    were there."""
    platform = services_platform
    assert isinstance(platform.graph, Neo4jGraphStore)
    assert isinstance(platform.vectors, QdrantVectorStore)
    gone = await build_room(platform, SPEECHES[180:220], "purged")
    await delete_room_row(platform, gone)
    tables = nonzero(await postgres_rows(platform, gone))
    items = await neo4j_items(platform.graph, gone)
    points = nonzero(await qdrant_points(platform.vectors, gone))

    removed = await purge_room(platform, gone)
    assert nonzero(removed_from(removed, "postgres")) == tables
    assert nonzero(removed_from(removed, "neo4j")) == items
    assert nonzero(removed_from(removed, "qdrant")) == points
    assert nonzero(await postgres_rows(platform, gone)) == {}
    assert await neo4j_items(platform.graph, gone) == {}
    assert nonzero(await qdrant_points(platform.vectors, gone)) == {}
