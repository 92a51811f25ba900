from __future__ import annotations

import uuid

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import AgentConfig, Room, User
from knowledge import courses, rooms, users
from realtime.events import RoomDeleted
from serving.chat.broadcast import CLOSE_ROOM_DELETED, Broadcaster
from serving.errors import Forbidden
from serving.notify import after_commit, stage_event
from serving.pagination import Page, PageParams
from serving.permissions import ADMINS, Action, Permissions
from serving.rooms.schemas import RoomCreate, RoomMemberIn, RoomMemberOut, RoomOut, RoomUpdate
from serving.state import AppState
from serving.users.schemas import UserOut


async def authorize_room(
    session: AsyncSession, perms: Permissions, user: User, room_id: uuid.UUID, action: Action
) -> Room:
    """The room, if it exists (404) and the user may do ``action`` in it (403)."""
    room = await rooms.get_room(session, room_id)
    await perms.check(user, action, room)
    return room


async def create_room(
    session: AsyncSession, perms: Permissions, actor: User, body: RoomCreate
) -> Room:
    course = await courses.get_course(session, body.course_id)
    await perms.check(actor, Action.COURSE_MANAGE, course)
    room = await rooms.create_room(session, course.id, body.name, actor.id)
    await rooms.set_room_member(session, room.id, actor.id, "moderator")
    await session.commit()
    return room


async def list_rooms(
    session: AsyncSession, actor: User, page: PageParams, course_id: uuid.UUID | None
) -> Page[RoomOut]:
    visible_to = None if actor.role in ADMINS else actor.id
    found, total = await rooms.list_rooms(session, page.limit, page.offset, visible_to, course_id)
    return Page(
        items=[RoomOut.model_validate(r) for r in found],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


async def update_room(
    session: AsyncSession, perms: Permissions, actor: User, room_id: uuid.UUID, body: RoomUpdate
) -> Room:
    room = await authorize_room(session, perms, actor, room_id, Action.ROOM_MANAGE)
    room = await rooms.update_room(session, room.id, body.name)
    await session.commit()
    return room


async def delete_room_agents(session: AsyncSession, room_id: uuid.UUID) -> None:
    """Delete the agent identities of the room's agents (their configs go with them)."""
    agent_users = select(AgentConfig.user_id).where(AgentConfig.room_id == room_id)
    await session.execute(delete(User).where(User.id.in_(agent_users)))


async def delete_room(
    session: AsyncSession,
    perms: Permissions,
    actor: User,
    room_id: uuid.UUID,
    sockets: Broadcaster | None = None,
) -> None:
    room = await authorize_room(session, perms, actor, room_id, Action.ROOM_MANAGE)
    await delete_room_agents(session, room.id)
    await rooms.delete_room(session, room.id)
    # In the deletion's transaction; the outbox relay appends it (the sensor purges the room).
    await stage_event(session, RoomDeleted(room_id=str(room.id), actor_id=str(actor.id)))
    await session.commit()
    if sockets is not None:  # every open WebSocket of the room closes (4404)
        await sockets.close_sockets(CLOSE_ROOM_DELETED, "the room was deleted", room_id=room.id)


async def list_members(
    session: AsyncSession, perms: Permissions, actor: User, room_id: uuid.UUID, page: PageParams
) -> Page[RoomMemberOut]:
    room = await authorize_room(session, perms, actor, room_id, Action.ROOM_READ)
    rows, total = await rooms.list_room_members(session, room.id, page.limit, page.offset)
    return Page(
        items=[
            RoomMemberOut(user=UserOut.model_validate(u), role=m.role, joined_at=m.joined_at)
            for m, u in rows
        ],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


async def set_member(
    session: AsyncSession,
    state: AppState,
    perms: Permissions,
    actor: User,
    room_id: uuid.UUID,
    body: RoomMemberIn,
) -> RoomMemberOut:
    room = await authorize_room(session, perms, actor, room_id, Action.ROOM_MANAGE)
    user = await users.get_user(session, body.user_id)
    existing = await rooms.room_member(session, room.id, user.id)
    if existing is not None and existing.role == "agent":
        raise Forbidden("agent members are managed through the room's agents")
    member = await rooms.set_room_member(session, room.id, user.id, body.role)
    await session.commit()
    await session.refresh(member)
    await after_commit(
        state, room.id, {"type": "member.added", "user_id": str(user.id), "role": member.role}
    )
    return RoomMemberOut(
        user=UserOut.model_validate(user), role=member.role, joined_at=member.joined_at
    )


async def remove_member(
    session: AsyncSession,
    state: AppState,
    perms: Permissions,
    actor: User,
    room_id: uuid.UUID,
    user_id: uuid.UUID,
) -> None:
    room = await authorize_room(session, perms, actor, room_id, Action.ROOM_MANAGE)
    await rooms.remove_room_member(session, room.id, user_id)
    await session.commit()
    # Their open WebSockets on this room re-check their access at once (and close with 4403
    # unless they may still read the room, e.g. as an admin or a teacher of the course).
    await state.broadcaster.recheck_sockets(user_id, room.id)
    await after_commit(state, room.id, {"type": "member.removed", "user_id": str(user_id)})
