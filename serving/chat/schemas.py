from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from dbschema.models import AuthorKind
from knowledge.chat import MessageRecord
from serving.schemas import Text

MAX_ID = 2**63 - 1


class ToolCallRecord(BaseModel):
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    citations: list[dict[str, Any]] = Field(default_factory=list)
    error: str | None = None


class AgentReplyMeta(BaseModel):
    model: str | None = None
    offline: bool = False
    pending_id: str | None = None
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    citations: list[dict[str, Any]] = Field(default_factory=list)
    #: Set when the reply is the agent's error notice (the reason is logged, not shown).
    error: str | None = None


class MessageIn(BaseModel):
    content: Text = Field(min_length=1, examples=["What did we decide about the deadline?"])


class MessageOut(BaseModel):
    id: int
    room_id: uuid.UUID
    author_id: uuid.UUID | None
    author_kind: AuthorKind
    author_name: str
    content: str
    created_at: datetime
    edited_at: datetime | None
    #: For an agent's reply: the message it answers, and what it did (tool calls with their
    #: citations, model, whether it ran offline, the pending id its streamed deltas used).
    reply_to: int | None = None
    agent: AgentReplyMeta | None = None

    @classmethod
    def from_record(cls, record: MessageRecord) -> MessageOut:
        return cls(
            id=record.id,
            room_id=record.room_id,
            author_id=record.author_id,
            author_kind=record.author_kind,
            author_name=record.author_name,
            content=record.content,
            created_at=record.created_at,
            edited_at=record.edited_at,
            reply_to=record.reply_to,
            agent=AgentReplyMeta.model_validate(record.meta) if record.meta else None,
        )


class MessagePage(BaseModel):
    """Messages in id order. ``next_cursor`` continues in the same direction: pass it as
    ``before`` (history) or ``after`` (catching up), or it is null when there is no more."""

    items: list[MessageOut]
    has_more: bool
    next_cursor: int | None


class TranscriptIn(BaseModel):
    """A transcript file's content: one message per JSONL line or CSV row, with the columns
    ``speaker`` and ``text`` (required), ``time`` (ISO 8601; on every row or none) and
    ``kind`` (``human`` or ``agent``); other columns are ignored."""

    format: Literal["jsonl", "csv"] = Field(examples=["jsonl"])
    content: str = Field(
        examples=[
            '{"speaker": "Menenius", "text": "There was a time when all the body\'s members rebelled against the belly."}\n'
        ]
    )


class ImportOut(BaseModel):
    room_id: uuid.UUID
    messages: int
    speakers: int
    new_users: int
    #: Earliest and latest ``time`` of the rows (null when the transcript has no times).
    first_time: datetime | None
    last_time: datetime | None
    first_message_id: int | None
    last_message_id: int | None
