"""The room graph: merged entities and relationships, and how extractions merge into them.

Invariants (DESIGN.md): ``name`` is lower-cased and trimmed, the first-seen casing is kept in
``display_name``; merging is by (room, name); relationships are undirected, one per entity pair
(``source < target``), weights summed; every fact keeps the chunk ids it came from.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from knowledge.extraction.base import Extraction

# A merged entity keeps at most this many distinct descriptions (offline summary = their join).
MAX_DESCRIPTIONS = 5


def normalize_name(name: str) -> str:
    return " ".join(name.split()).lower()


@dataclass
class Entity:
    name: str
    display_name: str
    type: str
    description: str = ""
    source_chunk_ids: list[str] = field(default_factory=list)
    mentions: int = 0
    # The distinct descriptions merged into ``description`` (not stored; used to summarize).
    descriptions: list[str] = field(default_factory=list, compare=False, repr=False)


@dataclass
class Relationship:
    source: str
    target: str
    weight: float
    description: str = ""
    source_chunk_ids: list[str] = field(default_factory=list)

    @property
    def pair(self) -> tuple[str, str]:
        return (self.source, self.target)


@dataclass
class Community:
    id: str
    level: int
    parent_id: str | None
    entity_names: list[str]


@dataclass
class CommunityReport:
    community_id: str
    level: int
    title: str
    summary: str
    findings: list[dict[str, str]]
    rank: float
    content_hash: str
    source_chunk_ids: list[str] = field(default_factory=list)
    generated_at: datetime | None = None


@dataclass
class RoomGraph:
    entities: list[Entity]
    relationships: list[Relationship]


def merge_extractions(extractions: Iterable[tuple[str, Extraction]]) -> RoomGraph:
    """Merge per-chunk extractions (in chunk order) into one room graph.

    Deterministic: the same extractions in the same order give the same graph.
    """
    display: dict[str, str] = {}
    types: dict[str, Counter[str]] = {}
    descriptions: dict[str, list[str]] = {}
    entity_chunks: dict[str, list[str]] = {}
    mentions: Counter[str] = Counter()
    weights: dict[tuple[str, str], float] = {}
    rel_descriptions: dict[tuple[str, str], list[str]] = {}
    rel_chunks: dict[tuple[str, str], list[str]] = {}

    for chunk_id, extraction in extractions:
        for entity in extraction.entities:
            key = normalize_name(entity.name)
            if not key:
                continue
            display.setdefault(key, " ".join(entity.name.split()))
            types.setdefault(key, Counter())[entity.type.upper()] += 1
            mentions[key] += 1
            _add_unique(descriptions.setdefault(key, []), entity.description, MAX_DESCRIPTIONS)
            _add_unique(entity_chunks.setdefault(key, []), chunk_id)
        # A relationship counts only between entities of its own extraction.
        known = {normalize_name(e.name) for e in extraction.entities}
        for rel in extraction.relationships:
            a, b = normalize_name(rel.source), normalize_name(rel.target)
            if a == b or a not in known or b not in known:
                continue
            pair = (a, b) if a < b else (b, a)
            weights[pair] = weights.get(pair, 0.0) + rel.weight
            _add_unique(rel_descriptions.setdefault(pair, []), rel.description, MAX_DESCRIPTIONS)
            _add_unique(rel_chunks.setdefault(pair, []), chunk_id)

    entities = [
        Entity(
            name=key,
            display_name=display[key],
            type=_merged_type(types[key]),
            description=" ".join(descriptions[key]),
            source_chunk_ids=entity_chunks[key],
            mentions=mentions[key],
            descriptions=descriptions[key],
        )
        for key in sorted(display)
    ]
    relationships = [
        Relationship(
            source=a,
            target=b,
            weight=float(weights[(a, b)]),
            description=" ".join(rel_descriptions[(a, b)]),
            source_chunk_ids=rel_chunks[(a, b)],
        )
        for a, b in sorted(weights)
    ]
    return RoomGraph(entities=entities, relationships=relationships)


def _add_unique(values: list[str], value: str, limit: int | None = None) -> None:
    if value and value not in values and (limit is None or len(values) < limit):
        values.append(value)


def _merged_type(counts: Counter[str]) -> str:
    specific = {t: n for t, n in counts.items() if t != "ENTITY"}
    pool = specific or dict(counts)
    return max(sorted(pool), key=lambda t: pool[t])
