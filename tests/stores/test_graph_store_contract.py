"""One contract for every GraphStore: same inputs, same expected results.

Implementations are the params of the ``graph_store`` fixture (with ids): PostgreSQL tables on the
real embedded server, and Neo4j (APOC + GDS) on the server `make test` starts (``neo4j`` marker).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from knowledge.graph import Community, CommunityReport, Entity, Relationship, RoomGraph
from knowledge.platform import Platform
from knowledge.stores.base import GraphStore
from knowledge.stores.neo4j_graph import Neo4jGraphStore
from knowledge.stores.postgres_graph import PostgresGraphStore


@pytest.fixture(
    params=[
        pytest.param("postgres", id="postgres"),
        pytest.param("neo4j", id="neo4j", marks=pytest.mark.neo4j),
    ]
)
async def graph_store(
    request: pytest.FixtureRequest, platform: Platform
) -> AsyncIterator[GraphStore]:
    if request.param == "postgres":
        store: GraphStore = PostgresGraphStore(platform.engine)
    elif request.param == "neo4j":
        store = Neo4jGraphStore.from_settings(request.getfixturevalue("neo4j_settings"))
    else:  # pragma: no cover - every param needs a branch
        raise AssertionError(request.param)
    await store.ensure_schema()
    try:
        yield store
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            await close()


def new_room() -> str:
    return f"room-{uuid.uuid4().hex[:12]}"


def entity(name: str, kind: str = "PERSON", chunks: tuple[str, ...] = ("k1",)) -> Entity:
    return Entity(
        name=name,
        display_name=name.title(),
        type=kind,
        description=f"{name.title()} of the play.",
        source_chunk_ids=list(chunks),
        mentions=len(name),
    )


def rel(source: str, target: str, weight: float, chunks: tuple[str, ...] = ("k1",)) -> Relationship:
    return Relationship(
        source=source,
        target=target,
        weight=weight,
        description=f"{source} and {target}",
        source_chunk_ids=list(chunks),
    )


# A chain a - b - c - d - e plus a - f; a - b is the strongest tie of a.
#
#   f --1-- a --3-- b --2-- c --2-- d --2-- e
def sample_graph() -> RoomGraph:
    return RoomGraph(
        entities=[
            entity("alpha", chunks=("k1", "k2")),
            entity("beta"),
            entity("gamma", "PLACE"),
            entity("delta"),
            entity("epsilon", "ORGANIZATION", chunks=("k3",)),
            entity("phi", "PLACE"),
        ],
        relationships=[
            rel("alpha", "beta", 3.0, ("k1", "k2")),
            rel("beta", "gamma", 2.0),
            rel("delta", "gamma", 2.0),
            rel("delta", "epsilon", 2.0),
            rel("alpha", "phi", 1.0),
        ],
    )


def canonical(graph: RoomGraph) -> tuple[list[Entity], list[Relationship]]:
    return (
        sorted(graph.entities, key=lambda e: e.name),
        sorted(graph.relationships, key=lambda r: r.pair),
    )


def names(graph: RoomGraph) -> set[str]:
    return {e.name for e in graph.entities}


def pairs(graph: RoomGraph) -> set[tuple[str, str]]:
    return {r.pair for r in graph.relationships}


def sample_communities() -> list[Community]:
    return [
        Community(id="c0-a", level=0, parent_id=None, entity_names=["alpha", "beta", "phi"]),
        Community(id="c0-b", level=0, parent_id=None, entity_names=["delta", "epsilon", "gamma"]),
        Community(id="c1-a", level=1, parent_id="c0-a", entity_names=["alpha", "beta"]),
        Community(id="c1-b", level=1, parent_id="c0-a", entity_names=["phi"]),
    ]


def report(community_id: str, rank: float, summary: str = "A summary.") -> CommunityReport:
    return CommunityReport(
        community_id=community_id,
        level=0 if community_id.startswith("c0") else 1,
        title=f"Report {community_id}",
        summary=summary,
        findings=[{"summary": "finding", "explanation": "because"}],
        rank=rank,
        content_hash=f"hash-{community_id}",
        source_chunk_ids=["k1", "k2"],
    )


@pytest.fixture
async def room(graph_store: GraphStore) -> str:
    room_id = new_room()
    await graph_store.replace_graph(room_id, sample_graph())
    return room_id


# --- entities and relationships -----------------------------------------------------------------


async def test_replace_graph_round_trip(graph_store: GraphStore, room: str) -> None:
    stored = await graph_store.get_graph(room)
    assert canonical(stored) == canonical(sample_graph())
    # Stored order: entities by name, relationships by (source, target).
    assert [e.name for e in stored.entities] == sorted(names(stored))
    assert [r.pair for r in stored.relationships] == sorted(pairs(stored))


async def test_replace_graph_twice_gives_the_same_state(graph_store: GraphStore, room: str) -> None:
    before = await graph_store.get_graph(room)
    counts = await graph_store.counts(room)
    await graph_store.replace_graph(room, sample_graph())
    assert canonical(await graph_store.get_graph(room)) == canonical(before)
    assert await graph_store.counts(room) == counts


async def test_replace_graph_makes_the_room_exactly_the_new_graph(
    graph_store: GraphStore, room: str
) -> None:
    smaller = RoomGraph(
        entities=[entity("alpha", chunks=("k9",)), entity("omega")],
        relationships=[rel("alpha", "omega", 5.0, ("k9",))],
    )
    await graph_store.replace_graph(room, smaller)
    assert canonical(await graph_store.get_graph(room)) == canonical(smaller)
    assert await graph_store.entity_names(room) == ["alpha", "omega"]
    await graph_store.replace_graph(room, RoomGraph(entities=[], relationships=[]))
    assert await graph_store.get_graph(room) == RoomGraph(entities=[], relationships=[])


async def test_entity_names_matching_finds_names_by_whole_name_or_word(
    graph_store: GraphStore, room: str
) -> None:
    """What a question's words can name: exact names, and names with one of the words as a
    whole word ("palmyra" names "zenobia of palmyra", not "palmyrans"); no other room's."""
    many = RoomGraph(
        entities=[
            entity(n)
            for n in ("zenobia of palmyra", "palmyrans", "queen zenobia", "rome", "new rome")
        ],
        relationships=[],
    )
    await graph_store.replace_graph(room, many)
    other = f"{room}-other"
    await graph_store.replace_graph(other, RoomGraph(entities=[entity("rome")], relationships=[]))
    match = graph_store.entity_names_matching
    assert await match(room, ["rome", "nowhere", "zenobia"]) == ["rome"]
    assert await match(room, [], ["palmyra"]) == ["zenobia of palmyra"]
    assert await match(room, ["palmyrans"], ["zenobia", "rome"]) == [
        "new rome",
        "palmyrans",
        "queen zenobia",
        "rome",
        "zenobia of palmyra",
    ]
    assert await match(room, [], []) == []
    assert await match(f"{room}-empty", ["rome"], ["rome"]) == []
    assert await match(other, ["rome"], ["new"]) == ["rome"]


