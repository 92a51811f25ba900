"""Hierarchical Leiden community detection (graspologic-native), seeded and deterministic.

Level 0 partitions the whole graph; a community of ``max_cluster_size`` or more entities is
split again at the next level by Leiden on its own subgraph (graspologic's hierarchical
Leiden, run level by level here so that every level can be warm-started). Entities without
relationships get a singleton community at level 0, so every entity belongs to one.

Warm start: given the previous communities, each Leiden run starts from the previous
assignment of that level (``starting_communities``; new nodes start alone), so a small change
of the graph moves few entities.

Ids: a community inherits the id of the previous community of the same level it overlaps most
(Jaccard ≥ ``INHERIT_JACCARD``, one-to-one, ties broken by the member hashes); any other gets
the hash of (room, level, members). Without previous communities (a full rebuild) every id is
the member hash, so a rebuild and a delta path agree as partitions, not necessarily on ids.
The same graph with the same previous communities always gives the same result.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass

import graspologic_native as gn

from knowledge.graph import Community, TopologyDigest

WeightedEdge = tuple[str, str, float]

#: A new community keeps the id of a previous one it overlaps at least this much.
INHERIT_JACCARD = 0.5
_ITERATIONS = 2


def community_id(room_id: str, level: int, members: Iterable[str]) -> str:
    payload = "\x1f".join([room_id, str(level), *sorted(members)])
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def unused_community_id(
    room_id: str, level: int, members: Sequence[str], used: Container[str]
) -> str:
    """The member-hash id, salted until it is not in ``used``."""
    cid, salt = community_id(room_id, level, members), 0
    while cid in used:
        salt += 1
        cid = community_id(room_id, level, [*members, f"#{salt}"])
    return cid


def topology_digest(nodes: Iterable[str], edges: Iterable[WeightedEdge]) -> TopologyDigest:
    """The digest of a topology read out of the store (stores that cannot digest it where it
    lives): a hash of the sorted node set and the sorted, canonical weighted edge set."""
    node_list = sorted(set(nodes))
    canonical = sorted(((a, b) if a <= b else (b, a), float(w)) for a, b, w in edges if a != b)
    digest = hashlib.sha256()
    for node in node_list:
        digest.update(b"\x1en" + node.encode())
    for (a, b), w in canonical:
        digest.update(f"\x1ee{a}\x1f{b}\x1f{w!r}".encode())
    return TopologyDigest(
        nodes=node_list,
        total_weight=float(sum(w for _, w in canonical)),
        digest="sha256:" + digest.hexdigest(),
    )


def graph_fingerprint(
    digest: TopologyDigest, seed: int, max_cluster_size: int, resolution: float = 1.0
) -> str:
    """What community detection depends on: the graph (its store's digest) and the
    parameters. Equal fingerprints give equal communities, so detection can be skipped."""
    payload = f"{seed}\x1e{max_cluster_size}\x1e{resolution!r}\x1e{digest.digest}"
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def leiden_partition(
    edges: Sequence[WeightedEdge],
    seed: int,
    resolution: float = 1.0,
    starting: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Flat Leiden (modularity) partition: node -> community number, warm-started from
    ``starting`` (node -> community; nodes it lacks start alone) when given."""
    if not edges:
        return {}
    edges = sorted(edges)
    nodes = {n for a, b, _ in edges for n in (a, b)}
    start = starting_communities(nodes, starting) if starting else None
    _, partition = gn.leiden(
        edges,
        starting_communities=start,
        seed=seed,
        resolution=resolution,
        use_modularity=True,
        iterations=_ITERATIONS,
    )
    return dict(partition)


def starting_communities(
    nodes: Iterable[str], starting: Mapping[str, int]
) -> dict[str, int] | None:
    """``starting`` restricted to ``nodes``, renumbered 0.. in node order; nodes without a
    previous community start alone. None when no node has one (a cold start)."""
    nodes = sorted(set(nodes))
    if not any(n in starting for n in nodes):
        return None
    numbers: dict[tuple[str, int | str], int] = {}
    start = {}
    for node in nodes:
        key: tuple[str, int | str] = ("p", starting[node]) if node in starting else ("n", node)
        start[node] = numbers.setdefault(key, len(numbers))
    return start


@dataclass(frozen=True)
class _Group:
    level: int
    members: tuple[str, ...]  # sorted
    parent: int | None  # index of the parent group


def hierarchical_communities(
    room_id: str,
    nodes: Iterable[str],
    edges: Sequence[WeightedEdge],
    seed: int,
    max_cluster_size: int,
    resolution: float = 1.0,
    previous: Sequence[Community] = (),
) -> list[Community]:
    """The room's community hierarchy; warm-started from (and keeping the ids of)
    ``previous`` when given."""
    nodes = set(nodes)
    edges = sorted((a, b, w) for a, b, w in edges if a != b and a in nodes and b in nodes)
    adjacency: dict[str, list[WeightedEdge]] = defaultdict(list)
    for edge in edges:
        adjacency[edge[0]].append(edge)
    starting = previous_assignment(previous)
    groups: list[_Group] = []

    def split(members: Sequence[str], level: int, parent: int | None) -> None:
        inside = set(members)
        sub_edges = [e for n in members for e in adjacency.get(n, ()) if e[1] in inside]
        partition = leiden_partition(sub_edges, seed, resolution, starting.get(level))
        by_number: dict[int, list[str]] = defaultdict(list)
        for node in sorted(members):
            # A node the (sub)network lacks (no tie inside) is a group of its own.
            number = partition.get(node)
            by_number[number if number is not None else -1 - len(by_number)].append(node)
        parts = sorted(by_number.values())
        if parent is not None and len(parts) < 2:
            return  # Leiden does not divide it: it stays whole
        for part in parts:
            groups.append(_Group(level, tuple(part), parent))
            if len(part) >= max_cluster_size:
                split(part, level + 1, len(groups) - 1)

    clustered = sorted({n for a, b, _ in edges for n in (a, b)})
    if clustered:
        split(clustered, 0, None)
    for node in sorted(nodes - set(clustered)):
        groups.append(_Group(0, (node,), None))
    return assign_ids(room_id, groups, previous)


def previous_assignment(previous: Sequence[Community]) -> dict[int, dict[str, int]]:
    """Level -> node -> community number of the previous communities (numbered in id order)."""
    assignment: dict[int, dict[str, int]] = defaultdict(dict)
    for number, community in enumerate(sorted(previous, key=lambda c: (c.level, c.id))):
        for node in community.entity_names:
            assignment[community.level][node] = number
    return dict(assignment)


def inherit_ids(
    room_id: str, communities: Sequence[Community], previous: Sequence[Community]
) -> list[Community]:
    """The same hierarchy (computed elsewhere, e.g. by GDS) with ids inherited from
    ``previous`` as :func:`hierarchical_communities` does."""
    position = {c.id: i for i, c in enumerate(communities)}
    groups = [
        _Group(
            c.level,
            tuple(sorted(c.entity_names)),
            None if c.parent_id is None else position.get(c.parent_id),
        )
        for c in communities
    ]
    return assign_ids(room_id, groups, previous)


def assign_ids(
    room_id: str, groups: Sequence[_Group], previous: Sequence[Community]
) -> list[Community]:
    """Communities of ``groups`` with inherited or member-hash ids, sorted (level, larger
    first, members)."""
    hashes = [community_id(room_id, g.level, g.members) for g in groups]
    ids: list[str | None] = [None] * len(groups)
    by_level: dict[int, list[Community]] = defaultdict(list)
    for community in previous:
        by_level[community.level].append(community)
    for level, olds in by_level.items():
        owner = {n: i for i, c in enumerate(olds) for n in c.entity_names}
        sizes = [len(set(c.entity_names)) for c in olds]
        candidates = []
        for index, group in enumerate(groups):
            if group.level != level:
                continue
            overlap: dict[int, int] = defaultdict(int)
            for node in group.members:
                if node in owner:
                    overlap[owner[node]] += 1
            for old, shared in overlap.items():
                jaccard = shared / (len(group.members) + sizes[old] - shared)
                if jaccard >= INHERIT_JACCARD:
                    candidates.append((-jaccard, -shared, hashes[index], olds[old].id, index))
        taken: set[str] = set()
        for _, _, _, old_id, index in sorted(candidates):
            if ids[index] is None and old_id not in taken:
                ids[index] = old_id
                taken.add(old_id)
    used = {i for i in ids if i is not None}
    for index in sorted(range(len(groups)), key=lambda i: (groups[i].level, hashes[i])):
        if ids[index] is not None:
            continue
        # unused: an inherited id may once have hashed these very members
        cid = unused_community_id(room_id, groups[index].level, groups[index].members, used)
        ids[index] = cid
        used.add(cid)
    communities = [
        Community(
            id=str(ids[i]),
            level=g.level,
            parent_id=None if g.parent is None else str(ids[g.parent]),
            entity_names=list(g.members),
        )
        for i, g in enumerate(groups)
    ]
    communities.sort(key=lambda c: (c.level, -len(c.entity_names), c.entity_names))
    return communities


#: Incremental updates place new entities into the stored hierarchy and move no other one;
#: Leiden runs again once the entities added or removed that way since it last ran exceed
#: this share of the entities it partitioned (``Community.drift``), or the graph's total
#: relationship weight moved by this share of its weight then (``Community.baseline_weight``).
DRIFT_LIMIT = 0.1


def total_weight(edges: Iterable[WeightedEdge]) -> float:
    return float(sum(w for a, b, w in edges if a != b))


def arriving_entities(nodes: Iterable[str], previous: Sequence[Community]) -> list[str]:
    """The entities of the graph no stored community holds (sorted): the ones an incremental
    update places, and the only ones whose relationships it reads."""
    placed = {n for c in previous if c.level == 0 for n in c.entity_names}
    return sorted(set(nodes) - placed)


def update_communities(
    room_id: str,
    nodes: Iterable[str],
    edges: Sequence[WeightedEdge],
    previous: Sequence[Community],
    drift_limit: float = DRIFT_LIMIT,
    weight: float | None = None,
) -> list[Community] | None:
    """The previous hierarchy with the graph's new entities placed and its gone ones removed,
    or None when Leiden should run instead (nothing stored, or the drift is over the limit).

    Leiden is a global optimization: even warm-started, one new entity moves many others
    between the large communities, and every community whose members move gets a new report
    (on a 2,000-message room, +1 message left 32 of 92 communities with their members). So a
    small change only adds: a new entity joins, at each level from the top, the community
    (then the child of it) it has the most relationship weight to; one tied to none gets a
    singleton community. Edges between entities already placed move nobody until Leiden runs
    again, which it does once the new entities or the new relationship weight since it last
    ran pass ``DRIFT_LIMIT``. Deterministic: the same previous communities and graph give the same result.

    ``edges`` need only hold the relationships of the arriving entities
    (:func:`arriving_entities`) when ``weight``, the graph's total relationship weight, is
    given; without it, ``edges`` is the whole graph and the weight is summed from it.
    """
    if not previous:
        return None
    nodes = set(nodes)
    placed = {n for c in previous if c.level == 0 for n in c.entity_names}
    new = arriving_entities(nodes, previous)
    gone = placed - nodes
    drift = max(c.drift for c in previous) + len(new) + len(gone)
    if drift > drift_limit * max(len(placed), 1):
        return None
    baseline = max(c.baseline_weight for c in previous)
    if weight is None:
        weight = total_weight((a, b, w) for a, b, w in edges if a in nodes and b in nodes)
    if abs(weight - baseline) > drift_limit * baseline or (baseline == 0 and weight > 0):
        return None

    members = {c.id: set(c.entity_names) - gone for c in previous}
    by_id = {c.id: c for c in previous}
    children: dict[str | None, list[str]] = defaultdict(list)
    for c in sorted(previous, key=lambda c: c.id):
        children[c.parent_id].append(c.id)
    # Only the new entities' ties are needed (nobody else moves): at 100k messages, indexing
    # every edge both ways was most of this function.
    arriving = set(new)
    weight_to: dict[str, dict[str, float]] = defaultdict(dict)
    for a, b, w in edges:
        if a != b and (a in arriving or b in arriving) and a in nodes and b in nodes:
            weight_to[a][b] = weight_to[a].get(b, 0.0) + w
            weight_to[b][a] = weight_to[b].get(a, 0.0) + w
    # node -> the community holding it, per parent (None: the top level)
    holder: dict[str | None, dict[str, str]] = defaultdict(dict)
    for cid, group in members.items():
        for node in group:
            holder[by_id[cid].parent_id][node] = cid
    added: list[Community] = []
    for node in new:
        parent: str | None = None
        level = 0
        while True:
            scores: dict[str, float] = defaultdict(float)
            for neighbour, w in weight_to.get(node, {}).items():
                held = holder[parent].get(neighbour)
                if held is not None:
                    scores[held] += w
            if not scores:
                break
            best = min(scores, key=lambda cid: (-scores[cid], cid))
            members[best].add(node)
            holder[parent][node] = best
            parent, level = best, level + 1
        if level == 0:
            cid = unused_community_id(room_id, 0, [node], members)
            members[cid] = {node}
            holder[None][node] = cid
            added.append(Community(id=cid, level=0, parent_id=None, entity_names=[node]))
            by_id[cid] = added[-1]
    communities = [
        Community(
            id=c.id,
            level=c.level,
            parent_id=c.parent_id,
            entity_names=sorted(members[c.id]),
            drift=drift,
            baseline_weight=baseline,
        )
        for c in [*previous, *added]
        if members[c.id]
    ]
    communities.sort(key=lambda c: (c.level, -len(c.entity_names), c.entity_names))
    return communities
