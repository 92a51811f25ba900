"""The blocking checks (``knowledge.invariants``) pass on an indexed room and catch each kind
of broken state: a dangling relationship, a name not normalized, an entity in no community, a
missing vector, an unindexed message."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from knowledge import invariants
from knowledge.indexing import index_room
from knowledge.platform import Platform
from knowledge.stores.base import ENTITIES, EVIDENCE
from tests.conftest import make_room

LINES = [
    ("Ann Lee", "Ann Lee met Bob Stone in Paris about Project Atlas."),
    ("Bob Stone", "Project Atlas ships in May, Bob Stone says; Ann Lee agrees."),
    ("Ann Lee", "Carla Diaz will review Project Atlas with Bob Stone in Paris."),
    ("Carla Diaz", "Paris is booked; Carla Diaz and Ann Lee fly on Monday."),
]


async def all_checks(platform: Platform, room: str) -> dict[str, bool]:
    outcomes = {
        "relationships": await invariants.relationships_have_entities(platform, room),
        "names": await invariants.names_normalized(platform, room),
        "communities": await invariants.entities_in_communities(platform, room),
        "chunk vectors": await invariants.vectors_match_rows(platform, room, "chunks"),
        "entity vectors": await invariants.vectors_match_rows(platform, room, "entities"),
        "report vectors": await invariants.vectors_match_rows(platform, room, "communities"),
        "evidence": await invariants.vectors_match_rows(platform, room, "evidence"),
    }
    return {name: outcome.passed for name, outcome in outcomes.items()}


async def execute(platform: Platform, sql: str, **params: object) -> None:
    async with platform.engine.begin() as conn:
        await conn.execute(text(sql), params)


@pytest.fixture
async def room(platform: Platform) -> str:
    room_id = await make_room(platform, LINES)
    await index_room(platform, room_id)
    assert all((await all_checks(platform, room_id)).values())
    return room_id


BREAKS = {
    "relationships": (
        "INSERT INTO graph_relationships (room_id, source, target, description, weight, "
        "source_chunk_ids) VALUES (:room, 'ann lee', 'nobody here', '', 1, '{}')"
    ),
    "names": (
        "INSERT INTO graph_entities (room_id, name, display_name, type, description, "
        "source_chunk_ids, mentions) VALUES (:room, 'Not Normal', 'Not Normal', 'ENTITY', '', "
        "'{}', 1)"
    ),
    "communities": (
        "INSERT INTO graph_entities (room_id, name, display_name, type, description, "
        "source_chunk_ids, mentions) VALUES (:room, 'loner', 'Loner', 'ENTITY', '', '{}', 1)"
    ),
}


@pytest.mark.parametrize("broken", sorted(BREAKS))
async def test_each_graph_check_catches_its_broken_state(
    platform: Platform, room: str, broken: str
) -> None:
    await execute(platform, BREAKS[broken], room=room)
    failed = {name for name, passed in (await all_checks(platform, room)).items() if not passed}
    assert broken in failed


@pytest.mark.parametrize(
    ("collection", "check"), [(ENTITIES, "entity vectors"), (EVIDENCE, "evidence")]
)
async def test_a_missing_vector_fails_its_check(
    platform: Platform, room: str, collection: str, check: str
) -> None:
    await execute(
        platform,
        "DELETE FROM vector_points WHERE id = (SELECT min(id) FROM vector_points "
        "WHERE collection = :c AND room_id = :room)",
        c=collection,
        room=room,
    )
    checks = await all_checks(platform, room)
    assert not checks[check]
    assert all(passed for name, passed in checks.items() if name != check)
