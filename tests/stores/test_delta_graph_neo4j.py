"""The delta graph build on the Neo4j graph store: the same state as a rebuild.

The seeded sequence of ``tests/knowledge/test_delta_graph.py`` (appends, edits, deletes, a
member joining; delta builds between them; wipe + full build at checkpoints), with the graph in
the Neo4j server of the run, so ``Neo4jGraphStore.apply_graph_changes`` and
``get_relationships`` write and read the changed rows.
"""

from __future__ import annotations

import random

import pytest

from knowledge.platform import open_platform
from knowledge.settings import Settings
from knowledge.stores.neo4j_graph import Neo4jGraphStore
from tests.knowledge.test_delta_graph import Room, run_sequence

pytestmark = pytest.mark.neo4j


async def test_delta_builds_on_neo4j_leave_the_state_of_a_rebuild(
    neo4j_settings: Settings,
) -> None:
    tuned = neo4j_settings.model_copy(update={"chunk_tokens": 48, "chunk_overlap_tokens": 8})
    async with open_platform(tuned) as platform:
        assert isinstance(platform.graph, Neo4jGraphStore)
        room = Room(platform, random.Random(0))
        try:
            modes = await run_sequence(platform, 4, steps=12, checkpoints=2, room=room)
        finally:
            if room.room_id:
                await platform.graph.wipe_room(room.room_id)
                await platform.vectors.wipe_room(room.room_id)
    assert modes[0] == "full"
    assert modes.count("delta") >= 4, modes
