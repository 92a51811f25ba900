from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, StrictBool

from knowledge.retrieval.pipeline import MAX_TOP_K
from knowledge.search import MAX_QUESTION_CHARS
from serving.schemas import Text


class BuildIn(BaseModel):
    #: True: wipe the room's graph and rebuild it; false: incremental refresh.
    full: StrictBool = False


class BuildOut(BaseModel):
    room_id: uuid.UUID
    full: bool
    event_id: str
    #: Id of the ``room.rebuild_requested`` entry in ``graphrag:events``; None when Redis was
    #: unreachable (the event is in the outbox and is appended once Redis is back).
    stream_id: str | None
    requested_at: datetime


class QueryIn(BaseModel):
    question: Text = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    #: Force a route; by default the router picks one.
    route: Literal["global", "local"] | None = None
    #: At most this many units of ranked evidence.
    top_k: int = Field(default=10, ge=1, le=MAX_TOP_K)
    #: "answer": an answer with citations (the LLM when configured); "evidence": the ranked
    #: evidence only, no LLM call, ``answer`` empty.
    mode: Literal["answer", "evidence"] = "answer"
    #: Answer as Server-Sent Events (``delta`` pieces, then ``evidence``, ``citations`` and
    #: ``done`` with the whole response) instead of one JSON body.
    stream: StrictBool = False


class CitationOut(BaseModel):
    kind: Literal["message", "artifact"] | str
    id: str
    speaker: str | None
    #: When the message was posted (an artifact passage: when the artifact was last saved).
    time: datetime | None = None
    excerpt: str


class EvidenceOut(BaseModel):
    """One unit of ranked evidence: a message or an artifact passage."""

    kind: Literal["message", "artifact"] | str
    #: The message id, or the artifact id of the passage.
    id: str
    #: Rank-derived, in (0, 1]: 1 for the first, 1/2 for the second…
    score: float
    #: signal -> 1-based rank in the list of each retrieval signal that found it
    #: (lexical, dense, context, graph, speaker, time, reports).
    signals: dict[str, int]
    speaker: str | None
    time: datetime | None
    excerpt: str


class Freshness(BaseModel):
    """How current the data behind an answer is."""

    #: When the newest community report used by a global answer was written.
    reports_as_of: datetime | None
    #: Last materialization of the room's chunks (messages indexed up to then) and graph.
    chunks_materialized_at: datetime | None
    graph_materialized_at: datetime | None
    #: Events of the room appended since its chunks were last materialized (not in the answer
    #: yet); None when the event stream is unreachable.
    pending_events: int | None = None
    pending_events_capped: bool = False


class QueryOut(BaseModel):
    question: str
    mode: Literal["answer", "evidence"]
    #: Empty in evidence mode.
    answer: str
    route: Literal["global", "local"]
    citations: list[CitationOut]
    #: Ranked evidence, best first, at most ``top_k``.
    evidence: list[EvidenceOut]
    entities: list[str]
    communities: list[str]
    freshness: Freshness
    seconds: float


class GraphNode(BaseModel):
    id: str
    label: str
    type: str
    mentions: int
    #: The level-0 community, and the community at every level (coarse to fine).
    community_id: str | None
    community_ids: list[str]


class GraphEdge(BaseModel):
    source: str
    target: str
    weight: float


class GraphOut(BaseModel):
    room_id: uuid.UUID
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    total_nodes: int
    total_edges: int
    #: True when only the most mentioned ``limit`` entities are returned.
    truncated: bool


class CommunityOut(BaseModel):
    id: str
    level: int
    parent_id: str | None
    size: int
    #: Up to 50 member entity names.
    entities: list[str]
    title: str | None
    summary: str | None
    rank: float | None
    generated_at: datetime | None


class AssetStatus(BaseModel):
    asset: str
    last_materialized_at: datetime | None
    run_id: str | None
    metadata: dict[str, Any]


class RunOut(BaseModel):
    run_id: str
    job_name: str
    status: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None


class StatusOut(BaseModel):
    room_id: uuid.UUID
    #: Whether the room is a partition of the Dagster assets yet.
    partition_registered: bool | None
    assets: list[AssetStatus]
    #: Queued and running runs of the room's partition.
    active_runs: list[RunOut]
    last_run: RunOut | None
    #: Events for this room in ``graphrag:events`` since the last run started.
    pending_events: int
    pending_events_capped: bool
    counts: dict[str, int]
    dagster_available: bool
    dagster_error: str | None = None
