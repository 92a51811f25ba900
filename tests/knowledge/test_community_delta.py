"""Delta communities and reports on the real stores (embedded PostgreSQL): Leiden skipped when
the graph did not change, warm-started otherwise with ids inherited by overlap, and report
contexts built only for the communities whose content changed."""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Sequence

import networkx as nx
import pytest

import knowledge.communities as communities_module
from knowledge.communities import community_id, hierarchical_communities, inherit_ids
from knowledge.graph import Community, Entity, Relationship, RoomGraph
from knowledge.indexing import detect_communities, write_reports
from knowledge.indexing.changes import log_graph_changes
from knowledge.platform import Platform
from knowledge.reports import GraphIndex, build_context

CLUSTERS = 6
SIZE = 6


def clustered_graph() -> RoomGraph:
    """Six cliques of six (weight 5) joined in a ring by single weak ties (weight 1)."""
    entities = []
    relationships = []
    for c in range(CLUSTERS):
        names = [f"c{c}-{i}" for i in range(SIZE)]
        entities += [
            Entity(n, n.upper(), "PERSON", f"member {n}", [f"chunk-{c}"], 2) for n in names
        ]
        relationships += [
            Relationship(a, b, 5.0, f"{a} meets {b}", [f"chunk-{c}"])
            for i, a in enumerate(names)
            for b in names[i + 1 :]
        ]
        a, b = sorted((f"c{c}-0", f"c{(c + 1) % CLUSTERS}-1"))
        relationships.append(Relationship(a, b, 1.0, "weak tie", [f"chunk-{c}"]))
    entities.sort(key=lambda e: e.name)
    relationships.sort(key=lambda r: r.pair)
    return RoomGraph(entities, relationships)


def partition(communities: Sequence[Community]) -> set[tuple[int, frozenset[str]]]:
    return {(c.level, frozenset(c.entity_names)) for c in communities}


def ids_by_cluster(communities: Sequence[Community]) -> dict[str, str]:
    """Level-0 community id per cluster (named by its first original member)."""
    found = {}
    for c in communities:
        if c.level == 0:
            for cluster in range(CLUSTERS):
                if f"c{cluster}-2" in c.entity_names:
                    found[f"c{cluster}"] = c.id
    return found


async def rewrite_graph(
    platform: Platform, room: str, graph: RoomGraph, changed: Sequence[str]
) -> None:
    """Write the graph as the graph step does: the changed entities logged for the reports
    step first."""
    await log_graph_changes(platform, room, entity_names=changed)
    await platform.graph.replace_graph(room, graph)


@pytest.fixture
async def room(platform: Platform) -> str:
    room_id = f"cd-{uuid.uuid4().hex[:12]}"
    await platform.graph.replace_graph(room_id, clustered_graph())
    return room_id


async def test_small_change_keeps_every_id_and_rewrites_only_the_touched_report(
    platform: Platform, room: str
) -> None:
    first = await detect_communities(platform, room)
    assert first.total == CLUSTERS and first.kept == 0 and not first.warm_start
    everything = len(clustered_graph().relationships)
    assert first.relationships_read == everything  # Leiden reads the whole graph
    before = await platform.graph.get_communities(room)
    assert partition(before) == {
        (0, frozenset(f"c{c}-{i}" for i in range(SIZE))) for c in range(CLUSTERS)
    }
    # A full build (no previous communities): ids are member hashes.
    assert all(c.id == community_id(room, c.level, c.entity_names) for c in before)
    reports = await write_reports(platform, room)
    assert reports.regenerated == reports.contexts_built == CLUSTERS

    # One new entity tied into cluster 2.
    graph = clustered_graph()
    graph.entities.append(Entity("c2-new", "C2-NEW", "PERSON", "newcomer", ["chunk-new"], 1))
    graph.relationships += [
        Relationship("c2-0", "c2-new", 5.0, "greets", ["chunk-new"]),
        Relationship("c2-1", "c2-new", 5.0, "greets", ["chunk-new"]),
    ]
    await platform.graph.replace_graph(room, graph)
    second = await detect_communities(platform, room)
    after = await platform.graph.get_communities(room)
    # A small change: the newcomer is placed, Leiden does not run, nobody else moves.
    assert second.mode == "incremental" and second.drift == 1
    # ... and reads only the newcomer's relationships, not the graph (counted, not timed).
    assert second.relationships_read == 2 < everything
    touched = next(c for c in after if "c2-new" in c.entity_names)
    assert set(touched.entity_names) == {f"c2-{i}" for i in range(SIZE)} | {"c2-new"}
    # Every id kept, the touched community's too (it overlaps its old self 6/7).
    assert ids_by_cluster(after) == ids_by_cluster(before)
    assert {c.id for c in after} == {c.id for c in before}
    assert second.kept == second.previous == CLUSTERS
    assert touched.id != community_id(room, 0, touched.entity_names)

    reports = await write_reports(platform, room)
    assert reports.regenerated == reports.contexts_built == 1
    assert reports.total == CLUSTERS and reports.deleted == 0
    by_id = {r.community_id: r for r in await platform.graph.get_reports(room)}
    rewritten = by_id[touched.id]
    assert "7 entities" in rewritten.summary and "chunk-new" in rewritten.source_chunk_ids