async def test_get_entities_and_names(graph_store: GraphStore, room: str) -> None:
    assert await graph_store.entity_names(room) == sorted(names(sample_graph()))
    assert await graph_store.entity_labels(room) == sorted(
        (e.name, e.display_name) for e in sample_graph().entities
    )
    assert await graph_store.entity_labels(f"{room}-empty") == []
    found = await graph_store.get_entities(room, ["gamma", "alpha", "nobody"])
    assert found == [entity("alpha", chunks=("k1", "k2")), entity("gamma", "PLACE")]
    assert await graph_store.get_entities(room, []) == []
    # Mentions alone (no description or provenance), of the names that are entities.
    assert await graph_store.entity_mentions(room, {"gamma", "alpha", "nobody"}) == {
        "alpha": len("alpha"),
        "gamma": len("gamma"),
    }
    assert await graph_store.entity_mentions(room, set()) == {}
    assert await graph_store.entity_mentions(f"{room}-empty", {"alpha"}) == {}


async def test_a_written_graph_has_no_dangling_relationships(
    graph_store: GraphStore, room: str
) -> None:
    assert await graph_store.dangling_relationships(room) == []
    assert await graph_store.dangling_relationships(f"{room}-empty") == []


async def test_topology_is_the_graph_without_descriptions(
    graph_store: GraphStore, room: str
) -> None:
    graph = sample_graph()
    nodes, edges = await graph_store.topology(room)
    assert nodes == sorted(names(graph))
    assert sorted(edges) == sorted((r.source, r.target, r.weight) for r in graph.relationships)
    assert await graph_store.topology(f"{room}-empty") == ([], [])


