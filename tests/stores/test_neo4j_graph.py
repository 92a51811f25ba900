"""Neo4j-specific behaviour of the graph store, beyond the shared contract: the schema and its
constraints, neighbourhood parity with the PostgreSQL store on random graphs, batched writes of
big rooms, the visualization subgraph and the shared driver."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator

import pytest
from neo4j.exceptions import ConstraintError

from knowledge.graph import Entity, Relationship, RoomGraph
from knowledge.platform import Platform, make_stores, open_platform
from knowledge.settings import Settings
from knowledge.stores import neo4j_graph
from knowledge.stores.base import CommunityDetector
from knowledge.stores.neo4j_graph import Neo4jGraphStore, schema_statements
from knowledge.stores.postgres_graph import PostgresGraphStore

pytestmark = pytest.mark.neo4j


@pytest.fixture
async def store(neo4j_settings: Settings) -> AsyncIterator[Neo4jGraphStore]:
    store = Neo4jGraphStore.from_settings(neo4j_settings)
    await store.ensure_schema()
    yield store
    await store.close()


def new_room() -> str:
    return f"room-{uuid.uuid4().hex[:12]}"


def random_graph(rng: random.Random, nodes: int, edges: int) -> RoomGraph:
    names = [f"e{i:04d}" for i in range(nodes)]
    edges = min(edges, nodes * (nodes - 1) // 2)
    pairs: set[tuple[str, str]] = set()
    while len(pairs) < edges:
        a, b = rng.sample(names, 2)
        pairs.add((min(a, b), max(a, b)))
    # Distinct weights: no ties, so "stronger ties first" orders everything.
    weights = rng.sample(range(1, 10 * edges + 10), edges)
    return RoomGraph(
        entities=[
            Entity(name=n, display_name=n.upper(), type="T", mentions=rng.randint(0, 20))
            for n in names
        ],
        relationships=[
            Relationship(source=a, target=b, weight=float(w), source_chunk_ids=["k"])
            for (a, b), w in zip(sorted(pairs), weights, strict=True)
        ],
    )


async def test_schema_file_is_applied_and_enforced(store: Neo4jGraphStore) -> None:
    statements = schema_statements()
    assert len(statements) == 7
    assert all("IF NOT EXISTS" in s for s in statements)
    driver = await store.driver()
    records, _, _ = await driver.execute_query(
        "SHOW CONSTRAINTS YIELD name, type, labelsOrTypes, properties RETURN *",
        database_=store.database,
    )
    constraints = {r["name"]: (r["type"], r["labelsOrTypes"], r["properties"]) for r in records}
    assert constraints["entity_room_name"] == ("UNIQUENESS", ["Entity"], ["room_id", "name"])
    assert constraints["community_room_id"] == ("UNIQUENESS", ["Community"], ["room_id", "id"])
    assert constraints["report_room_community"][2] == ["room_id", "community_id"]
    records, _, _ = await driver.execute_query(
        "SHOW INDEXES YIELD name, state RETURN name, state", database_=store.database
    )
    states = {r["name"]: r["state"] for r in records}
    for index in ("entity_room", "community_room", "report_room", "related_room"):
        assert states[index] == "ONLINE"
    # Applying it again changes nothing.
    await store._apply_schema(driver)

    room = new_room()
    create = "CREATE (:Entity {room_id: $room, name: 'ann', display_name: 'Ann', type: 'P'})"
    await driver.execute_query(create, room=room, database_=store.database)
    with pytest.raises(ConstraintError):
        await driver.execute_query(create, room=room, database_=store.database)
    # The same name in another room is another entity.
    await driver.execute_query(create, room=new_room(), database_=store.database)
    assert await store.entity_names(room) == ["ann"]


async def test_neighbourhood_matches_the_postgres_store(
    store: Neo4jGraphStore, platform: Platform
) -> None:
    postgres = PostgresGraphStore(platform.engine)
    rng = random.Random(7)
    for _ in range(8):
        graph = random_graph(rng, rng.randint(6, 50), rng.randint(5, 110))
        room = new_room()
        await store.replace_graph(room, graph)
        await postgres.replace_graph(room, graph)
        names = [e.name for e in graph.entities]
        for _ in range(15):
            seeds = rng.sample(names, rng.randint(1, 3)) + (
                ["nobody"] if rng.random() < 0.2 else []
            )
            hops, limit = rng.randint(0, 4), rng.randint(1, 30)
            expected = await postgres.neighbourhood(room, seeds, hops, limit)
            got = await store.neighbourhood(room, seeds, hops, limit)
            assert [e.name for e in got.entities] == [e.name for e in expected.entities]
            assert got.entities == expected.entities
            assert sorted(r.pair for r in got.relationships) == sorted(
                r.pair for r in expected.relationships
            )
            assert [r.weight for r in got.relationships] == [
                r.weight for r in expected.relationships
            ]
        await store.wipe_room(room)
        await postgres.wipe_room(room)


async def test_big_room_writes_in_batches_and_stays_exact(
    store: Neo4jGraphStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(neo4j_graph, "BATCH", 1_000)
    monkeypatch.setattr(neo4j_graph, "WIPE_BATCH", 1_000)
    graph = random_graph(random.Random(3), 5_000, 8_000)
    room = new_room()
    await store.replace_graph(room, graph)
    counts = {"entities": 5_000, "relationships": 8_000, "communities": 0, "reports": 0}
    assert await store.counts(room) == counts
    await store.replace_graph(room, graph)
    assert await store.counts(room) == counts
    # Half of it: the other half and every relationship touching it go.
    kept = {e.name for e in graph.entities[::2]}
    half = RoomGraph(
        entities=[e for e in graph.entities if e.name in kept],
        relationships=[
            r for r in graph.relationships[:6_000] if r.source in kept and r.target in kept
        ],
    )
    await store.replace_graph(room, half)
    stored = await store.get_graph(room)
    assert stored.entities == sorted(half.entities, key=lambda e: e.name)
    assert stored.relationships == sorted(half.relationships, key=lambda r: r.pair)
    await store.wipe_room(room)
    assert await store.counts(room) == dict.fromkeys(counts, 0)


async def test_a_relationship_needs_both_entities(store: Neo4jGraphStore) -> None:
    room = new_room()
    graph = RoomGraph(
        entities=[Entity(name="ann", display_name="Ann", type="P")],
        relationships=[Relationship(source="ann", target="bob", weight=1.0)],
    )
    await store.replace_graph(room, graph)
    assert await store.counts(room) == {
        "entities": 1,
        "relationships": 0,
        "communities": 0,
        "reports": 0,
    }
    await store.wipe_room(room)


async def test_visual_subgraph_is_the_most_mentioned_entities(store: Neo4jGraphStore) -> None:
    graph = random_graph(random.Random(11), 60, 150)
    room = new_room()
    await store.replace_graph(room, graph)
    sub = await store.visual_subgraph(room, 15)
    chosen = sorted(graph.entities, key=lambda e: (-e.mentions, e.name))[:15]
    assert sub.entities == chosen
    names = {e.name for e in chosen}
    among = [r for r in graph.relationships if r.source in names and r.target in names]
    assert sub.relationships == sorted(among, key=lambda r: (-r.weight, r.pair))
    await store.wipe_room(room)


async def test_stores_of_one_event_loop_share_one_driver(neo4j_settings: Settings) -> None:
    first, second = (
        Neo4jGraphStore.from_settings(neo4j_settings),
        Neo4jGraphStore.from_settings(neo4j_settings),
    )
    driver = await first.driver()
    assert await second.driver() is driver
    await first.close()
    assert await second.entity_names(new_room()) == []  # still open for the other store
    await second.close()
    third = Neo4jGraphStore.from_settings(neo4j_settings)
    assert await third.driver() is not driver  # the last close closed it
    await third.close()
    live = [key for key, shared in neo4j_graph._DRIVERS.items() if shared.users > 0]
    assert not [key for key in live if key[0] == neo4j_settings.neo4j_uri]


async def test_platform_uses_neo4j_when_configured(
    neo4j_settings: Settings, platform: Platform
) -> None:
    graph, _ = make_stores(
        platform.settings.model_copy(update={"neo4j_uri": None}), platform.engine
    )
    assert isinstance(graph, PostgresGraphStore)
    assert not isinstance(graph, CommunityDetector)
    async with open_platform(neo4j_settings) as configured:
        assert isinstance(configured.graph, Neo4jGraphStore)
        assert isinstance(configured.graph, CommunityDetector)
        assert configured.graph.database == neo4j_settings.neo4j_database
        assert await configured.graph.counts(new_room()) == {
            "entities": 0,
            "relationships": 0,
            "communities": 0,
            "reports": 0,
        }


async def test_rewrites_touch_only_what_changed(
    store: Neo4jGraphStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph = random_graph(random.Random(5), 40, 80)
    room = new_room()
    await store.replace_graph(room, graph)
    sizes: list[int] = []
    real = neo4j_graph._batches

    def spy(rows, size=neo4j_graph.BATCH):  # type: ignore[no-untyped-def]
        sizes.append(len(rows))
        return real(rows, size)

    monkeypatch.setattr(neo4j_graph, "_batches", spy)
    # Stale relationships, stale entities, new entities, changed entities, relationships.
    await store.replace_graph(room, graph)
    assert sizes == [0, 0, 0, 0, 0]  # the fingerprints match: nothing written

    changed = RoomGraph(
        entities=[
            Entity(**{**vars(e), "description": "changed"}) if e.name == "e0003" else e
            for e in graph.entities
        ],
        relationships=[
            Relationship(r.source, r.target, r.weight + 0.5, r.description, r.source_chunk_ids)
            if i == 0
            else r
            for i, r in enumerate(graph.relationships)
        ],
    )
    sizes.clear()
    await store.replace_graph(room, changed)
    assert sizes == [0, 0, 0, 1, 1]
    stored = await store.get_graph(room)
    assert stored.entities == sorted(changed.entities, key=lambda e: e.name)
    assert stored.relationships == sorted(changed.relationships, key=lambda r: r.pair)
    await store.wipe_room(room)


async def test_a_concurrent_duplicate_falls_back_to_merge(
    store: Neo4jGraphStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    room = new_room()
    graph = random_graph(random.Random(9), 10, 12)
    driver = await store.driver()
    real = neo4j_graph._tx_rows
    raced: list[bool] = []

    async def racing(runner, query, **params):  # type: ignore[no-untyped-def]
        rows = await real(runner, query, **params)
        if query == neo4j_graph.STORED_KEYS and not raced:
            raced.append(True)
            # Another writer creates one of the entities after this transaction read the room.
            await driver.execute_query(
                "CREATE (:Entity {room_id: $room, name: 'e0004', display_name: 'x', type: 'X'})",
                room=room,
                database_=store.database,
            )
        return rows

    monkeypatch.setattr(neo4j_graph, "_tx_rows", racing)
    await store.replace_graph(room, graph)
    assert raced
    stored = await store.get_graph(room)
    assert stored.entities == sorted(graph.entities, key=lambda e: e.name)
    assert (await store.counts(room))["entities"] == 10
    await store.wipe_room(room)


async def test_gds_communities_do_not_depend_on_storage_order(store: Neo4jGraphStore) -> None:
    rng = random.Random(5)
    for _ in range(4):
        graph = random_graph(rng, 40, 60)
        room = new_room()
        await store.replace_graph(room, graph)
        first = await store.detect_communities(room, seed=42, max_cluster_size=12)
        for _ in range(2):
            # Rewritten in another order, the room gets other storage ids and edge orders.
            await store.wipe_room(room)
            entities, relationships = list(graph.entities), list(graph.relationships)
            rng.shuffle(entities)
            rng.shuffle(relationships)
            await store.replace_graph(room, RoomGraph(entities, relationships))
            assert await store.detect_communities(room, seed=42, max_cluster_size=12) == first
        await store.wipe_room(room)
