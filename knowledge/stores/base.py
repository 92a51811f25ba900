"""Store protocols. Every store is partitioned by room: nothing crosses ``room_id``.

Two implementations each (PostgreSQL tables / pgvector for the embedded default, Neo4j / Qdrant
in production); one contract test suite runs against all of them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from knowledge.graph import (
    Community,
    CommunityReport,
    Entity,
    Relationship,
    RoomGraph,
    TopologyDigest,
)

CHUNKS = "chunks"
ENTITIES = "entities"
COMMUNITIES = "communities"
#: The units of evidence: one point per message and per artifact passage, with a BM25 index.
EVIDENCE = "evidence"
COLLECTIONS = (CHUNKS, ENTITIES, COMMUNITIES, EVIDENCE)


@dataclass(frozen=True)
class VectorRecord:
    id: str
    text: str
    #: Empty for a lexical-only point: found by BM25 and payload, never by dense search.
    vector: list[float]
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VectorHit:
    id: str
    score: float
    text: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class PointFilter:
    """Conditions on a point's payload: ``speaker`` one of ``speakers``, ``ts`` (epoch seconds)
    within [since, until]. Empty / None means no condition."""

    speakers: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None

    @property
    def empty(self) -> bool:
        return not self.speakers and self.since is None and self.until is None


#: What ``GraphStore.counts`` counts.
COUNT_KINDS = ("entities", "relationships", "communities", "reports")


def counted_kinds(kinds: Collection[str]) -> list[str]:
    """The kinds a ``counts`` call asks for, in :data:`COUNT_KINDS` order; an unknown kind is a
    ``ValueError`` (the same for every store)."""
    if unknown := set(kinds) - set(COUNT_KINDS):
        raise ValueError(f"unknown kinds to count: {sorted(unknown)}")
    return [k for k in COUNT_KINDS if k in kinds]


class GraphStore(Protocol):
    async def ensure_schema(self) -> None: ...

    async def replace_graph(self, room_id: str, graph: RoomGraph) -> None:
        """Make the room's entities and relationships exactly ``graph`` (idempotent)."""
        ...

    async def apply_graph_changes(
        self,
        room_id: str,
        entities: Sequence[Entity],
        relationships: Sequence[Relationship],
        deleted_entities: Sequence[str] = (),
        deleted_pairs: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Write only what changed, in one transaction: delete the pairs (``source <
        target``) and the entities named (with every relationship of theirs), then upsert
        ``entities`` and ``relationships`` (a relationship needs both its entities stored)."""
        ...

    async def get_graph(self, room_id: str, provenance: bool = True) -> RoomGraph:
        """The room's graph; ``provenance=False`` may leave ``source_chunk_ids`` empty (the
        largest columns) for readers that do not use them."""
        ...

    async def get_relationships(
        self, room_id: str, pairs: Sequence[tuple[str, str]]
    ) -> list[Relationship]:
        """The stored relationships of these pairs (``source < target``), sorted by pair."""
        ...

    async def get_entities(self, room_id: str, names: Sequence[str]) -> list[Entity]: ...

    async def entity_names(self, room_id: str) -> list[str]: ...

    async def entities_outside_communities(self, room_id: str) -> list[str]:
        """The room's entity names in no level-0 community, sorted (an invariant: every
        entity has one after a refresh; answered without reading the communities out)."""
        ...

    async def entity_names_matching(
        self, room_id: str, names: Collection[str], words: Collection[str] = ()
    ) -> list[str]:
        """The room's entity names that are among ``names`` or have one of ``words`` as a
        whole word, sorted: what a question's words can name, without reading every name of
        a room that has tens of thousands."""
        ...

    async def entity_labels(self, room_id: str) -> list[tuple[str, str]]:
        """``(name, display_name)`` of every entity of the room, by name."""
        ...

    async def entity_mentions(self, room_id: str, names: Collection[str]) -> dict[str, int]:
        """``name -> mentions`` of those of ``names`` that are entities of the room (what a
        report needs to pick a large community's most mentioned members, without reading
        every member whole)."""
        ...

    async def topology(self, room_id: str) -> tuple[list[str], list[tuple[str, str, float]]]:
        """The entity names (sorted) and weighted relationships ``(source, target, weight)``
        of the room, without descriptions or provenance: what community detection reads."""
        ...

    async def topology_digest(self, room_id: str) -> TopologyDigest:
        """The room's entity names, total weight and graph digest, without reading the edges
        out of the store where it can (a refresh checks them before it reads any edge)."""
        ...

    async def relationships_touching(
        self, room_id: str, names: Collection[str]
    ) -> list[tuple[str, str, float]]:
        """``(source, target, weight)`` of the room's relationships with an end in ``names``,
        by pair (what placing new entities into stored communities reads)."""
        ...

    async def dangling_relationships(self, room_id: str) -> list[tuple[str, str]]:
        """``(source, target)`` of the room's relationships one of whose ends is no entity of
        the room, sorted (an invariant check; answered by the store, without reading the
        graph)."""
        ...

    async def neighbourhood(
        self, room_id: str, seeds: Sequence[str], hops: int, limit: int, provenance: bool = True
    ) -> RoomGraph:
        """Entities within ``hops`` of the seeds (at most ``limit``) and the edges among them;
        without ``provenance``, with no source chunk ids (a busy entity has thousands: the
        graph generator asks :meth:`top_source_chunks` for the few it needs)."""
        ...

    async def top_source_chunks(
        self, room_id: str, weights: Sequence[tuple[str, float]], limit: int
    ) -> list[tuple[str, float]]:
        """The ``limit`` chunks that support the weighted entities most, with their votes (the
        sum of the weights of the entities each supports), best first; ties by the first entity
        (in ``weights`` order) that lists it, then its place in that entity's list."""
        ...

    async def replace_communities(self, room_id: str, communities: Sequence[Community]) -> None: ...

    async def apply_community_changes(
        self,
        room_id: str,
        upserts: Sequence[Community],
        deletes: Sequence[str],
        fingerprint: str | None,
        drift: int,
        baseline_weight: float,
    ) -> None:
        """Write ``upserts`` (by id), delete the communities ``deletes``, and stamp every
        community of the room with the room-wide ``fingerprint``, ``drift`` and
        ``baseline_weight``: an incremental update rewrites only the communities it changed."""
        ...

    async def get_communities(
        self,
        room_id: str,
        ids: Collection[str] | None = None,
        containing: Collection[str] | None = None,
    ) -> list[Community]:
        """The room's communities by level and id; given ``ids`` and/or ``containing``, only
        those with one of the ids or with one of those entities among their members (the
        reports step and the global route need a few communities, not a room's thousands)."""
        ...

    async def upsert_reports(self, room_id: str, reports: Sequence[CommunityReport]) -> None: ...

    async def delete_reports(self, room_id: str, community_ids: Sequence[str]) -> None: ...

    async def get_reports(
        self, room_id: str, community_ids: Sequence[str] | None = None
    ) -> list[CommunityReport]:
        """The room's reports (of those communities only, when given), best rank first."""
        ...

    async def counts(self, room_id: str, kinds: Collection[str] = COUNT_KINDS) -> dict[str, int]:
        """Counts of the room's ``kinds`` (of :data:`COUNT_KINDS`: entities, relationships,
        communities, reports), keyed by kind. Ask only for those needed: a large room's
        relationships are tens of thousands of rows to count."""
        ...

    async def wipe_room(self, room_id: str) -> dict[str, int]:
        """Delete every entity, relationship, community and report of the room (a rebuild's
        first step, and a deleted room's purge). Returns how many each table / node label /
        relationship type lost, keyed ``"<store>:<name>"`` (``"neo4j:Entity"``), zeros
        included; idempotent (all zeros the second time)."""
        ...