async def test_topology_digest_is_the_graph_s_and_moves_with_every_change(
    graph_store: GraphStore, room: str
) -> None:
    graph = sample_graph()
    digest = await graph_store.topology_digest(room)
    assert digest.nodes == sorted(names(graph))
    assert digest.total_weight == pytest.approx(sum(r.weight for r in graph.relationships))
    # The same graph, written in another order into another room: the same digest.
    shuffled = new_room()
    await graph_store.replace_graph(
        shuffled,
        RoomGraph(list(reversed(graph.entities)), list(reversed(graph.relationships))),
    )
    assert await graph_store.topology_digest(shuffled) == digest
    # Descriptions and provenance are not topology.
    described = new_room()
    await graph_store.replace_graph(
        described,
        RoomGraph(
            [dataclasses.replace(e, description="other", mentions=1) for e in graph.entities],
            [dataclasses.replace(r, source_chunk_ids=["k9"]) for r in graph.relationships],
        ),
    )
    assert (await graph_store.topology_digest(described)).digest == digest.digest

    async def digest_of(changed: RoomGraph) -> str:
        other = new_room()
        await graph_store.replace_graph(other, changed)
        return (await graph_store.topology_digest(other)).digest

    reweighed = [rel(r.source, r.target, r.weight + 1e-9) for r in graph.relationships[:1]]
    changes = {
        "a weight": RoomGraph(graph.entities, reweighed + graph.relationships[1:]),
        "an edge gone": RoomGraph(graph.entities, graph.relationships[1:]),
        "a lone entity": RoomGraph([*graph.entities, entity("omega")], graph.relationships),
        "an edge moved": RoomGraph(
            graph.entities, [*graph.relationships[:-1], rel("epsilon", "phi", 1.0)]
        ),
    }
    digests = {what: await digest_of(changed) for what, changed in changes.items()}
    assert all(d != digest.digest for d in digests.values()), digests
    assert len(set(digests.values())) == len(digests)
    empty = await graph_store.topology_digest(f"{room}-empty")
    assert (empty.nodes, empty.total_weight) == ([], 0.0) and empty.digest != digest.digest


async def test_relationships_touching_are_the_edges_of_those_entities(
    graph_store: GraphStore, room: str
) -> None:
    edges = await graph_store.relationships_touching(room, {"alpha", "gamma"})
    assert sorted(edges) == sorted(
        [
            ("alpha", "beta", 3.0),
            ("beta", "gamma", 2.0),
            ("delta", "gamma", 2.0),
            ("alpha", "phi", 1.0),
        ]
    )
    assert await graph_store.relationships_touching(room, {"phi"}) == [("alpha", "phi", 1.0)]
    assert await graph_store.relationships_touching(room, {"nobody"}) == []
    assert await graph_store.relationships_touching(room, set()) == []
    assert await graph_store.relationships_touching(f"{room}-empty", {"alpha"}) == []


