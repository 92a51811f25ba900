"""Incremental community updates (``knowledge.communities.update_communities``): a small
change places new entities into the stored hierarchy and moves nobody else; a large one hands
over to Leiden."""

from __future__ import annotations

from knowledge.communities import hierarchical_communities, total_weight, update_communities
from knowledge.graph import Community

ROOM = "room-1"


def _clique(prefix: str, size: int, weight: float = 3.0) -> list[tuple[str, str, float]]:
    names = [f"{prefix}{i}" for i in range(size)]
    return [(a, b, weight) for i, a in enumerate(names) for b in names[i + 1 :]]


def _graph() -> tuple[list[str], list[tuple[str, str, float]]]:
    edges = _clique("a", 8) + _clique("b", 8) + _clique("c", 8) + [("a0", "b0", 1.0)]
    nodes = sorted({n for a, b, _ in edges for n in (a, b)} | {"lonely"})
    return nodes, edges


def _detected() -> tuple[list[str], list[tuple[str, str, float]], list[Community]]:
    nodes, edges = _graph()
    communities = hierarchical_communities(ROOM, nodes, edges, seed=7, max_cluster_size=6)
    for community in communities:  # as detect_communities stores them
        community.baseline_weight = total_weight(edges)
    return nodes, edges, communities


def _holding(communities: list[Community], node: str) -> list[Community]:
    return sorted((c for c in communities if node in c.entity_names), key=lambda c: c.level)


def test_a_new_entity_joins_the_communities_it_is_tied_to_and_nobody_moves() -> None:
    nodes, edges, before = _detected()
    edges = [*edges, ("b3", "newcomer", 2.0), ("b5", "newcomer", 2.0), ("a1", "newcomer", 1.0)]
    after = update_communities(ROOM, [*nodes, "newcomer"], edges, before)
    assert after is not None
    old = {c.id: c for c in before}
    assert {c.id for c in after} == set(old)
    for community in after:
        gained = set(community.entity_names) - set(old[community.id].entity_names)
        assert gained <= {"newcomer"}
        assert set(old[community.id].entity_names) <= set(community.entity_names)
    top = _holding(after, "newcomer")[0]
    assert top.level == 0 and "b3" in top.entity_names  # the heavier tie wins
    # at every level below, it sits with b3 (the same child) where b3 is held
    for community in _holding(after, "newcomer"):
        assert "b3" in community.entity_names or "b5" in community.entity_names
    assert all(c.drift == 1 for c in after)


def test_an_entity_with_no_ties_gets_a_singleton_community() -> None:
    nodes, edges, before = _detected()
    after = update_communities(ROOM, [*nodes, "hermit"], edges, before)
    assert after is not None
    (own,) = _holding(after, "hermit")
    assert own.level == 0 and own.entity_names == ["hermit"] and own.parent_id is None
    assert len(after) == len(before) + 1


def test_a_gone_entity_leaves_and_an_emptied_community_is_dropped() -> None:
    nodes, edges, before = _detected()
    lonely = _holding(before, "lonely")[0]
    after = update_communities(ROOM, [n for n in nodes if n != "lonely"], edges, before)
    assert after is not None
    assert lonely.id not in {c.id for c in after}
    assert not any("lonely" in c.entity_names for c in after)


def test_drift_accumulates_and_past_the_limit_leiden_runs_again() -> None:
    nodes, edges, before = _detected()
    placed = len(nodes)
    current = before
    for i in range(int(0.1 * placed)):
        nodes = [*nodes, f"n{i}"]
        edges = [*edges, ("c0", f"n{i}", 1.0)]
        updated = update_communities(ROOM, nodes, edges, current)
        assert updated is not None, f"update {i} handed over too early"
        current = updated
    assert current[0].drift == int(0.1 * placed)
    nodes = [*nodes, "one-too-many"]
    assert update_communities(ROOM, nodes, [*edges, ("c0", "one-too-many", 1.0)], current) is None
    # Leiden's result starts a new count
    fresh = hierarchical_communities(ROOM, nodes, edges, seed=7, max_cluster_size=6)
    assert all(c.drift == 0 for c in fresh)


def test_nothing_stored_means_leiden_and_updates_are_deterministic() -> None:
    nodes, edges, before = _detected()
    assert update_communities(ROOM, nodes, edges, []) is None
    grown = [*edges, ("a2", "x", 1.0), ("x", "y", 1.0)]
    once = update_communities(ROOM, [*nodes, "x", "y"], grown, before)
    again = update_communities(ROOM, [*nodes, "y", "x"], list(reversed(grown)), before)
    assert once is not None and again is not None
    assert [(c.id, c.entity_names, c.parent_id) for c in once] == [
        (c.id, c.entity_names, c.parent_id) for c in again
    ]
    # y is tied only to x, placed before it: it follows x
    assert [c.id for c in _holding(once, "y")] == [c.id for c in _holding(once, "x")]


def test_new_relationship_weight_past_the_limit_hands_over_to_leiden() -> None:
    nodes, edges, before = _detected()
    weight = total_weight(edges)
    a_little = [*edges, ("a0", "c0", 0.05 * weight)]
    assert update_communities(ROOM, nodes, a_little, before) == before
    a_lot = [*edges, ("a0", "c0", 0.2 * weight)]
    assert update_communities(ROOM, nodes, a_lot, before) is None
