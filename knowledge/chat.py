"""Messages of a room: post, edit, delete, read; and the room's sources as the chunker and
the retrieval take them (live messages and artifacts, speakers, cited messages).

Functions take an ``AsyncSession`` and flush, never commit: the caller owns the transaction
(the API commits per request, tests roll back).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, bindparam, func, literal, select, tuple_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import Artifact, AuthorKind, Message, RoomMember, User
from knowledge.chunking import SourceArtifact, SourceMessage
from knowledge.errors import NotFoundError
from knowledge.relational import any_integer, check_content
from knowledge.rooms import get_room, parse_room_id

AGENT_SPEAKER = "Agent"


async def post_message(
    session: AsyncSession,
    room_id: str | uuid.UUID,
    author_id: uuid.UUID | None,
    content: str,
    max_chars: int,
    author_kind: AuthorKind = AuthorKind.human,
    created_at: datetime | None = None,
    reply_to: int | None = None,
    meta: dict[str, Any] | None = None,
) -> Message:
    check_content(content, max_chars, "message")
    room = await get_room(session, room_id)
    message = Message(
        room_id=room.id,
        author_id=author_id,
        author_kind=author_kind,
        content=content,
        reply_to=reply_to,
        meta=meta,
    )
    if created_at is not None:
        message.created_at = created_at
    session.add(message)
    await session.flush()
    return message


async def post_messages(
    session: AsyncSession,
    room_id: uuid.UUID,
    rows: Sequence[tuple[uuid.UUID | None, str]],
    max_chars: int,
) -> int:
    """Bulk-load (author, content) rows in order; all validated before anything is written."""
    for _, content in rows:
        check_content(content, max_chars, "message")
    await get_room(session, room_id)
    session.add_all(
        Message(room_id=room_id, author_id=a, author_kind=AuthorKind.human, content=c)
        for a, c in rows
    )
    await session.flush()
    return len(rows)


async def edit_message(
    session: AsyncSession, room_id: uuid.UUID, message_id: int, content: str, max_chars: int
) -> Message:
    check_content(content, max_chars, "message")
    message = await _room_message(session, room_id, message_id)
    message.content = content
    message.edited_at = datetime.now(UTC)
    await session.flush()
    return message


async def delete_message(session: AsyncSession, room_id: uuid.UUID, message_id: int) -> Message:
    message = await _room_message(session, room_id, message_id)
    message.deleted_at = datetime.now(UTC)
    await session.flush()
    return message


async def _room_message(session: AsyncSession, room_id: uuid.UUID, message_id: int) -> Message:
    message = await session.get(Message, message_id)
    if message is None or message.room_id != room_id or message.deleted_at is not None:
        raise NotFoundError(f"message {message_id} does not exist in room {room_id}")
    return message


async def count_messages(session: AsyncSession, room_id: uuid.UUID) -> int:
    result = await session.execute(
        select(func.count())
        .select_from(Message)
        .where(Message.room_id == room_id, Message.deleted_at.is_(None))
    )
    return int(result.scalar_one())


async def load_room_sources(
    session: AsyncSession, room_id: str | uuid.UUID
) -> tuple[list[SourceMessage], list[SourceArtifact]]:
    """The live messages (time order) and artifacts of a room, as the chunker takes them."""
    room = await get_room(session, room_id)
    rows = await session.execute(
        select(Message.id, Message.content, Message.author_kind, User.full_name, Message.created_at)
        .outerjoin(User, User.id == Message.author_id)
        .where(Message.room_id == room.id, Message.deleted_at.is_(None))
        .order_by(Message.created_at, Message.id)
    )
    messages = [
        SourceMessage(
            id=mid,
            speaker=name or (AGENT_SPEAKER if kind == AuthorKind.agent else "Unknown"),
            content=content,
            created_at=created_at,
        )
        for mid, content, kind, name, created_at in rows
    ]
    art_rows = await session.execute(
        select(Artifact.id, Artifact.title, Artifact.content)
        .where(Artifact.room_id == room.id, Artifact.deleted_at.is_(None))
        .order_by(Artifact.created_at, Artifact.id)
    )
    artifacts = [SourceArtifact(id=str(aid), title=t, content=c) for aid, t, c in art_rows]
    return messages, artifacts


def _source_message(
    mid: int, content: str, kind: AuthorKind, name: str | None, created_at: datetime
) -> SourceMessage:
    return SourceMessage(
        id=mid,
        speaker=name or (AGENT_SPEAKER if kind == AuthorKind.agent else "Unknown"),
        content=content,
        created_at=created_at,
    )


_SOURCE_COLUMNS = (
    Message.id,
    Message.content,
    Message.author_kind,
    User.full_name,
    Message.created_at,
)


async def live_messages(
    session: AsyncSession, room_id: str | uuid.UUID, ids: Iterable[int]
) -> dict[int, SourceMessage]:
    """Those of ``ids`` that are live messages of the room, as the chunker takes them."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = await session.execute(
        select(*_SOURCE_COLUMNS)
        .outerjoin(User, User.id == Message.author_id)
        .where(
            Message.room_id == parse_room_id(room_id),
            # One array parameter, whatever the count (a bind per id stops at 65,535).
            Message.id == func.any(bindparam("ids", wanted, type_=ARRAY(BigInteger))),
            Message.deleted_at.is_(None),
        )
    )
    return {row[0]: _source_message(*row) for row in rows}


