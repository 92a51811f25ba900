from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import AuthorKind, User, UserRole
from knowledge import rooms
from realtime.events import MessageCreated, MessageDeleted, MessageEdited
from serving.chat.schemas import MessageOut, MessagePage
from serving.notify import after_commit
from serving.permissions import Action, Permissions
from serving.rooms.service import authorize_room
from serving.state import AppState


def message_frame(kind: str, message: MessageOut) -> dict:
    return {"type": kind, "message": message.model_dump(mode="json")}


async def post_message(
    session: AsyncSession,
    state: AppState,
    perms: Permissions,
    actor: User,
    room_id: uuid.UUID,
    content: str,
) -> MessageOut:
    room = await authorize_room(session, perms, actor, room_id, Action.MESSAGE_POST)
    kind = AuthorKind.agent if actor.role == UserRole.agent else AuthorKind.human
    message = await rooms.post_message(
        session, room.id, actor.id, content, state.settings.max_message_chars, author_kind=kind
    )
    record = await rooms.message_record(session, message)
    await session.commit()
    out = MessageOut.from_record(record)
    await after_commit(
        state,
        room.id,
        message_frame("message.created", out),
        MessageCreated(room_id=str(room.id), message_id=out.id, actor_id=str(actor.id)),
    )
    return out


async def history(
    session: AsyncSession,
    perms: Permissions,
    actor: User,
    room_id: uuid.UUID,
    limit: int,
    before: int | None,
    after: int | None,
) -> MessagePage:
    room = await authorize_room(session, perms, actor, room_id, Action.ROOM_READ)
    records, has_more = await rooms.list_messages(session, room.id, limit, before, after)
    items = [MessageOut.from_record(r) for r in records]
    cursor = None
    if has_more and items:
        cursor = items[-1].id if after is not None else items[0].id
    return MessagePage(items=items, has_more=has_more, next_cursor=cursor)


async def get_message(
    session: AsyncSession, perms: Permissions, actor: User, room_id: uuid.UUID, message_id: int
) -> MessageOut:
    room = await authorize_room(session, perms, actor, room_id, Action.ROOM_READ)
    return MessageOut.from_record(await rooms.get_message(session, room.id, message_id))


async def edit_message(
    session: AsyncSession,
    state: AppState,
    perms: Permissions,
    actor: User,
    room_id: uuid.UUID,
    message_id: int,
    content: str,
) -> MessageOut:
    room = await authorize_room(session, perms, actor, room_id, Action.ROOM_READ)
    record = await rooms.get_message(session, room.id, message_id)
    await perms.check(actor, Action.MESSAGE_EDIT, record)
    message = await rooms.edit_message(
        session, room.id, message_id, content, state.settings.max_message_chars
    )
    out = MessageOut.from_record(await rooms.message_record(session, message))
    await session.commit()
    await after_commit(
        state,
        room.id,
        message_frame("message.edited", out),
        MessageEdited(room_id=str(room.id), message_id=out.id, actor_id=str(actor.id)),
    )
    return out


async def delete_message(
    session: AsyncSession,
    state: AppState,
    perms: Permissions,
    actor: User,
    room_id: uuid.UUID,
    message_id: int,
) -> None:
    room = await authorize_room(session, perms, actor, room_id, Action.ROOM_READ)
    record = await rooms.get_message(session, room.id, message_id)
    await perms.check(actor, Action.MESSAGE_DELETE, record)
    await rooms.delete_message(session, room.id, message_id)
    await session.commit()
    await after_commit(
        state,
        room.id,
        {"type": "message.deleted", "message_id": message_id},
        MessageDeleted(room_id=str(room.id), message_id=message_id, actor_id=str(actor.id)),
    )
