"""The room graph: merged entities and relationships, and how extractions merge into them.

Invariants (DESIGN.md): ``name`` is lower-cased and trimmed, the first-seen casing is kept in
``display_name``; merging is by (room, name); relationships are undirected, one per entity pair
(``source < target``), weights summed; every fact keeps the chunk ids it came from.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
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
    #: ``knowledge.communities.graph_fingerprint`` of the graph the communities were detected
    #: on (the same on every community of a room); an unchanged graph skips detection.
    graph_fingerprint: str | None = field(default=None, compare=False)
    #: Entities added or removed by incremental updates since Leiden last ran (the same on
    #: every community of a room; ``knowledge.communities.update_communities``).
    drift: int = field(default=0, compare=False)
    #: The graph's total relationship weight when Leiden last ran (likewise the same on all).
    baseline_weight: float = field(default=0.0, compare=False)


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


@dataclass(frozen=True)
class TopologyDigest:
    """What community detection needs of a graph before it reads the graph: the entity names
    (sorted), the total relationship weight, and a digest of the nodes and weighted edges
    (equal graphs give equal digests; any change of a node, an edge or a weight changes it).
    Each store computes its own digest: compare digests of one store only."""

    nodes: list[str]
    total_weight: float
    digest: str


@dataclass
class RoomGraph:
    entities: list[Entity]
    relationships: list[Relationship]


@dataclass(frozen=True)
class EntityMention:
    """One entity of one chunk's extraction, as merging sees it (``name`` normalized)."""

    name: str
    display_name: str
    type: str
    description: str


@dataclass(frozen=True)
class RelationshipMention:
    """One relationship of one chunk's extraction that counts (both ends are entities of the
    same extraction, not a self-loop), its pair ordered ``source < target``."""

    source: str
    target: str
    weight: float
    description: str


def extraction_mentions(
    extraction: Extraction,
) -> tuple[list[EntityMention], list[RelationshipMention]]:
    """What one chunk contributes to the merged graph, in extraction order."""
    entities = []
    for entity in extraction.entities:
        key = normalize_name(entity.name)
        if not key:
            continue
        entities.append(
            EntityMention(
                key, " ".join(entity.name.split()), entity.type.upper(), entity.description
            )
        )
    # A relationship counts only between entities of its own extraction.
    known = {normalize_name(e.name) for e in extraction.entities}
    relationships = []
    for rel in extraction.relationships:
        a, b = normalize_name(rel.source), normalize_name(rel.target)
        if a == b or a not in known or b not in known:
            continue
        pair = (a, b) if a < b else (b, a)
        relationships.append(RelationshipMention(pair[0], pair[1], rel.weight, rel.description))
    return entities, relationships


class GraphMerger:
    """Entity and relationship mentions added in chunk order, merged into a room graph.

    The one place merging happens: :func:`merge_extractions` feeds it every chunk, the delta
    graph build (``knowledge.indexing.graph``) feeds it the stored mentions of the names and
    pairs that changed, in the same (chunk position) order, and so gets the same rows."""

    def __init__(self) -> None:
        self.display: dict[str, str] = {}
        self.types: dict[str, Counter[str]] = {}
        self.descriptions: dict[str, list[str]] = {}
        # Ordered sets (dicts): a busy entity's chunks number in the thousands, and a list's
        # membership test made merging it quadratic.
        self.entity_chunks: dict[str, dict[str, None]] = {}
        self.mentions: Counter[str] = Counter()
        self.weights: dict[tuple[str, str], float] = {}
        self.rel_descriptions: dict[tuple[str, str], list[str]] = {}
        self.rel_chunks: dict[tuple[str, str], dict[str, None]] = {}

    def add_entity(self, chunk_id: str, mention: EntityMention) -> None:
        key = mention.name
        self.display.setdefault(key, mention.display_name)
        self.types.setdefault(key, Counter())[mention.type] += 1
        self.mentions[key] += 1
        _add_unique(self.descriptions.setdefault(key, []), mention.description, MAX_DESCRIPTIONS)
        if chunk_id:
            self.entity_chunks.setdefault(key, {})[chunk_id] = None

    def resume_entity(
        self,
        key: str,
        display_name: str,
        type_counts: Mapping[str, int],
        descriptions: Sequence[str],
        mentions: int,
    ) -> None:
        """Start ``key`` from a stored fold of its earlier mentions (a left fold resumes from
        its state): then adding the later mentions gives what folding them all gives, except
        that ``entity(key).source_chunk_ids`` holds only the chunks added since."""
        self.display[key] = display_name
        self.types[key] = Counter(dict(type_counts))
        self.descriptions[key] = list(descriptions)
        self.mentions[key] = mentions

    def add_relationship(self, chunk_id: str, mention: RelationshipMention) -> None:
        pair = (mention.source, mention.target)
        self.weights[pair] = self.weights.get(pair, 0.0) + mention.weight
        _add_unique(
            self.rel_descriptions.setdefault(pair, []), mention.description, MAX_DESCRIPTIONS
        )
        if chunk_id:
            self.rel_chunks.setdefault(pair, {})[chunk_id] = None

    def add_extraction(self, chunk_id: str, extraction: Extraction) -> None:
        entities, relationships = extraction_mentions(extraction)
        for entity in entities:
            self.add_entity(chunk_id, entity)
        for rel in relationships:
            self.add_relationship(chunk_id, rel)

    def entity(self, key: str) -> Entity:
        return Entity(
            name=key,
            display_name=self.display[key],
            type=_merged_type(self.types[key]),
            description=" ".join(self.descriptions[key]),
            source_chunk_ids=list(self.entity_chunks.get(key, ())),
            mentions=self.mentions[key],
            descriptions=self.descriptions[key],
        )

    def relationship(self, pair: tuple[str, str]) -> Relationship:
        return Relationship(
            source=pair[0],
            target=pair[1],
            weight=float(self.weights[pair]),
            description=" ".join(self.rel_descriptions[pair]),
            source_chunk_ids=list(self.rel_chunks.get(pair, ())),
        )

    def graph(self) -> RoomGraph:
        return RoomGraph(
            entities=[self.entity(key) for key in sorted(self.display)],
            relationships=[self.relationship(pair) for pair in sorted(self.weights)],
        )


def merge_extractions(extractions: Iterable[tuple[str, Extraction]]) -> RoomGraph:
    """Merge per-chunk extractions (in chunk order) into one room graph.

    Deterministic: the same extractions in the same order give the same graph.
    """
    merger = GraphMerger()
    for chunk_id, extraction in extractions:
        merger.add_extraction(chunk_id, extraction)
    return merger.graph()


def _add_unique(values: list[str], value: str, limit: int | None = None) -> None:
    if value and value not in values and (limit is None or len(values) < limit):
        values.append(value)


def _merged_type(counts: Counter[str]) -> str:
    specific = {t: n for t, n in counts.items() if t != "ENTITY"}
    pool = specific or dict(counts)
    return max(sorted(pool), key=lambda t: pool[t])
