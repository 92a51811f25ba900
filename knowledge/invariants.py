"""The invariants of DESIGN.md as functions over stored state (run as blocking asset checks)."""

from __future__ import annotations

from dataclasses import dataclass

from knowledge.chat import count_messages
from knowledge.graph import normalize_name
from knowledge.indexing import room_state
from knowledge.platform import Platform
from knowledge.rooms import parse_room_id


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
    graph = await platform.graph.get_graph(room_id)
    names = {e.name for e in graph.entities}
    dangling = [
        f"{r.source} -> {r.target}"
        for r in graph.relationships
        if r.source not in names or r.target not in names
    ]
    return _outcome(
        dangling, "every relationship has both entities", "relationships miss an entity"
    )


async def names_normalized(platform: Platform, room_id: str) -> CheckOutcome:
    graph = await platform.graph.get_graph(room_id)
    bad = [
        e.name
        for e in graph.entities
        if e.name != normalize_name(e.name) or e.name != normalize_name(e.display_name)
    ]
    return _outcome(bad, "every entity name is normalized", "entity names are not normalized")


async def entities_in_communities(platform: Platform, room_id: str) -> CheckOutcome:
    graph = await platform.graph.get_graph(room_id)
    communities = await platform.graph.get_communities(room_id)
    covered = {n for c in communities if c.level == 0 for n in c.entity_names}
    missing = sorted(e.name for e in graph.entities if e.name not in covered)
    return _outcome(
        missing, "every entity is in a level-0 community", "entities are in no community"
    )


async def vectors_match_rows(platform: Platform, room_id: str, kind: str) -> CheckOutcome:
    """``kind`` is chunks, entities, communities (reports) or evidence: vector count = row
    count."""
    if kind == "evidence":
        return await evidence_indexed(platform, room_id)
    state = await room_state(platform, room_id)
    rows = state["reports" if kind == "communities" else kind]
    vectors = state[f"{kind}_vectors"]
    if rows == vectors:
        return CheckOutcome(True, f"{rows} {kind} rows, {vectors} vectors", [])
    return CheckOutcome(False, f"{rows} {kind} rows but {vectors} vectors", [])


async def evidence_indexed(platform: Platform, room_id: str) -> CheckOutcome:
    """Every live message and artifact passage is one point of the evidence index."""
    state = await room_state(platform, room_id)
    async with platform.session() as session:
        messages = await count_messages(session, parse_room_id(room_id))
    points = state["evidence_vectors"]
    passages = state["artifact_chunks"]
    if points == messages + passages:
        return CheckOutcome(True, f"{messages} messages + {passages} passages indexed", [])
    return CheckOutcome(
        False, f"{points} evidence points for {messages} messages + {passages} passages", []
    )