async def test_graph_without_provenance_is_the_graph_minus_chunk_ids(
    graph_store: GraphStore, room: str
) -> None:
    def strip(graph: RoomGraph) -> RoomGraph:
        return RoomGraph(
            entities=[dataclasses.replace(e, source_chunk_ids=[]) for e in graph.entities],
            relationships=[
                dataclasses.replace(r, source_chunk_ids=[]) for r in graph.relationships
            ],
        )

    light = await graph_store.get_graph(room, provenance=False)
    assert strip(light) == strip(await graph_store.get_graph(room))


async def test_neighbourhood_hops(graph_store: GraphStore, room: str) -> None:
    zero = await graph_store.neighbourhood(room, ["alpha"], hops=0, limit=10)
    assert names(zero) == {"alpha"}
    assert zero.relationships == []

    one = await graph_store.neighbourhood(room, ["alpha"], hops=1, limit=10)
    assert names(one) == {"alpha", "beta", "phi"}
    # Only the edges among the entities found.
    assert pairs(one) == {("alpha", "beta"), ("alpha", "phi")}
    assert one.entities[0].name == "alpha"  # seeds first

    two = await graph_store.neighbourhood(room, ["alpha"], hops=2, limit=10)
    assert names(two) == {"alpha", "beta", "phi", "gamma"}
    assert pairs(two) == {("alpha", "beta"), ("alpha", "phi"), ("beta", "gamma")}

    everything = await graph_store.neighbourhood(room, ["alpha"], hops=10, limit=100)
    assert canonical(everything) == canonical(sample_graph())

    # Several seeds; an unknown seed finds nothing and breaks nothing.
    both = await graph_store.neighbourhood(room, ["epsilon", "phi", "nobody"], hops=1, limit=10)
    assert names(both) == {"epsilon", "delta", "phi", "alpha"}
    assert pairs(both) == {("delta", "epsilon"), ("alpha", "phi")}
    assert names(await graph_store.neighbourhood(room, ["nobody"], hops=2, limit=10)) == set()


async def test_neighbourhood_limit(graph_store: GraphStore, room: str) -> None:
    for limit in (1, 2, 3, 4):
        sub = await graph_store.neighbourhood(room, ["alpha"], hops=5, limit=limit)
        assert len(sub.entities) == limit
        assert "alpha" in names(sub)
        assert pairs(sub) <= pairs(sample_graph())
        assert all(r.source in names(sub) and r.target in names(sub) for r in sub.relationships)
    # When the limit cuts, the stronger tie wins: alpha - beta (3) over alpha - phi (1).
    assert names(await graph_store.neighbourhood(room, ["alpha"], hops=1, limit=2)) == {
        "alpha",
        "beta",
    }
    # The limit bounds the seeds too.
    sub = await graph_store.neighbourhood(room, ["alpha", "beta", "gamma"], hops=1, limit=2)
    assert names(sub) == {"alpha", "beta"}


async def test_neighbourhood_without_provenance_is_the_same_minus_chunk_ids(
    graph_store: GraphStore, room: str
) -> None:
    full = await graph_store.neighbourhood(room, ["alpha", "delta"], hops=1, limit=10)
    bare = await graph_store.neighbourhood(
        room, ["alpha", "delta"], hops=1, limit=10, provenance=False
    )
    assert [e.name for e in bare.entities] == [e.name for e in full.entities]
    assert bare.entities == [replace(e, source_chunk_ids=[]) for e in full.entities]
    assert canonical(bare)[1] == [replace(r, source_chunk_ids=[]) for r in canonical(full)[1]]


