"""Step 4: hierarchical Leiden communities of the room graph.

Delta: the communities are stored with the fingerprint of the graph they were detected on
(the store's digest of its nodes and weighted edges, and the parameters; the digest is
computed in the store, so no edge is read out to find the graph unchanged); an unchanged graph
skips detection and writes nothing.
A small change is applied incrementally (``update_communities``): new entities join the
stored communities they are most tied to and nobody else moves, so the reports step rewrites
only the reports of the communities that gained or lost members; only those are written, the
others get the new fingerprint and drift. Once the entities added or
removed that way exceed ``DRIFT_LIMIT`` of the graph, Leiden runs again, warm-started from the
stored assignment, and each community inherits the id of the previous one it overlaps most
(``knowledge.communities``), so the hierarchy keeps most of its ids.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from knowledge.communities import (
    arriving_entities,
    graph_fingerprint,
    hierarchical_communities,
    inherit_ids,
    update_communities,
)
from knowledge.graph import Community
from knowledge.indexing.changes import log_graph_changes
from knowledge.platform import Platform


@dataclass
class CommunityBuild:
    total: int
    levels: int
    #: Communities whose id was stored before (same members, or inherited by overlap).
    unchanged: int
    top_level: int
    largest: int
    seconds: float
    #: Ids kept from the previous detection (inherited or same members), of ``previous``.
    kept: int = 0
    previous: int = 0
    #: The graph was unchanged since the last detection: nothing was run or written.
    skipped: bool = False
    #: Leiden started from the previous assignment.
    warm_start: bool = False
    #: "skipped" (graph unchanged), "incremental" (entities placed, nobody moved) or "leiden".
    mode: str = "leiden"
    #: Entities placed or removed incrementally since Leiden last ran.
    drift: int = 0
    #: Relationships read out of the graph store (counted: the whole graph only when Leiden
    #: runs; an incremental update reads those of the arriving entities).
    relationships_read: int = 0


async def detect_communities(platform: Platform, room_id: str) -> CommunityBuild:
    started = time.perf_counter()
    settings = platform.settings
    seed, max_size = settings.leiden_seed, settings.leiden_max_cluster_size
    previous = await platform.graph.get_communities(room_id)
    # The digest first: the whole topology is read only when Leiden runs (at 100k messages,
    # reading and hashing it was most of a one-message refresh of this step).
    topology = await platform.graph.topology_digest(room_id)
    fingerprint = graph_fingerprint(topology, seed, max_size)
    if previous and all(c.graph_fingerprint == fingerprint for c in previous):
        return _build(previous, previous, started, skipped=True)
    arriving = arriving_entities(topology.nodes, previous) if previous else []
    touching = await platform.graph.relationships_touching(room_id, arriving)
    placed = update_communities(
        room_id, topology.nodes, touching, previous, weight=topology.total_weight
    )
    if placed is not None:
        for community in placed:
            community.graph_fingerprint = fingerprint
        # Only the communities that gained or lost members are written; the rest get the
        # room-wide fingerprint and drift (rewriting every community for those was most of
        # this step at 100k messages).
        changed = changed_communities(previous, placed)
        await log_graph_changes(platform, room_id, community_ids=changed)
        await platform.graph.apply_community_changes(
            room_id,
            [c for c in placed if c.id in changed],
            sorted(changed - {c.id for c in placed}),
            fingerprint,
            max((c.drift for c in placed), default=0),
            max((c.baseline_weight for c in placed), default=0.0),
        )
        return _build(placed, previous, started, mode="incremental", read=len(touching))

    # A store that runs Leiden itself (Neo4j: GDS) does; otherwise Leiden runs here in Python.
    from knowledge.stores.base import CommunityDetector

    nodes, edges = await platform.graph.topology(room_id)
    if isinstance(platform.graph, CommunityDetector):
        found = await platform.graph.detect_communities(
            room_id, seed=seed, max_cluster_size=max_size, previous=previous
        )
        communities = inherit_ids(room_id, found, previous)
    else:
        communities = hierarchical_communities(
            room_id, nodes, edges, seed=seed, max_cluster_size=max_size, previous=previous
        )
    baseline = topology.total_weight
    for community in communities:
        community.graph_fingerprint = fingerprint
        community.baseline_weight = baseline
    await _replace(platform, room_id, previous, communities)
    return _build(
        communities, previous, started, warm_start=bool(previous), read=len(touching) + len(edges)
    )


def changed_communities(previous: list[Community], current: list[Community]) -> set[str]:
    """Ids of the communities whose report may differ: new, gone, or with other members, level
    or parent (a report's content is its members' and their relationships')."""

    def key(c: Community) -> tuple[object, ...]:
        return (sorted(c.entity_names), c.level, c.parent_id)

    before = {c.id: key(c) for c in previous}
    after = {c.id: key(c) for c in current}
    return {i for i in before.keys() | after.keys() if before.get(i) != after.get(i)}


async def _replace(
    platform: Platform, room_id: str, previous: list[Community], current: list[Community]
) -> None:
    """Store the communities, the changed ones logged first for the reports step."""
    await log_graph_changes(platform, room_id, community_ids=changed_communities(previous, current))
    await platform.graph.replace_communities(room_id, current)


def _build(
    communities: list[Community],
    previous: list[Community],
    started: float,
    skipped: bool = False,
    warm_start: bool = False,
    mode: str = "leiden",
    read: int = 0,
) -> CommunityBuild:
    before = {c.id for c in previous}
    kept = sum(1 for c in communities if c.id in before)
    return CommunityBuild(
        total=len(communities),
        levels=len({c.level for c in communities}),
        unchanged=kept,
        top_level=sum(1 for c in communities if c.level == 0),
        largest=max((len(c.entity_names) for c in communities), default=0),
        seconds=time.perf_counter() - started,
        kept=kept,
        previous=len(previous),
        skipped=skipped,
        warm_start=warm_start,
        mode="skipped" if skipped else mode,
        drift=max((c.drift for c in communities), default=0),
        relationships_read=read,
    )
