"""Rooms and room members.

Functions take an ``AsyncSession`` and flush, never commit: the caller owns the transaction
(the API commits per request, tests roll back).
"""

from __future__ import annotations

import uuid

from sqlalchemy import exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import Course, CourseMember, Room, RoomMember, User
from knowledge.errors import InvalidInputError, NotFoundError
from knowledge.relational import fetch_page
from knowledge.users import get_user


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
    return await fetch_page(session, query, limit, offset)


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


async def add_member(
    session: AsyncSession, room_id: uuid.UUID, user_id: uuid.UUID, role: str = "member"
) -> None:
    if await session.get(RoomMember, (room_id, user_id)) is None:
        session.add(RoomMember(room_id=room_id, user_id=user_id, role=role))
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
