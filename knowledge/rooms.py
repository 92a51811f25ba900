"""Users, courses, rooms, members, messages and artifacts: the relational side of a room.

Functions take an ``AsyncSession`` and flush, never commit: the caller owns the transaction
(the API commits per request, tests roll back).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import (
    Artifact,
    AuthorKind,
    Course,
    Message,
    Room,
    RoomMember,
    User,
    UserRole,
)
from knowledge.chunking import SourceArtifact, SourceMessage
from knowledge.errors import InvalidInputError, NotFoundError

AGENT_SPEAKER = "Agent"


def parse_room_id(room_id: str | uuid.UUID) -> uuid.UUID:
    if isinstance(room_id, uuid.UUID):
        return room_id
    try:
        return uuid.UUID(str(room_id))
    except ValueError:
        raise NotFoundError(f"room {room_id!r} does not exist") from None


async def get_room(session: AsyncSession, room_id: str | uuid.UUID) -> Room:
    room = await session.get(Room, parse_room_id(room_id))
    if room is None:
        raise NotFoundError(f"room {room_id} does not exist")
    return room


async def create_user(
    session: AsyncSession,
    email: str,
    full_name: str,
    role: UserRole = UserRole.student,
    hashed_password: str | None = None,
) -> User:
    email = email.strip().lower()
    if "@" not in email or not full_name.strip():
        raise InvalidInputError("a user needs a valid email and a name")
    user = User(
        email=email, full_name=full_name.strip(), role=role, hashed_password=hashed_password
    )
    session.add(user)
    await session.flush()
    return user


async def create_course(
    session: AsyncSession, name: str, owner_id: uuid.UUID | None = None, description: str = ""
) -> Course:
    if not name.strip():
        raise InvalidInputError("a course needs a name")
    course = Course(name=name.strip(), owner_id=owner_id, description=description)
    session.add(course)
    await session.flush()
    return course


async def create_room(
    session: AsyncSession, course_id: uuid.UUID, name: str, created_by: uuid.UUID | None = None
) -> Room:
    if not name.strip():
        raise InvalidInputError("a room needs a name")
    if await session.get(Course, course_id) is None:
        raise NotFoundError(f"course {course_id} does not exist")
    room = Room(course_id=course_id, name=name.strip(), created_by=created_by)
    session.add(room)
    await session.flush()
    return room


async def add_member(
    session: AsyncSession, room_id: uuid.UUID, user_id: uuid.UUID, role: str = "member"
) -> None:
    if await session.get(RoomMember, (room_id, user_id)) is None:
        session.add(RoomMember(room_id=room_id, user_id=user_id, role=role))
        await session.flush()


def _check_content(content: str, limit: int, what: str) -> str:
    if not content or not content.strip():
        raise InvalidInputError(f"{what} is empty")
    if len(content) > limit:
        raise InvalidInputError(f"{what} has {len(content)} characters; the limit is {limit}")
    return content


async def post_message(
    session: AsyncSession,
    room_id: str | uuid.UUID,
    author_id: uuid.UUID | None,
    content: str,
    max_chars: int,
    author_kind: AuthorKind = AuthorKind.human,
    created_at: datetime | None = None,
) -> Message:
    _check_content(content, max_chars, "message")
    room = await get_room(session, room_id)
    message = Message(
        room_id=room.id, author_id=author_id, author_kind=author_kind, content=content
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
        _check_content(content, max_chars, "message")
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
    _check_content(content, max_chars, "message")
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


async def create_artifact(
    session: AsyncSession,
    room_id: uuid.UUID,
    title: str,
    content: str,
    max_chars: int,
    created_by: uuid.UUID | None = None,
) -> Artifact:
    if not title.strip():
        raise InvalidInputError("an artifact needs a title")
    _check_content(content, max_chars, "artifact")
    await get_room(session, room_id)
    artifact = Artifact(
        room_id=room_id, title=title.strip(), content=content, created_by=created_by
    )
    session.add(artifact)
    await session.flush()
    return artifact


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
        select(Message.id, Message.content, Message.author_kind, User.full_name)
        .outerjoin(User, User.id == Message.author_id)
        .where(Message.room_id == room.id, Message.deleted_at.is_(None))
        .order_by(Message.created_at, Message.id)
    )
    messages = [
        SourceMessage(
            id=mid,
            speaker=name or (AGENT_SPEAKER if kind == AuthorKind.agent else "Unknown"),
            content=content,
        )
        for mid, content, kind, name in rows
    ]
    art_rows = await session.execute(
        select(Artifact.id, Artifact.title, Artifact.content)
        .where(Artifact.room_id == room.id, Artifact.deleted_at.is_(None))
        .order_by(Artifact.created_at, Artifact.id)
    )
    artifacts = [SourceArtifact(id=str(aid), title=t, content=c) for aid, t, c in art_rows]
    return messages, artifacts


@dataclass(frozen=True)
class CitedMessage:
    id: int
    speaker: str
    content: str


async def messages_by_ids(
    session: AsyncSession, room_id: str | uuid.UUID, ids: Sequence[int]
) -> list[CitedMessage]:
    if not ids:
        return []
    rows = await session.execute(
        select(Message.id, Message.content, User.full_name, Message.author_kind)
        .outerjoin(User, User.id == Message.author_id)
        .where(
            Message.room_id == parse_room_id(room_id),
            Message.id.in_(list(ids)),
            Message.deleted_at.is_(None),
        )
        .order_by(Message.id)
    )
    return [
        CitedMessage(
            id=mid,
            speaker=name or (AGENT_SPEAKER if kind == AuthorKind.agent else "Unknown"),
            content=content,
        )
        for mid, content, name, kind in rows
    ]