async def test_top_source_chunks_sum_the_weights_of_the_entities_they_support(
    graph_store: GraphStore,
) -> None:
    room = new_room()
    await graph_store.replace_graph(
        room,
        RoomGraph(
            entities=[
                entity("alpha", chunks=("k9", "k1", "k2", "k7")),
                entity("beta", chunks=("k2", "k3", "k1")),
                entity("gamma", chunks=("k3", "k8")),
            ],
            relationships=[],
        ),
    )
    weights = [("alpha", 1.0), ("beta", 0.5), ("gamma", 0.5), ("nobody", 2.0)]
    top = await graph_store.top_source_chunks(room, weights, 10)
    # k1, k2: alpha + beta; then the ties at 1.0 (alpha's own k9 and k7, beta + gamma's k3) by
    # their first entity and place in its list; gamma's own k8 last.
    assert top == [
        ("k1", 1.5),
        ("k2", 1.5),
        ("k9", 1.0),
        ("k7", 1.0),
        ("k3", 1.0),
        ("k8", 0.5),
    ]
    assert await graph_store.top_source_chunks(room, weights, 2) == [("k1", 1.5), ("k2", 1.5)]
    assert await graph_store.top_source_chunks(room, [], 5) == []
    assert await graph_store.top_source_chunks(new_room(), weights, 5) == []


# --- communities and reports --------------------------------------------------------------------


async def test_communities_round_trip_and_replace(graph_store: GraphStore, room: str) -> None:
    await graph_store.replace_communities(room, sample_communities())
    stored = await graph_store.get_communities(room)
    assert stored == sorted(sample_communities(), key=lambda c: (c.level, c.id))

    await graph_store.replace_communities(room, sample_communities())
    assert await graph_store.get_communities(room) == stored

    fewer = [Community(id="c0-z", level=0, parent_id=None, entity_names=["alpha"])]
    await graph_store.replace_communities(room, fewer)
    assert await graph_store.get_communities(room) == fewer
    await graph_store.replace_communities(room, [])
    assert await graph_store.get_communities(room) == []


async def test_entities_outside_communities_are_those_in_no_level_0_community(
    graph_store: GraphStore, room: str
) -> None:
    # The room's graph is sample_graph(): every entity is in a level-0 community.
    assert await graph_store.entities_outside_communities(room) == sorted(names(sample_graph()))
    await graph_store.replace_communities(room, sample_communities())
    assert await graph_store.entities_outside_communities(room) == []
    # Only level 0 counts (phi is still in a level-1 community), and only this room's.
    level0 = [c for c in sample_communities() if c.level == 0]
    level0[0] = replace(level0[0], entity_names=["alpha", "beta"])
    await graph_store.replace_communities(room, [*level0, *sample_communities()[2:]])
    await graph_store.replace_communities(new_room(), sample_communities())
    assert await graph_store.entities_outside_communities(room) == ["phi"]
    assert await graph_store.entities_outside_communities(f"{room}-empty") == []


async def test_communities_by_id_or_member(graph_store: GraphStore, room: str) -> None:
    await graph_store.replace_communities(room, sample_communities())
    other = new_room()
    await graph_store.replace_communities(other, sample_communities())

    async def ids(**where: object) -> list[str]:
        return [c.id for c in await graph_store.get_communities(room, **where)]  # type: ignore[arg-type]

    # Each community holding one of the entities, at every level, in level and id order.
    assert await ids(containing={"phi"}) == ["c0-a", "c1-b"]
    assert await ids(containing={"beta", "gamma"}) == ["c0-a", "c0-b", "c1-a"]
    assert await ids(ids={"c1-b", "c0-gone"}) == ["c1-b"]
    # Either condition: the union.
    assert await ids(ids={"c0-b"}, containing={"alpha"}) == ["c0-a", "c0-b", "c1-a"]
    assert await ids(containing={"nobody"}) == []
    # Asked for nothing, nothing (not the whole room); whole rows, as the unfiltered read.
    assert await ids(ids=set(), containing=set()) == []
    assert await graph_store.get_communities(room, containing={"phi"}) == [
        c for c in await graph_store.get_communities(room) if "phi" in c.entity_names
    ]
    await graph_store.replace_communities(other, [])
    assert await ids(containing={"phi"}) == ["c0-a", "c1-b"]