async def test_reports_build_contexts_only_for_changed_communities(
    platform: Platform, room: str
) -> None:
    await detect_communities(platform, room)
    assert (await write_reports(platform, room)).contexts_built == CLUSTERS
    # Nothing changed: no context built, no chunk read.
    again = await write_reports(platform, room)
    assert (again.contexts_built, again.regenerated, again.chunks_read) == (0, 0, 0)

    # One description changed (cluster 3): one context. Leiden is skipped (same weighted graph).
    graph = clustered_graph()
    entity = next(e for e in graph.entities if e.name == "c3-4")
    entity.description = "member c3-4, now the team lead"
    await rewrite_graph(platform, room, graph, ["c3-4"])
    assert (await detect_communities(platform, room)).skipped
    changed = await write_reports(platform, room)
    assert (changed.contexts_built, changed.regenerated) == (1, 1)

    # A weight change within its power-of-two bucket (5 -> 7): Leiden runs again (the graph
    # changed), every id is kept, and no report is rewritten.
    for r in graph.relationships:
        if r.pair == ("c4-0", "c4-1"):
            r.weight = 7.0
    await rewrite_graph(platform, room, graph, ["c4-0", "c4-1"])
    redetected = await detect_communities(platform, room)
    assert not redetected.skipped and redetected.kept == CLUSTERS
    assert (await write_reports(platform, room)).contexts_built == 0

    # Crossing the bucket (7 -> 9) rewrites that community's report only.
    for r in graph.relationships:
        if r.pair == ("c4-0", "c4-1"):
            r.weight = 9.0
    await rewrite_graph(platform, room, graph, ["c4-0", "c4-1"])
    await detect_communities(platform, room)
    crossed = await write_reports(platform, room)
    assert (crossed.contexts_built, crossed.regenerated) == (1, 1)
    # Each of those runs hashed only the community its logged change touched.
    assert (crossed.mode, crossed.touched) == ("delta", 1)


