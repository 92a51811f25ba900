from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from dbschema.models import AuthorKind
from knowledge.rooms import MessageRecord
from serving.schemas import Text

MAX_ID = 2**63 - 1


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
        )


class MessagePage(BaseModel):
    """Messages in id order. ``next_cursor`` continues in the same direction: pass it as
    ``before`` (history) or ``after`` (catching up), or it is null when there is no more."""

    items: list[MessageOut]
    has_more: bool
    next_cursor: int | None