async def test_community_changes_write_only_what_changed_and_stamp_the_room(
    graph_store: GraphStore, room: str
) -> None:
    other = new_room()
    await graph_store.replace_graph(other, sample_graph())
    for room_id in (room, other):
        await graph_store.replace_communities(room_id, sample_communities())
    moved = Community(id="c1-b", level=1, parent_id="c0-a", entity_names=["phi", "zeta"])
    added = Community(id="c1-c", level=1, parent_id="c0-b", entity_names=["delta"])
    await graph_store.apply_community_changes(room, [moved, added], ["c0-b"], "fp-2", 3, 7.5)
    stored = await graph_store.get_communities(room)
    expected = [c for c in sample_communities() if c.id not in ("c0-b", "c1-b")] + [moved, added]
    assert stored == sorted(expected, key=lambda c: (c.level, c.id))
    # The room-wide fields are on every community, the written ones and the others.
    assert {(c.graph_fingerprint, c.drift, c.baseline_weight) for c in stored} == {("fp-2", 3, 7.5)}
    # Nothing else changed, and not in another room.
    assert await graph_store.get_communities(other) == sorted(
        sample_communities(), key=lambda c: (c.level, c.id)
    )
    assert {c.graph_fingerprint for c in await graph_store.get_communities(other)} == {None}
    # No change but the stamp; and a room without communities is no error.
    await graph_store.apply_community_changes(room, [], [], "fp-3", 3, 7.5)
    assert {c.graph_fingerprint for c in await graph_store.get_communities(room)} == {"fp-3"}
    assert len(await graph_store.get_communities(room)) == len(expected)
    await graph_store.apply_community_changes(new_room(), [], ["c9"], "fp", 0, 0.0)


async def test_reports_round_trip_upsert_and_delete(graph_store: GraphStore, room: str) -> None:
    await graph_store.replace_communities(room, sample_communities())
    written = [report("c1-a", 2.0), report("c0-a", 7.5), report("c0-b", 7.5)]
    await graph_store.upsert_reports(room, written)
    stored = await graph_store.get_reports(room)
    # Highest rank first, then by community id.
    assert [r.community_id for r in stored] == ["c0-a", "c0-b", "c1-a"]
    assert all(r.generated_at is not None for r in stored)
    by_id = {r.community_id: r for r in stored}
    for expected in written:
        got = by_id[expected.community_id]
        assert got.level == expected.level
        assert got.title == expected.title
        assert got.summary == expected.summary
        assert got.findings == expected.findings
        assert got.rank == expected.rank
        assert got.content_hash == expected.content_hash
        assert got.source_chunk_ids == expected.source_chunk_ids

    # Upserting again updates in place.
    await graph_store.upsert_reports(room, [report("c1-a", 9.0, "A new summary.")])
    await graph_store.upsert_reports(room, [])
    stored = await graph_store.get_reports(room)
    assert [r.community_id for r in stored] == ["c1-a", "c0-a", "c0-b"]
    assert stored[0].summary == "A new summary."
    assert (await graph_store.counts(room))["reports"] == 3
    # Some communities only (unknown ids are no error), in the same order.
    some = await graph_store.get_reports(room, ["c0-b", "c1-a", "c9-none"])
    assert [r.community_id for r in some] == ["c1-a", "c0-b"]
    assert some[0] == stored[0]
    assert await graph_store.get_reports(room, []) == []

    await graph_store.delete_reports(room, ["c0-a", "c9-none"])
    await graph_store.delete_reports(room, [])
    assert [r.community_id for r in await graph_store.get_reports(room)] == ["c1-a", "c0-b"]


