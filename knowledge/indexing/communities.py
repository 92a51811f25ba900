"""Step 4: hierarchical Leiden communities of the room graph."""

from __future__ import annotations

import time
from dataclasses import dataclass

from knowledge.communities import hierarchical_communities
from knowledge.platform import Platform


@dataclass
class CommunityBuild:
    total: int
    levels: int
    unchanged: int
    top_level: int
    largest: int
    seconds: float


async def detect_communities(platform: Platform, room_id: str) -> CommunityBuild:
    started = time.perf_counter()
    # A store that runs Leiden itself (Neo4j: GDS) does; otherwise Leiden runs here in Python.
    from knowledge.stores.base import CommunityDetector

    if isinstance(platform.graph, CommunityDetector):
        communities = await platform.graph.detect_communities(
            room_id,
            seed=platform.settings.leiden_seed,
            max_cluster_size=platform.settings.leiden_max_cluster_size,
        )
    else:
        graph = await platform.graph.get_graph(room_id)
        communities = hierarchical_communities(
            room_id,
            (e.name for e in graph.entities),
            [(r.source, r.target, r.weight) for r in graph.relationships],
            seed=platform.settings.leiden_seed,
            max_cluster_size=platform.settings.leiden_max_cluster_size,
        )
    before = {c.id for c in await platform.graph.get_communities(room_id)}
    await platform.graph.replace_communities(room_id, communities)
    return CommunityBuild(
        total=len(communities),
        levels=len({c.level for c in communities}),
        unchanged=sum(1 for c in communities if c.id in before),
        top_level=sum(1 for c in communities if c.level == 0),
        largest=max((len(c.entity_names) for c in communities), default=0),
        seconds=time.perf_counter() - started,
    )