async def messages_from(
    session: AsyncSession,
    room_id: str | uuid.UUID,
    start: tuple[datetime, int] | None,
    limit: int,
    inclusive: bool = True,
) -> list[SourceMessage]:
    """Up to ``limit`` live messages of the room from ``start`` = (created_at, id) on (or after
    it, not ``inclusive``), in time order; None: from the first. One index range
    (``ix_messages_room_created``), whatever the room's size."""
    query = (
        select(*_SOURCE_COLUMNS)
        .outerjoin(User, User.id == Message.author_id)
        .where(Message.room_id == parse_room_id(room_id), Message.deleted_at.is_(None))
        .order_by(Message.created_at, Message.id)
        .limit(limit)
    )
    if start is not None:
        key = tuple_(Message.created_at, Message.id)
        bound = tuple_(literal(start[0], DateTime(timezone=True)), literal(start[1], BigInteger))
        query = query.where(key >= bound if inclusive else key > bound)
    return [_source_message(*row) for row in await session.execute(query)]


async def live_artifacts(
    session: AsyncSession, room_id: str | uuid.UUID, ids: Iterable[str] | None = None
) -> list[SourceArtifact]:
    """The room's live artifacts (those of ``ids`` only, if given), in the chunker's order."""
    query = (
        select(Artifact.id, Artifact.title, Artifact.content)
        .where(Artifact.room_id == parse_room_id(room_id), Artifact.deleted_at.is_(None))
        .order_by(Artifact.created_at, Artifact.id)
    )
    if ids is not None:
        wanted = []
        for value in ids:
            try:
                wanted.append(uuid.UUID(value))
            except ValueError:
                continue
        if not wanted:
            return []
        query = query.where(Artifact.id.in_(wanted))
    rows = await session.execute(query)
    return [SourceArtifact(id=str(aid), title=t, content=c) for aid, t, c in rows]


async def room_speakers(session: AsyncSession, room_id: str | uuid.UUID) -> list[str]:
    """Display names of the room's members (the people and agents who speak in it)."""
    rows = await session.execute(
        select(User.full_name)
        .join(RoomMember, RoomMember.user_id == User.id)
        .where(RoomMember.room_id == parse_room_id(room_id))
        .distinct()
    )
    return sorted(name for name in rows.scalars() if name)


