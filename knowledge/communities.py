"""Hierarchical Leiden community detection (graspologic-native), seeded and deterministic.

Level 0 partitions the whole graph; a community larger than ``max_cluster_size`` is split
again at the next level. A community's id is a hash of (room, level, members), so it keeps its
id across runs exactly while its membership is unchanged. Entities without relationships get a
singleton community at level 0, so every entity belongs to one.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence

import graspologic_native as gn

from knowledge.graph import Community

WeightedEdge = tuple[str, str, float]


def community_id(room_id: str, level: int, members: Iterable[str]) -> str:
    payload = "\x1f".join([room_id, str(level), *sorted(members)])
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def leiden_partition(
    edges: Sequence[WeightedEdge], seed: int, resolution: float = 1.0
) -> dict[str, int]:
    """Flat Leiden (modularity) partition: node -> community number."""
    if not edges:
        return {}
    _, partition = gn.leiden(
        sorted(edges), seed=seed, resolution=resolution, use_modularity=True, iterations=2
    )
    return dict(partition)


def hierarchical_communities(
    room_id: str,
    nodes: Iterable[str],
    edges: Sequence[WeightedEdge],
    seed: int,
    max_cluster_size: int,
    resolution: float = 1.0,
) -> list[Community]:
    nodes = set(nodes)
    edges = sorted((a, b, w) for a, b, w in edges if a != b and a in nodes and b in nodes)
    members: dict[tuple[int, str], set[str]] = defaultdict(set)
    parents: dict[tuple[int, str], tuple[int, str] | None] = {}
    if edges:
        for row in gn.hierarchical_leiden(
            edges,
            seed=seed,
            resolution=resolution,
            max_cluster_size=max_cluster_size,
            iterations=2,
        ):
            key = (row.level, str(row.cluster))
            members[key].add(row.node)
            parent = (
                None if row.parent_cluster is None else (row.level - 1, str(row.parent_cluster))
            )
            parents[key] = parent

    clustered = {node for (level, _), group in members.items() if level == 0 for node in group}
    for node in sorted(nodes - clustered):
        members[(0, f"singleton:{node}")] = {node}
        parents[(0, f"singleton:{node}")] = None

    ids = {key: community_id(room_id, key[0], group) for key, group in members.items()}
    communities = [
        Community(
            id=ids[key],
            level=key[0],
            parent_id=_parent_id(ids, parents.get(key)),
            entity_names=sorted(group),
        )
        for key, group in members.items()
    ]
    communities.sort(key=lambda c: (c.level, -len(c.entity_names), c.entity_names))
    return communities


def _parent_id(ids: dict[tuple[int, str], str], parent: tuple[int, str] | None) -> str | None:
    return ids.get(parent) if parent is not None else None
