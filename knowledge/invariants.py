"""The invariants of DESIGN.md as functions over stored state (run as blocking asset checks)."""

from __future__ import annotations

from dataclasses import dataclass

from knowledge.chat import count_messages
from knowledge.graph import normalize_name
from knowledge.indexing.room import chunk_counts
from knowledge.platform import Platform
from knowledge.rooms import parse_room_id
from knowledge.stores.base import EVIDENCE


@dataclass
class CheckOutcome:
    passed: bool
    description: str
    examples: list[str]


def _outcome(problems: list[str], ok: str, bad: str) -> CheckOutcome:
    if problems:
        return CheckOutcome(False, f"{len(problems)} {bad}", problems[:10])
    return CheckOutcome(True, ok, [])


async def relationships_have_entities(platform: Platform, room_id: str) -> CheckOutcome:
    # Answered by the store: reading the topology to look for them cost 0.2 s of every
    # refresh run at 100k messages (a read of the whole graph cost seconds).
    dangling = [f"{a} -> {b}" for a, b in await platform.graph.dangling_relationships(room_id)]
    return _outcome(
        dangling, "every relationship has both entities", "relationships miss an entity"
    )


async def names_normalized(platform: Platform, room_id: str) -> CheckOutcome:
    bad = [
        name
        for name, display in await platform.graph.entity_labels(room_id)
        if name != normalize_name(name) or name != normalize_name(display)
    ]
    return _outcome(bad, "every entity name is normalized", "entity names are not normalized")


async def entities_in_communities(platform: Platform, room_id: str) -> CheckOutcome:
    # Answered by the store: reading every name and community out cost 80-190 ms of every
    # refresh run at 100k messages.
    missing = await platform.graph.entities_outside_communities(room_id)
    return _outcome(
        missing, "every entity is in a level-0 community", "entities are in no community"
    )


async def vectors_match_rows(platform: Platform, room_id: str, kind: str) -> CheckOutcome:
    """``kind`` is chunks, entities, communities (reports) or evidence: vector count = row
    count (only the two counts are read)."""
    if kind == "evidence":
        return await evidence_indexed(platform, room_id)
    if kind == "chunks":
        rows = (await chunk_counts(platform, room_id))[0]
    else:
        key = "reports" if kind == "communities" else kind
        rows = (await platform.graph.counts(room_id, [key]))[key]
    vectors = await platform.vectors.count(kind, room_id)
    if rows == vectors:
        return CheckOutcome(True, f"{rows} {kind} rows, {vectors} vectors", [])
    return CheckOutcome(False, f"{rows} {kind} rows but {vectors} vectors", [])


async def evidence_indexed(platform: Platform, room_id: str) -> CheckOutcome:
    """Every live message and artifact passage is one point of the evidence index."""
    async with platform.session() as session:
        messages = await count_messages(session, parse_room_id(room_id))
    passages = (await chunk_counts(platform, room_id))[1]
    points = await platform.vectors.count(EVIDENCE, room_id)
    if points == messages + passages:
        return CheckOutcome(True, f"{messages} messages + {passages} passages indexed", [])
    return CheckOutcome(
        False, f"{points} evidence points for {messages} messages + {passages} passages", []
    )
