"""Users, courses, rooms, members, messages and artifacts: the relational side of a room.

Functions take an ``AsyncSession`` and flush, never commit: the caller owns the transaction
(the API commits per request, tests roll back).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import (
    Artifact,
    ArtifactVersion,
    AuthorKind,
    Course,
    CourseMember,
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
    reply_to: int | None = None,
    meta: dict[str, Any] | None = None,
) -> Message:
    _check_content(content, max_chars, "message")
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
        room_id=room_id, title=title.strip(), content=content, created_by=created_by, version=1
    )
    session.add(artifact)
    await session.flush()
    session.add(
        ArtifactVersion(
            artifact_id=artifact.id,
            version=1,
            title=artifact.title,
            content=content,
            created_by=created_by,
        )
    )
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
            created_at=created_at,
        )
        for mid, content, name, kind, created_at in rows
    ]


# --- reads, updates and deletes used by the API ------------------------------------------------


class VersionConflictError(InvalidInputError):
    """The object changed since the version the caller last saw; nothing was changed."""


def _parse_uuid(value: str | uuid.UUID, what: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFoundError(f"{what} {value!r} does not exist") from None


async def _page(session: AsyncSession, query: Select, limit: int, offset: int) -> tuple[list, int]:  # type: ignore[type-arg]
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = (await session.execute(query.limit(limit).offset(offset))).scalars().all()
    return list(rows), int(total)


# users


async def get_user(session: AsyncSession, user_id: str | uuid.UUID) -> User:
    user = await session.get(User, _parse_uuid(user_id, "user"))
    if user is None:
        raise NotFoundError(f"user {user_id} does not exist")
    return user


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.execute(select(User).where(User.email == email.strip().lower()))
    return result.scalar_one_or_none()


async def list_users(
    session: AsyncSession, limit: int, offset: int, search: str | None = None
) -> tuple[list[User], int]:
    query = select(User).order_by(User.created_at, User.id)
    if search and search.strip():
        pattern = "%" + search.strip().lower().replace("\\", "\\\\").replace("%", "\\%") + "%"
        query = query.where(
            or_(User.email.like(pattern, escape="\\"), func.lower(User.full_name).like(pattern))
        )
    return await _page(session, query, limit, offset)


async def delete_user(session: AsyncSession, user_id: uuid.UUID) -> None:
    user = await get_user(session, user_id)
    await session.delete(user)
    await session.flush()


# courses


async def get_course(session: AsyncSession, course_id: str | uuid.UUID) -> Course:
    course = await session.get(Course, _parse_uuid(course_id, "course"))
    if course is None:
        raise NotFoundError(f"course {course_id} does not exist")
    return course


def _course_visible_to(user_id: uuid.UUID):  # type: ignore[no-untyped-def]
    """Courses a user owns, belongs to, or has a room in."""
    return or_(
        Course.owner_id == user_id,
        exists().where(CourseMember.course_id == Course.id, CourseMember.user_id == user_id),
        exists().where(
            Room.course_id == Course.id,
            RoomMember.room_id == Room.id,
            RoomMember.user_id == user_id,
        ),
    )


async def list_courses(
    session: AsyncSession, limit: int, offset: int, visible_to: uuid.UUID | None = None
) -> tuple[list[Course], int]:
    """All courses, or only those visible to ``visible_to`` when given."""
    query = select(Course).order_by(Course.created_at, Course.id)
    if visible_to is not None:
        query = query.where(_course_visible_to(visible_to))
    return await _page(session, query, limit, offset)


async def update_course(
    session: AsyncSession,
    course_id: uuid.UUID,
    name: str | None = None,
    description: str | None = None,
) -> Course:
    course = await get_course(session, course_id)
    if name is not None:
        if not name.strip():
            raise InvalidInputError("a course needs a name")
        course.name = name.strip()
    if description is not None:
        course.description = description
    await session.flush()
    return course


async def delete_course(session: AsyncSession, course_id: uuid.UUID) -> None:
    await session.delete(await get_course(session, course_id))
    await session.flush()


async def course_role(
    session: AsyncSession, course_id: uuid.UUID, user_id: uuid.UUID
) -> str | None:
    """``owner``, the member's role (``teacher``, ``student``), or None."""
    course = await get_course(session, course_id)
    if course.owner_id == user_id:
        return "owner"
    member = await session.get(CourseMember, (course_id, user_id))
    return member.role if member is not None else None