async def message_ids_between(
    session: AsyncSession, room_id: str | uuid.UUID, since: datetime, until: datetime, limit: int
) -> list[int]:
    """Ids of the room's live messages with since <= created_at < until, in time order."""
    rows = await session.execute(
        select(Message.id)
        .where(
            Message.room_id == parse_room_id(room_id),
            Message.deleted_at.is_(None),
            Message.created_at >= since,
            Message.created_at < until,
        )
        .order_by(Message.created_at, Message.id)
        .limit(limit)
    )
    return list(rows.scalars())


@dataclass(frozen=True)
class CitedMessage:
    id: int
    speaker: str
    content: str
    created_at: datetime | None = None


async def messages_by_ids(
    session: AsyncSession, room_id: str | uuid.UUID, ids: Sequence[int]
) -> list[CitedMessage]:
    if not ids:
        return []
    rows = await session.execute(
        select(Message.id, Message.content, User.full_name, Message.author_kind, Message.created_at)
        .outerjoin(User, User.id == Message.author_id)
        .where(
            Message.room_id == parse_room_id(room_id),
            Message.id == any_integer(ids),
            Message.deleted_at.is_(None),
        )
        .order_by(Message.id)
    )
    return [
        CitedMessage(
            id=mid,
            speaker=name or (AGENT_SPEAKER if kind == AuthorKind.agent else "Unknown"),
            content=content,
            created_at=created_at,
        )
        for mid, content, name, kind, created_at in rows
    ]


@dataclass(frozen=True)
class MessageRecord:
    """A live message with its author's name, as the API shows it."""

    id: int
    room_id: uuid.UUID
    author_id: uuid.UUID | None
    author_kind: AuthorKind
    author_name: str
    content: str
    created_at: datetime
    edited_at: datetime | None
    reply_to: int | None = None
    meta: dict[str, Any] | None = None


def _record(message: Message, name: str | None) -> MessageRecord:
    return MessageRecord(
        id=message.id,
        room_id=message.room_id,
        author_id=message.author_id,
        author_kind=message.author_kind,
        author_name=name
        or (AGENT_SPEAKER if message.author_kind == AuthorKind.agent else "Unknown"),
        content=message.content,
        created_at=message.created_at,
        edited_at=message.edited_at,
        reply_to=message.reply_to,
        meta=message.meta,
    )


async def get_message(session: AsyncSession, room_id: uuid.UUID, message_id: int) -> MessageRecord:
    message = await _room_message(session, room_id, message_id)
    name = None
    if message.author_id is not None:
        author = await session.get(User, message.author_id)
        name = author.full_name if author is not None else None
    return _record(message, name)


async def message_record(session: AsyncSession, message: Message) -> MessageRecord:
    """The record of a message just written in this session."""
    await session.refresh(message)
    name = None
    if message.author_id is not None:
        author = await session.get(User, message.author_id)
        name = author.full_name if author is not None else None
    return _record(message, name)


async def list_messages(
    session: AsyncSession,
    room_id: uuid.UUID,
    limit: int,
    before: int | None = None,
    after: int | None = None,
) -> tuple[list[MessageRecord], bool]:
    """A page of live messages in id order, and whether there are more in that direction.

    ``after``: the oldest messages newer than that id (a reconnect fills its gap with these);
    otherwise the newest messages older than ``before`` (or the newest of all).
    """
    await get_room(session, room_id)
    query = (
        select(Message, User.full_name)
        .outerjoin(User, User.id == Message.author_id)
        .where(Message.room_id == room_id, Message.deleted_at.is_(None))
    )
    if after is not None:
        query = query.where(Message.id > after).order_by(Message.id)
    else:
        if before is not None:
            query = query.where(Message.id < before)
        query = query.order_by(Message.id.desc())
    rows = (await session.execute(query.limit(limit + 1))).tuples().all()
    has_more = len(rows) > limit
    records = [_record(m, name) for m, name in rows[:limit]]
    if after is None:
        records.reverse()
    return records, has_more