async def test_counts(graph_store: GraphStore, room: str) -> None:
    await graph_store.replace_communities(room, sample_communities())
    await graph_store.upsert_reports(room, [report("c0-a", 1.0)])
    assert await graph_store.counts(room) == {
        "entities": 6,
        "relationships": 5,
        "communities": 4,
        "reports": 1,
    }
    empty = {"entities": 0, "relationships": 0, "communities": 0, "reports": 0}
    assert await graph_store.counts(new_room()) == empty
    # Only the kinds asked for.
    assert await graph_store.counts(room, ["reports", "entities"]) == {"entities": 6, "reports": 1}
    assert await graph_store.counts(room, ["relationships"]) == {"relationships": 5}
    assert await graph_store.counts(room, []) == {}
    with pytest.raises(ValueError, match="unknown kinds"):
        await graph_store.counts(room, ["chunks"])


# --- rooms --------------------------------------------------------------------------------------

# What wipe_room reports for each ``counts`` key, in each implementation's naming.
WIPE_KEYS = {
    "entities": ("postgres:graph_entities", "neo4j:Entity"),
    "relationships": ("postgres:graph_relationships", "neo4j:RELATED"),
    "communities": ("postgres:graph_communities", "neo4j:Community"),
    "reports": ("postgres:graph_community_reports", "neo4j:Report"),
}


def wiped(removed: dict[str, int]) -> dict[str, int]:
    """wipe_room's counts under the ``counts`` keys (each reported exactly once)."""
    out = {}
    for kind, keys in WIPE_KEYS.items():
        present = [key for key in keys if key in removed]
        assert len(present) == 1, removed
        out[kind] = removed[present[0]]
    assert len(removed) == len(WIPE_KEYS), removed
    return out


async def test_rooms_are_isolated_and_wipe_room_touches_one_room(
    graph_store: GraphStore, room: str
) -> None:
    other = new_room()
    # The same names in another room, with one more edge (alpha - gamma).
    other_graph = sample_graph()
    other_graph.relationships.append(rel("alpha", "gamma", 9.0))
    await graph_store.replace_graph(other, other_graph)
    await graph_store.replace_communities(other, sample_communities())
    await graph_store.upsert_reports(other, [report("c0-a", 1.0)])
    await graph_store.replace_communities(room, sample_communities()[:1])
    await graph_store.upsert_reports(room, [report("c0-a", 1.0), report("c0-b", 1.0)])

    # Writes and reads stay in their room.
    assert canonical(await graph_store.get_graph(room)) == canonical(sample_graph())
    assert (await graph_store.counts(room))["relationships"] == 5
    assert (await graph_store.counts(other))["relationships"] == 6
    one = await graph_store.neighbourhood(room, ["alpha"], hops=1, limit=10)
    assert "gamma" not in names(one)
    assert "gamma" in names(await graph_store.neighbourhood(other, ["alpha"], hops=1, limit=10))
    await graph_store.delete_reports(other, ["c0-b"])
    assert len(await graph_store.get_reports(room)) == 2

    before = await graph_store.counts(other)
    graph_before = canonical(await graph_store.get_graph(other))
    held = await graph_store.counts(room)
    assert held == {"entities": 6, "relationships": 5, "communities": 1, "reports": 2}
    assert wiped(await graph_store.wipe_room(room)) == held

    assert await graph_store.counts(room) == {
        "entities": 0,
        "relationships": 0,
        "communities": 0,
        "reports": 0,
    }
    assert await graph_store.get_graph(room) == RoomGraph(entities=[], relationships=[])
    assert await graph_store.entity_names(room) == []
    assert await graph_store.get_communities(room) == []
    assert await graph_store.get_reports(room) == []
    assert await graph_store.counts(other) == before
    assert canonical(await graph_store.get_graph(other)) == graph_before
    assert len(await graph_store.get_communities(other)) == 4
    # Wiping an empty room is fine, and removes nothing.
    assert wiped(await graph_store.wipe_room(room)) == dict.fromkeys(WIPE_KEYS, 0)