@runtime_checkable
class CommunityDetector(Protocol):
    """Optional capability of a graph store: hierarchical Leiden communities computed inside the
    store (Neo4j: GDS). Same shape as :func:`knowledge.communities.hierarchical_communities`:
    level 0 partitions every entity (singletons for entities without relationships), a larger
    community is split at the next level, ids hash (room, level, members). A store without it
    gets communities computed in Python from :meth:`GraphStore.get_graph`."""

    async def detect_communities(
        self,
        room_id: str,
        seed: int,
        max_cluster_size: int,
        resolution: float = 1.0,
        previous: Sequence[Community] = (),
    ) -> list[Community]:
        """``previous``: the stored communities, to warm-start Leiden from (the caller keeps
        their ids, ``knowledge.communities.inherit_ids``)."""
        ...


class VectorStore(Protocol):
    async def ensure_collection(self, collection: str, dim: int) -> None: ...

    async def upsert(
        self, collection: str, room_id: str, records: Sequence[VectorRecord]
    ) -> None: ...

    async def delete(self, collection: str, room_id: str, ids: Sequence[str]) -> None: ...

    async def fingerprints(
        self,
        collection: str,
        room_id: str,
        ids: Sequence[str] | None = None,
        kind: str | None = None,
    ) -> dict[str, str]:
        """Point id -> the ``fingerprint`` payload it was written with (to skip unchanged).

        ``ids``: only those points (the ones that exist), read by id, so the cost is that of
        ``ids`` and not of the room. ``kind``: only points whose payload ``kind`` is this (the
        evidence's ``message`` / ``artifact``)."""
        ...

    async def count(self, collection: str, room_id: str) -> int: ...

    async def search(
        self,
        collection: str,
        room_id: str,
        query_text: str,
        vector: list[float],
        limit: int,
    ) -> list[VectorHit]:
        """Hybrid search (dense + lexical, reciprocal-rank fused) within one room."""
        ...

    async def search_dense(
        self,
        collection: str,
        room_id: str,
        vector: list[float],
        limit: int,
        where: PointFilter | None = None,
    ) -> list[VectorHit]:
        """Nearest points by cosine similarity (score = cosine), within one room."""
        ...

    async def search_lexical(
        self,
        collection: str,
        room_id: str,
        terms: Sequence[str],
        limit: int,
        where: PointFilter | None = None,
    ) -> list[VectorHit]:
        """Okapi BM25 over the points' texts (terms from :func:`knowledge.lexical.analyze`),
        IDF and average length taken over the room's points of the collection."""
        ...

    async def search_lexical_many(
        self,
        collection: str,
        room_id: str,
        queries: Sequence[Sequence[str]],
        limit: int,
        where: PointFilter | None = None,
    ) -> list[list[VectorHit]]:
        """Several BM25 queries in one round trip: the result of :meth:`search_lexical` for
        each query, in order. ``search_lexical`` is this with one query."""
        ...

    async def term_stats(
        self, collection: str, room_id: str, terms: Sequence[str]
    ) -> tuple[int, dict[str, int]]:
        """The room's number of points in the collection and each term's document frequency
        (the IDF the lexical search uses; rerankers weigh query terms with it)."""
        ...

    async def wipe_room(self, room_id: str) -> dict[str, int]:
        """Delete the room's points from every collection the store holds (and any index
        kept beside them). Returns how many each table / collection lost, keyed
        ``"<store>:<name>"`` (``"qdrant:coagent_chunks"``), zeros included; idempotent."""
        ...


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[VectorHit]], limit: int, k: int = 60
) -> list[VectorHit]:
    scores: dict[str, float] = {}
    hits: dict[str, VectorHit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking):
            scores[hit.id] = scores.get(hit.id, 0.0) + 1.0 / (k + rank + 1)
            hits.setdefault(hit.id, hit)
    # Ties go by text before id: ids of communities and chunks hash the room id, so the same
    # content in another room (or a rebuilt bench room) would rank differently.
    ordered = sorted(scores, key=lambda i: (-scores[i], hits[i].text, i))[:limit]
    return [
        VectorHit(id=i, score=scores[i], text=hits[i].text, payload=hits[i].payload)
        for i in ordered
    ]
