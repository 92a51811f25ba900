import networkx as nx
from networkx.algorithms.community import modularity

from knowledge.communities import community_id, hierarchical_communities, leiden_partition


def _edges(graph: nx.Graph) -> list[tuple[str, str, float]]:
    return [(str(a), str(b), float(d.get("weight", 1.0))) for a, b, d in graph.edges(data=True)]


def test_leiden_on_karate_reaches_modularity_040() -> None:
    graph = nx.karate_club_graph()
    partition = leiden_partition(_edges(graph), seed=42)
    groups: dict[int, set[int]] = {}
    for node, community in partition.items():
        groups.setdefault(community, set()).add(int(node))
    assert set(partition) == {str(n) for n in graph.nodes}
    assert modularity(graph, groups.values(), weight="weight") >= 0.40
    assert modularity(graph, groups.values(), weight=None) >= 0.40


def test_hierarchical_leiden_is_deterministic_and_covers_every_node() -> None:
    graph = nx.les_miserables_graph()
    nodes = list(graph.nodes)
    edges = _edges(graph)
    first = hierarchical_communities("room", nodes, edges, seed=7, max_cluster_size=10)
    second = hierarchical_communities(
        "room", nodes, list(reversed(edges)), seed=7, max_cluster_size=10
    )
    assert first == second
    top = [c for c in first if c.level == 0]
    assert sorted(n for c in top for n in c.entity_names) == sorted(nodes)
    assert max(c.level for c in first) >= 1  # big communities were split again
    ids = {c.id for c in first}
    for community in first:
        if community.level > 0:
            assert community.parent_id in ids


def test_isolated_entities_get_singleton_communities() -> None:
    communities = hierarchical_communities(
        "room", ["a", "b", "c", "lonely"], [("a", "b", 1.0), ("b", "c", 2.0)], 1, 10
    )
    covered = {n for c in communities if c.level == 0 for n in c.entity_names}
    assert covered == {"a", "b", "c", "lonely"}
    assert ["lonely"] in [c.entity_names for c in communities]


def test_community_id_depends_only_on_room_level_and_members() -> None:
    assert community_id("r", 0, ["b", "a"]) == community_id("r", 0, ["a", "b"])
    assert community_id("r", 0, ["a", "b"]) != community_id("r", 1, ["a", "b"])
    assert community_id("r", 0, ["a", "b"]) != community_id("other", 0, ["a", "b"])


def test_unchanged_membership_keeps_community_ids() -> None:
    graph = nx.karate_club_graph()
    edges = _edges(graph)
    nodes = [str(n) for n in graph.nodes]
    before = hierarchical_communities("r", nodes, edges, seed=3, max_cluster_size=100)
    # a new component far away must not disturb the existing communities
    extra = [("x1", "x2", 5.0), ("x2", "x3", 5.0), ("x1", "x3", 5.0)]
    after = hierarchical_communities("r", [*nodes, "x1", "x2", "x3"], edges + extra, 3, 100)
    kept = {c.id for c in before} & {c.id for c in after}
    assert len(kept) >= len(before) - 1