async def set_course_member(
    session: AsyncSession, course_id: uuid.UUID, user_id: uuid.UUID, role: str
) -> CourseMember:
    await get_course(session, course_id)
    await get_user(session, user_id)
    member = await session.get(CourseMember, (course_id, user_id))
    if member is None:
        member = CourseMember(course_id=course_id, user_id=user_id, role=role)
        session.add(member)
    else:
        member.role = role
    await session.flush()
    return member


async def remove_course_member(
    session: AsyncSession, course_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    member = await session.get(CourseMember, (course_id, user_id))
    if member is None:
        raise NotFoundError(f"user {user_id} is not a member of course {course_id}")
    await session.delete(member)
    await session.flush()


async def list_course_members(
    session: AsyncSession, course_id: uuid.UUID, limit: int, offset: int
) -> tuple[list[tuple[CourseMember, User]], int]:
    await get_course(session, course_id)
    base = (
        select(CourseMember, User)
        .join(User, User.id == CourseMember.user_id)
        .where(CourseMember.course_id == course_id)
    )
    total = (await session.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
    rows = await session.execute(base.order_by(User.email).limit(limit).offset(offset))
    return [(m, u) for m, u in rows.tuples()], int(total)


# rooms and room members


async def list_rooms(
    session: AsyncSession,
    limit: int,
    offset: int,
    visible_to: uuid.UUID | None = None,
    course_id: uuid.UUID | None = None,
) -> tuple[list[Room], int]:
    """Rooms (of one course when given); with ``visible_to``, only the rooms that user is a
    member of or that belong to a course the user owns or teaches."""
    query = select(Room).order_by(Room.created_at, Room.id)
    if course_id is not None:
        query = query.where(Room.course_id == course_id)
    if visible_to is not None:
        query = query.where(
            or_(
                exists().where(RoomMember.room_id == Room.id, RoomMember.user_id == visible_to),
                exists().where(
                    Course.id == Room.course_id,
                    or_(
                        Course.owner_id == visible_to,
                        exists().where(
                            CourseMember.course_id == Course.id,
                            CourseMember.user_id == visible_to,
                            CourseMember.role == "teacher",
                        ),
                    ),
                ),
            )
        )
    return await _page(session, query, limit, offset)


async def update_room(session: AsyncSession, room_id: uuid.UUID, name: str) -> Room:
    room = await get_room(session, room_id)
    if not name.strip():
        raise InvalidInputError("a room needs a name")
    room.name = name.strip()
    await session.flush()
    return room


async def delete_room(session: AsyncSession, room_id: uuid.UUID) -> None:
    await session.delete(await get_room(session, room_id))
    await session.flush()


async def room_member(
    session: AsyncSession, room_id: uuid.UUID, user_id: uuid.UUID
) -> RoomMember | None:
    return await session.get(RoomMember, (room_id, user_id))


async def set_room_member(
    session: AsyncSession, room_id: uuid.UUID, user_id: uuid.UUID, role: str
) -> RoomMember:
    await get_room(session, room_id)
    await get_user(session, user_id)
    member = await session.get(RoomMember, (room_id, user_id))
    if member is None:
        member = RoomMember(room_id=room_id, user_id=user_id, role=role)
        session.add(member)
    else:
        member.role = role
    await session.flush()
    return member


async def remove_room_member(session: AsyncSession, room_id: uuid.UUID, user_id: uuid.UUID) -> None:
    member = await session.get(RoomMember, (room_id, user_id))
    if member is None:
        raise NotFoundError(f"user {user_id} is not a member of room {room_id}")
    await session.delete(member)
    await session.flush()


async def list_room_members(
    session: AsyncSession, room_id: uuid.UUID, limit: int, offset: int
) -> tuple[list[tuple[RoomMember, User]], int]:
    await get_room(session, room_id)
    base = (
        select(RoomMember, User)
        .join(User, User.id == RoomMember.user_id)
        .where(RoomMember.room_id == room_id)
    )
    total = (await session.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
    rows = await session.execute(
        base.order_by(RoomMember.joined_at, User.email).limit(limit).offset(offset)
    )
    return [(m, u) for m, u in rows.tuples()], int(total)


# messages


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


# artifacts


async def get_artifact(
    session: AsyncSession, room_id: uuid.UUID, artifact_id: str | uuid.UUID
) -> Artifact:
    artifact = await session.get(Artifact, _parse_uuid(artifact_id, "artifact"))
    if artifact is None or artifact.room_id != room_id or artifact.deleted_at is not None:
        raise NotFoundError(f"artifact {artifact_id} does not exist in room {room_id}")
    return artifact


async def list_artifacts(
    session: AsyncSession, room_id: uuid.UUID, limit: int, offset: int
) -> tuple[list[Artifact], int]:
    await get_room(session, room_id)
    query = (
        select(Artifact)
        .where(Artifact.room_id == room_id, Artifact.deleted_at.is_(None))
        .order_by(Artifact.created_at, Artifact.id)
    )
    return await _page(session, query, limit, offset)


async def update_artifact(
    session: AsyncSession,
    room_id: uuid.UUID,
    artifact_id: uuid.UUID,
    max_chars: int,
    title: str | None = None,
    content: str | None = None,
    edited_by: uuid.UUID | None = None,
    expected_version: int | None = None,
) -> Artifact:
    """Save a new version (title and/or content); ``expected_version`` guards lost updates."""
    artifact = await get_artifact(session, room_id, artifact_id)
    # Lock the row so concurrent saves get consecutive versions.
    await session.refresh(artifact, with_for_update=True)
    if expected_version is not None and artifact.version != expected_version:
        raise VersionConflictError(
            f"artifact {artifact_id} is at version {artifact.version}, not {expected_version}"
        )
    if title is not None:
        if not title.strip():
            raise InvalidInputError("an artifact needs a title")
        artifact.title = title.strip()
    if content is not None:
        artifact.content = _check_content(content, max_chars, "artifact")
    artifact.version += 1
    artifact.updated_at = datetime.now(UTC)
    session.add(
        ArtifactVersion(
            artifact_id=artifact.id,
            version=artifact.version,
            title=artifact.title,
            content=artifact.content,
            created_by=edited_by,
        )
    )
    await session.flush()
    return artifact


async def delete_artifact(
    session: AsyncSession, room_id: uuid.UUID, artifact_id: uuid.UUID
) -> Artifact:
    artifact = await get_artifact(session, room_id, artifact_id)
    artifact.deleted_at = datetime.now(UTC)
    await session.flush()
    return artifact


async def list_artifact_versions(
    session: AsyncSession, room_id: uuid.UUID, artifact_id: uuid.UUID, limit: int, offset: int
) -> tuple[list[ArtifactVersion], int]:
    await get_artifact(session, room_id, artifact_id)
    query = (
        select(ArtifactVersion)
        .where(ArtifactVersion.artifact_id == artifact_id)
        .order_by(ArtifactVersion.version.desc())
    )
    return await _page(session, query, limit, offset)


async def get_artifact_version(
    session: AsyncSession, room_id: uuid.UUID, artifact_id: uuid.UUID, version: int
) -> ArtifactVersion:
    await get_artifact(session, room_id, artifact_id)
    row = await session.get(ArtifactVersion, (artifact_id, version))
    if row is None:
        raise NotFoundError(f"artifact {artifact_id} has no version {version}")
    return row


async def course_visible_to(
    session: AsyncSession, course_id: uuid.UUID, user_id: uuid.UUID
) -> bool:
    """Whether the user owns the course, belongs to it, or has a room in it."""
    result = await session.execute(
        select(Course.id).where(Course.id == course_id, _course_visible_to(user_id))
    )
    return result.first() is not None
