"""Leiden cross-check: GDS Leiden in Neo4j and the Python Leiden (graspologic-native) reach the
same modularity, within 0.02, on two graphs that ship with networkx: Zachary's karate club
(unweighted) and the Les Misérables co-occurrence graph (weighted by co-occurrences)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import networkx as nx
import pytest

from knowledge.communities import community_id, hierarchical_communities, leiden_partition
from knowledge.graph import Entity, Relationship, RoomGraph
from knowledge.settings import Settings
from knowledge.stores.neo4j_graph import Neo4jGraphStore

pytestmark = pytest.mark.neo4j

SEED = 42


def karate() -> nx.Graph:
    graph = nx.Graph()
    graph.add_edges_from(nx.karate_club_graph().edges, weight=1.0)
    return graph


def les_miserables() -> nx.Graph:
    return nx.les_miserables_graph()


def room_graph(graph: nx.Graph) -> RoomGraph:
    names = {node: str(node).strip().lower() for node in graph.nodes}
    entities = [Entity(name=names[n], display_name=str(n), type="CHARACTER") for n in graph.nodes]
    relationships = []
    for a, b, data in graph.edges(data=True):
        source, target = sorted((names[a], names[b]))
        relationships.append(
            Relationship(source=source, target=target, weight=float(data.get("weight", 1.0)))
        )
    return RoomGraph(entities=entities, relationships=relationships)


def modularity(graph: RoomGraph, partition: dict[str, int]) -> float:
    g = nx.Graph()
    g.add_nodes_from(e.name for e in graph.entities)
    g.add_weighted_edges_from((r.source, r.target, r.weight) for r in graph.relationships)
    groups: dict[int, set[str]] = {}
    for name, community in partition.items():
        groups.setdefault(community, set()).add(name)
    return float(nx.community.modularity(g, groups.values(), weight="weight"))


@pytest.fixture
async def store(neo4j_settings: Settings) -> AsyncIterator[Neo4jGraphStore]:
    store = Neo4jGraphStore.from_settings(neo4j_settings)
    yield store
    await store.close()


@pytest.mark.parametrize(
    ("make_graph", "at_least"),
    [pytest.param(karate, 0.41, id="karate"), pytest.param(les_miserables, 0.5, id="lesmis")],
)
async def test_gds_and_python_leiden_reach_the_same_modularity(
    store: Neo4jGraphStore, make_graph: Callable[[], nx.Graph], at_least: float
) -> None:
    graph = room_graph(make_graph())
    room = f"leiden-{uuid.uuid4().hex[:12]}"
    await store.replace_graph(room, graph)
    try:
        gds = await store.leiden_partition(room, seed=SEED)
        python = leiden_partition(
            [(r.source, r.target, r.weight) for r in graph.relationships], SEED
        )
        assert set(gds) == set(python) == {e.name for e in graph.entities}
        q_gds, q_python = modularity(graph, gds), modularity(graph, python)
        assert q_gds >= at_least and q_python >= at_least, (q_gds, q_python)
        assert abs(q_gds - q_python) <= 0.02, (q_gds, q_python)
        # Seeded and single-threaded: the same partition again.
        assert await store.leiden_partition(room, seed=SEED) == gds
    finally:
        await store.wipe_room(room)


async def test_gds_hierarchy_has_the_shape_of_the_python_one(store: Neo4jGraphStore) -> None:
    graph = room_graph(les_miserables())
    graph.entities.append(Entity(name="nobody", display_name="Nobody", type="CHARACTER"))
    room = f"leiden-{uuid.uuid4().hex[:12]}"
    await store.replace_graph(room, graph)
    try:
        names = sorted(e.name for e in graph.entities)
        found = await store.detect_communities(room, seed=SEED, max_cluster_size=12)
        python = hierarchical_communities(
            room,
            names,
            [(r.source, r.target, r.weight) for r in graph.relationships],
            seed=SEED,
            max_cluster_size=12,
        )
        for communities in (found, python):
            top = sorted(n for c in communities if c.level == 0 for n in c.entity_names)
            assert top == names  # every entity exactly once at level 0
            # The isolated entity is the same singleton community in both.
            assert community_id(room, 0, ["nobody"]) in {c.id for c in communities}
            assert len({c.level for c in communities}) >= 2
            by_id = {c.id: c for c in communities}
            for c in communities:
                assert c.id == community_id(room, c.level, c.entity_names)
                if c.parent_id is not None:
                    parent = by_id[c.parent_id]
                    assert parent.level == c.level - 1
                    assert set(c.entity_names) < set(parent.entity_names)
                    assert len(parent.entity_names) >= 12
            # Sorted like the Python communities: level, then larger first.
            assert communities == sorted(
                communities, key=lambda c: (c.level, -len(c.entity_names), c.entity_names)
            )
        assert await store.detect_communities(room, seed=SEED, max_cluster_size=12) == found
    finally:
        await store.wipe_room(room)
