"""Delta communities on Neo4j: GDS Leiden warm-started through ``seedProperty``, ids inherited
in Python after GDS returns, detection skipped when the graph did not change."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

import pytest

from knowledge.communities import community_id
from knowledge.graph import Entity, Relationship
from knowledge.indexing import detect_communities, write_reports
from knowledge.indexing.changes import log_graph_changes
from knowledge.platform import Platform
from knowledge.settings import Settings
from knowledge.stores.neo4j_graph import Neo4jGraphStore
from tests.knowledge.test_community_delta import CLUSTERS, SIZE, clustered_graph, partition

pytestmark = pytest.mark.neo4j


@pytest.fixture
async def store(neo4j_settings: Settings) -> AsyncIterator[Neo4jGraphStore]:
    store = Neo4jGraphStore.from_settings(neo4j_settings)
    yield store
    await store.close()


@pytest.fixture
async def room(store: Neo4jGraphStore, platform: Platform) -> AsyncIterator[str]:
    room_id = f"cn-{uuid.uuid4().hex[:12]}"
    yield room_id
    await store.wipe_room(room_id)
    await platform.vectors.wipe_room(room_id)


async def test_gds_warm_start_keeps_ids_and_skips_an_unchanged_graph(
    platform: Platform, store: Neo4jGraphStore, room: str
) -> None:
    neo4j = dataclasses.replace(platform, graph=store)
    await store.replace_graph(room, clustered_graph())
    first = await detect_communities(neo4j, room)
    before = await store.get_communities(room)
    assert first.total == CLUSTERS and not first.warm_start
    assert partition(before) == {
        (0, frozenset(f"c{c}-{i}" for i in range(SIZE))) for c in range(CLUSTERS)
    }
    assert all(c.id == community_id(room, c.level, c.entity_names) for c in before)
    assert (await write_reports(neo4j, room)).contexts_built == CLUSTERS

    assert (await detect_communities(neo4j, room)).skipped
    assert await store.get_communities(room) == before

    graph = clustered_graph()
    graph.entities.append(Entity("c2-new", "C2-NEW", "PERSON", "newcomer", ["chunk-new"], 1))
    graph.relationships += [
        Relationship("c2-0", "c2-new", 5.0, "greets"),
        Relationship("c2-1", "c2-new", 5.0, "greets"),
    ]
    for r in graph.relationships:  # past the drift limit: GDS Leiden runs, warm-started
        r.weight *= 2
    # Logged for the reports step as the graph step logs a change (every relationship moved).
    await log_graph_changes(platform, room, entity_names=[e.name for e in graph.entities])
    await store.replace_graph(room, graph)
    second = await detect_communities(neo4j, room)
    after = await store.get_communities(room)
    assert second.warm_start and second.mode == "leiden"
    assert second.kept == CLUSTERS
    assert {c.id for c in after} == {c.id for c in before}
    touched = next(c for c in after if "c2-new" in c.entity_names)
    assert len(touched.entity_names) == SIZE + 1
    # every weight doubled, so each crossed its power-of-two bucket: every report is rewritten
    reports = await write_reports(neo4j, room)
    assert reports.contexts_built == reports.regenerated == CLUSTERS


async def test_gds_seeded_with_its_own_optimum_returns_it(
    store: Neo4jGraphStore, room: str
) -> None:
    """Seeds Leiden cannot improve (GDS 2.13 fails on its dendrogram then): the seeded
    partition comes back."""
    await store.replace_graph(room, clustered_graph())
    cold = await store.detect_communities(room, seed=1, max_cluster_size=50)
    warm = await store.detect_communities(room, seed=1, max_cluster_size=50, previous=cold)
    assert partition(warm) == partition(cold)
