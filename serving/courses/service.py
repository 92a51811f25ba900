from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import Course, Room, User
from knowledge import courses as course_db
from knowledge import users as user_db
from realtime.events import RoomDeleted
from serving.chat.broadcast import CLOSE_ROOM_DELETED, Broadcaster
from serving.courses.schemas import (
    CourseCreate,
    CourseMemberIn,
    CourseMemberOut,
    CourseOut,
    CourseUpdate,
)
from serving.notify import stage_event
from serving.pagination import Page, PageParams
from serving.permissions import ADMINS, Action, Permissions
from serving.users.schemas import UserOut


async def create_course(
    session: AsyncSession, perms: Permissions, actor: User, body: CourseCreate
) -> Course:
    await perms.check(actor, Action.COURSE_CREATE)
    course = await course_db.create_course(session, body.name, actor.id, body.description)
    await session.commit()
    return course


async def list_courses(session: AsyncSession, actor: User, page: PageParams) -> Page[CourseOut]:
    visible_to = None if actor.role in ADMINS else actor.id
    courses, total = await course_db.list_courses(session, page.limit, page.offset, visible_to)
    return Page(
        items=[CourseOut.model_validate(c) for c in courses],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


async def get_course(
    session: AsyncSession, perms: Permissions, actor: User, course_id: uuid.UUID
) -> Course:
    course = await course_db.get_course(session, course_id)
    await perms.check(actor, Action.COURSE_READ, course)
    return course


async def update_course(
    session: AsyncSession,
    perms: Permissions,
    actor: User,
    course_id: uuid.UUID,
    body: CourseUpdate,
) -> Course:
    course = await course_db.get_course(session, course_id)
    await perms.check(actor, Action.COURSE_MANAGE, course)
    course = await course_db.update_course(session, course.id, body.name, body.description)
    await session.commit()
    return course


async def delete_course(
    session: AsyncSession,
    perms: Permissions,
    actor: User,
    course_id: uuid.UUID,
    sockets: Broadcaster | None = None,
) -> None:
    course = await course_db.get_course(session, course_id)
    await perms.check(actor, Action.COURSE_MANAGE, course)
    room_ids = list(await session.scalars(select(Room.id).where(Room.course_id == course.id)))
    await course_db.delete_course(session, course.id)
    # One room.deleted per room, in the deletion's transaction (the outbox relay appends them).
    await stage_event(
        session, *(RoomDeleted(room_id=str(r), actor_id=str(actor.id)) for r in room_ids)
    )
    await session.commit()
    if sockets is not None:  # the open WebSockets of its rooms close (4404)
        for room_id in room_ids:
            await sockets.close_sockets(
                CLOSE_ROOM_DELETED, "the course was deleted", room_id=room_id
            )


async def list_members(
    session: AsyncSession,
    perms: Permissions,
    actor: User,
    course_id: uuid.UUID,
    page: PageParams,
) -> Page[CourseMemberOut]:
    await get_course(session, perms, actor, course_id)
    rows, total = await course_db.list_course_members(session, course_id, page.limit, page.offset)
    return Page(
        items=[CourseMemberOut(user=UserOut.model_validate(u), role=m.role) for m, u in rows],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


async def set_member(
    session: AsyncSession,
    perms: Permissions,
    actor: User,
    course_id: uuid.UUID,
    body: CourseMemberIn,
    sockets: Broadcaster | None = None,
) -> CourseMemberOut:
    course = await course_db.get_course(session, course_id)
    await perms.check(actor, Action.COURSE_MANAGE, course)
    member = await course_db.set_course_member(session, course.id, body.user_id, body.role)
    user = await user_db.get_user(session, body.user_id)
    await session.commit()
    if sockets is not None:  # a new course role may take away rooms: re-check now
        await sockets.recheck_sockets(user.id)
    return CourseMemberOut(user=UserOut.model_validate(user), role=member.role)


async def remove_member(
    session: AsyncSession,
    perms: Permissions,
    actor: User,
    course_id: uuid.UUID,
    user_id: uuid.UUID,
    sockets: Broadcaster | None = None,
) -> None:
    course = await course_db.get_course(session, course_id)
    await perms.check(actor, Action.COURSE_MANAGE, course)
    await course_db.remove_course_member(session, course.id, user_id)
    await session.commit()
    if sockets is not None:  # rooms they read as a course manager: re-check now
        await sockets.recheck_sockets(user_id)
