"""What the MCP tools return (structured output; clients also get it as JSON text)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from serving.graph.schemas import CitationOut, CommunityOut, EvidenceOut
from serving.rooms.schemas import RoomOut


class RoomAnswer(BaseModel):
    """``query_room``: the room's answer, the messages it cites and the ranked evidence."""

    room_id: uuid.UUID
    question: str
    route: Literal["global", "local"]
    answer: str
    #: The evidence the answer used (a subset of ``evidence``).
    citations: list[CitationOut]
    #: Ranked evidence, best first, at most ``top_k``.
    evidence: list[EvidenceOut]
    entities: list[str]
    communities: list[str]
    #: When the newest community report used by a global answer was written.
    reports_as_of: datetime | None


class EvidenceResult(BaseModel):
    """``search_messages``: ranked evidence only (no answer, no LLM call)."""

    room_id: uuid.UUID
    question: str
    route: Literal["global", "local"]
    evidence: list[EvidenceOut]
    #: Entities of the room the question names (or that the search centred on).
    entities: list[str]


class CommunityList(BaseModel):
    room_id: uuid.UUID
    #: Coarse levels first, then the largest communities.
    items: list[CommunityOut]
    total: int
    limit: int
    offset: int


class RelatedEntity(BaseModel):
    name: str
    display_name: str
    type: str
    #: Summed strength of the relationship over the chunks that state it.
    weight: float
    description: str


class SourceMessage(BaseModel):
    id: str
    speaker: str | None
    time: datetime | None
    excerpt: str


class EntityOut(BaseModel):
    """``get_entity``: one entity of the room's graph."""

    room_id: uuid.UUID
    #: The canonical (lower-case) name; ``display_name`` keeps the first-seen casing.
    name: str
    display_name: str
    type: str
    description: str
    mentions: int
    #: Other names merged into this entity by entity resolution.
    aliases: list[str]
    #: Strongest first.
    relationships: list[RelatedEntity]
    #: Messages of the chunks the entity was extracted from that name it (or that it said),
    #: oldest first; when none names it literally, the messages of those chunks.
    source_messages: list[SourceMessage]
    #: Artifacts whose passages the entity was extracted from.
    source_artifact_ids: list[str]
    #: True when more relationships or source messages exist than are listed.
    truncated: bool


class RoomList(BaseModel):
    """``list_rooms``: the rooms the caller may read."""

    items: list[RoomOut]
    total: int
    limit: int
    offset: int