async def test_unchanged_graph_skips_leiden_and_writes_nothing(
    platform: Platform, room: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await detect_communities(platform, room)
    stored = await platform.graph.get_communities(room)
    fingerprints = {c.graph_fingerprint for c in stored}
    assert len(fingerprints) == 1 and None not in fingerprints

    def no_leiden(*args: object, **kwargs: object) -> None:
        raise AssertionError("Leiden ran on an unchanged graph")

    monkeypatch.setattr(communities_module.gn, "leiden", no_leiden)
    monkeypatch.setattr(communities_module.gn, "hierarchical_leiden", no_leiden)
    build = await detect_communities(platform, room)
    assert build.skipped and build.kept == build.total == CLUSTERS
    assert await platform.graph.get_communities(room) == stored

    # A small change of the weighted graph is applied without Leiden ...
    graph = clustered_graph()
    graph.relationships.append(Relationship("c0-2", "c3-2", 1.0, "new tie"))
    graph.relationships.sort(key=lambda r: r.pair)
    await platform.graph.replace_graph(room, graph)
    rewrites: list[int] = []
    replace = platform.graph.replace_communities

    async def counted(room_id: str, communities: Sequence[Community]) -> None:
        rewrites.append(len(communities))
        await replace(room_id, communities)

    monkeypatch.setattr(platform.graph, "replace_communities", counted)
    assert (await detect_communities(platform, room)).mode == "incremental"
    # ... and, nobody having joined or left, only the fingerprint is written: the communities
    # are not rewritten, and the next run finds the graph unchanged.
    assert rewrites == []
    after = await platform.graph.get_communities(room)
    assert after == stored and {c.graph_fingerprint for c in after} != fingerprints
    assert (await detect_communities(platform, room)).skipped
    # A new entity: only the communities it joins are written.
    written: list[list[str]] = []
    apply = platform.graph.apply_community_changes

    async def spied(room_id: str, upserts: Sequence[Community], *rest: object) -> None:
        written.append(sorted(c.id for c in upserts))
        await apply(room_id, upserts, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(platform.graph, "apply_community_changes", spied)
    graph.entities.append(Entity("c0-new", "C0-NEW", "PERSON", "a newcomer", ["chunk-0"], 1))
    graph.entities.sort(key=lambda e: e.name)
    graph.relationships.append(Relationship("c0-2", "c0-new", 5.0, "welcomes"))
    graph.relationships.sort(key=lambda r: r.pair)
    await platform.graph.replace_graph(room, graph)
    assert (await detect_communities(platform, room)).mode == "incremental"
    joined = [c for c in await platform.graph.get_communities(room) if "c0-new" in c.entity_names]
    assert written == [sorted(c.id for c in joined)] and rewrites == []
    assert len(await platform.graph.get_communities(room)) == len(after)
    # ... a large one runs it again (here: the patched one fails).
    for r in graph.relationships:
        r.weight *= 2
    await platform.graph.replace_graph(room, graph)
    with pytest.raises(AssertionError, match="unchanged graph"):
        await detect_communities(platform, room)


def _edges(graph: nx.Graph) -> list[tuple[str, str, float]]:
    return [(str(a), str(b), float(d.get("weight", 1.0))) for a, b, d in graph.edges(data=True)]


def noisy_graph() -> tuple[list[str], list[tuple[str, str, float]]]:
    """300 nodes in ten planted groups of 30 with noise across: Leiden's optimum is not
    unique, so a cold start after a small change lands elsewhere."""
    graph = nx.random_partition_graph([30] * 10, 0.25, 0.03, seed=3)
    return [f"n{n}" for n in graph.nodes], [(f"n{a}", f"n{b}", 1.0) for a, b in graph.edges]


def test_warm_start_is_deterministic_and_keeps_the_hierarchy() -> None:
    nodes, edges = noisy_graph()
    cold = hierarchical_communities("r", nodes, edges, seed=7, max_cluster_size=12)
    assert len({c.level for c in cold}) == 3

    # A small change: ten new random ties.
    rnd = random.Random(1)
    extra = [(f"n{rnd.randrange(300)}", f"n{rnd.randrange(300)}", 1.0) for _ in range(10)]
    grown = edges + [(a, b, w) for a, b, w in extra if a != b]
    runs = [
        hierarchical_communities(
            "r", nodes, list(order), seed=7, max_cluster_size=12, previous=prev
        )
        for order, prev in (
            (grown, cold),
            (reversed(grown), list(reversed(cold))),
            (grown, [dataclasses.replace(c) for c in cold]),
        )
    ]
    # Same graph + same previous assignment -> the same communities, ids included.
    assert runs[0] == runs[1] == runs[2]
    warm = runs[0]
    assert {c.level for c in warm} == {c.level for c in cold}
    kept = {c.id for c in warm} & {c.id for c in cold}
    # A cold start with the same id inheritance keeps 48 of 58 here; the warm start 54.
    assert len(kept) >= 0.9 * len(cold), (len(kept), len(cold))
    rebuilt = inherit_ids("r", hierarchical_communities("r", nodes, grown, 7, 12), cold)
    assert len(kept) > len({c.id for c in rebuilt} & {c.id for c in cold})
    ids = {c.id for c in warm}
    assert len(ids) == len(warm)
    for c in warm:
        if c.parent_id is not None:
            parent = next(p for p in warm if p.id == c.parent_id)
            assert parent.level == c.level - 1
            assert set(c.entity_names) < set(parent.entity_names)


def test_warm_start_on_an_unchanged_clear_graph_changes_nothing() -> None:
    """Where the optimum is clear (Les Misérables), warming up from the last result gives it
    again. (Not so on the noisy graph: Leiden from its own result can still improve a level,
    which is why an unchanged graph skips detection instead.)"""
    graph = nx.les_miserables_graph()
    nodes, edges = [str(n) for n in graph.nodes], _edges(graph)
    cold = hierarchical_communities("r", nodes, edges, seed=7, max_cluster_size=10)
    again = hierarchical_communities("r", nodes, edges, seed=7, max_cluster_size=10, previous=cold)
    assert again == cold


def test_warm_start_follows_the_previous_assignment() -> None:
    """A node tied equally to two cliques stays where the previous assignment put it."""
    a = [f"a{i}" for i in range(5)]
    b = [f"b{i}" for i in range(5)]
    edges = [(x, y, 3.0) for group in (a, b) for i, x in enumerate(group) for y in group[i + 1 :]]
    edges += [("a0", "x", 1.0), ("b0", "x", 1.0), ("a1", "b1", 0.5)]
    nodes = [*a, *b, "x"]
    for home, other in ((a, b), (b, a)):
        previous = [
            Community("home", 0, None, sorted([*home, "x"])),
            Community("other", 0, None, sorted(other)),
        ]
        found = hierarchical_communities(
            "r", nodes, edges, seed=1, max_cluster_size=50, previous=previous
        )
        assert {c.id: c.entity_names for c in found} == {
            "home": sorted([*home, "x"]),
            "other": sorted(other),
        }


def test_ids_are_inherited_one_to_one_by_overlap() -> None:
    previous = [
        Community("old-a", 0, None, ["a", "b", "c", "d"]),
        Community("old-b", 0, None, ["e", "f"]),
    ]
    edges = [
        ("a", "b", 5.0),
        ("b", "c", 5.0),
        ("a", "c", 5.0),
        ("c", "d", 5.0),
        ("a", "d", 5.0),
        ("b", "d", 5.0),
        ("e", "f", 5.0),
        ("f", "g", 5.0),
        ("e", "g", 5.0),
        ("d", "e", 0.1),
    ]
    found = hierarchical_communities(
        "r", list("abcdefg"), edges, seed=1, max_cluster_size=50, previous=previous
    )
    by_members = {tuple(c.entity_names): c.id for c in found}
    assert by_members == {("a", "b", "c", "d"): "old-a", ("e", "f", "g"): "old-b"}
    # Without previous communities: member hashes (what a full rebuild gives).
    rebuilt = hierarchical_communities("r", list("abcdefg"), edges, seed=1, max_cluster_size=50)
    assert partition(rebuilt) == partition(found)
    assert {c.id for c in rebuilt} == {community_id("r", 0, m) for m in by_members}


def test_index_content_hash_equals_the_context_hash() -> None:
    graph = clustered_graph()
    graph.relationships[3].description = 'quotes "x" and \\ é'
    index = GraphIndex(graph)
    entities = {e.name: e for e in graph.entities}
    members = [[f"c{c}-{i}" for i in range(SIZE)] for c in range(CLUSTERS)]
    members.append(["c0-0", "c1-1", "c2-2", "nobody"])
    for i, names in enumerate(members):
        community = Community(f"id-{i}", 0, None, sorted(names))
        context = build_context(community, entities, graph.relationships, {})
        assert index.content_hash(community) == context.content_hash()
        assert index.context(community, {}) == context


def large_community_graph(size: int) -> RoomGraph:
    """``size`` entities, entity ``i`` mentioned ``1000 - i`` times, in a ring of ties."""
    names = [f"m{i:03d}" for i in range(size)]
    entities = [
        Entity(n, n.upper(), "PERSON", f"member {n}", [f"chunk-{i}"], 1000 - i)
        for i, n in enumerate(names)
    ]
    relationships = [
        Relationship(*sorted((names[i], names[(i + 1) % size])), 3.0, "tie", [f"chunk-{i}"])  # type: ignore[misc]
        for i in range(size)
    ]
    return RoomGraph(entities, relationships)


def test_a_large_communitys_report_reads_its_most_mentioned_members() -> None:
    from knowledge.reports import CONTEXT_MEMBERS

    size = CONTEXT_MEMBERS + 20
    graph = large_community_graph(size)
    community = Community("big", 0, None, sorted(e.name for e in graph.entities))
    index = GraphIndex(graph)
    context = index.context(community, {})
    core = {f"m{i:03d}" for i in range(CONTEXT_MEMBERS)}
    assert {e.name for e in context.entities} == core
    assert all(r.source in core and r.target in core for r in context.relationships)
    entities = {e.name: e for e in graph.entities}
    assert context == build_context(community, entities, graph.relationships, {})
    assert index.content_hash(community) == context.content_hash()
    before = context.content_hash()

    def hash_with(graph: RoomGraph, names: list[str]) -> str:
        return GraphIndex(graph).content_hash(Community("big", 0, None, sorted(names)))

    # A member at the edge (rarely mentioned) joins or leaves: the report stays current.
    edge = Entity("zz-new", "ZZ", "PERSON", "a newcomer", ["chunk-x"], 1)
    grown = RoomGraph([*graph.entities, edge], graph.relationships)
    assert hash_with(grown, [*community.entity_names, "zz-new"]) == before
    assert hash_with(graph, community.entity_names[:-1]) == before
    # A core member re-described, or the size crossing a power of two: it is rewritten.
    changed = [
        dataclasses.replace(e, description="changed") if e.name == "m003" else e
        for e in graph.entities
    ]
    assert hash_with(RoomGraph(changed, graph.relationships), community.entity_names) != before
    doubled = large_community_graph(2 * size)
    assert hash_with(doubled, [e.name for e in doubled.entities]) != before
    # A member mentioned more than the core's least joins the core.
    star = Entity("zz-star", "ZZ", "PERSON", "a star", ["chunk-y"], 10_000)
    starred = RoomGraph([*graph.entities, star], graph.relationships)
    assert hash_with(starred, [*community.entity_names, "zz-star"]) != before
