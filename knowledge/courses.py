"""Courses and course members, and who can see a course.

Functions take an ``AsyncSession`` and flush, never commit: the caller owns the transaction
(the API commits per request, tests roll back).
"""

from __future__ import annotations

import uuid

from sqlalchemy import exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import Course, CourseMember, Room, RoomMember, User
from knowledge.errors import InvalidInputError, NotFoundError
from knowledge.relational import fetch_page, parse_uuid
from knowledge.users import get_user


async def create_course(
    session: AsyncSession, name: str, owner_id: uuid.UUID | None = None, description: str = ""
) -> Course:
    if not name.strip():
        raise InvalidInputError("a course needs a name")
    course = Course(name=name.strip(), owner_id=owner_id, description=description)
    session.add(course)
    await session.flush()
    return course


async def get_course(session: AsyncSession, course_id: str | uuid.UUID) -> Course:
    course = await session.get(Course, parse_uuid(course_id, "course"))
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
    return await fetch_page(session, query, limit, offset)


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


async def course_visible_to(
    session: AsyncSession, course_id: uuid.UUID, user_id: uuid.UUID
) -> bool:
    """Whether the user owns the course, belongs to it, or has a room in it."""
    result = await session.execute(
        select(Course.id).where(Course.id == course_id, _course_visible_to(user_id))
    )
    return result.first() is not None


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
