from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import AuthorKind, User, UserRole
from knowledge import chat, transcripts
from realtime.events import MessageCreated, MessageDeleted, MessageEdited, RoomRebuildRequested
from serving.chat.schemas import ImportOut, MessageOut, MessagePage, TranscriptIn
from serving.errors import Unprocessable
from serving.notify import after_commit, stage_event
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
    reply_to: int | None = None,
    meta: dict[str, Any] | None = None,
) -> MessageOut:
    room = await authorize_room(session, perms, actor, room_id, Action.MESSAGE_POST)
    kind = AuthorKind.agent if actor.role == UserRole.agent else AuthorKind.human
    message = await chat.post_message(
        session,
        room.id,
        actor.id,
        content,
        state.settings.max_message_chars,
        author_kind=kind,
        reply_to=reply_to,
        meta=meta,
    )
    record = await chat.message_record(session, message)
    staged = await stage_event(
        session, MessageCreated(room_id=str(room.id), message_id=message.id, actor_id=str(actor.id))
    )
    await session.commit()
    out = MessageOut.from_record(record)
    await after_commit(state, room.id, message_frame("message.created", out), staged)
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
    records, has_more = await chat.list_messages(session, room.id, limit, before, after)
    items = [MessageOut.from_record(r) for r in records]
    cursor = None
    if has_more and items:
        cursor = items[-1].id if after is not None else items[0].id
    return MessagePage(items=items, has_more=has_more, next_cursor=cursor)


async def get_message(
    session: AsyncSession, perms: Permissions, actor: User, room_id: uuid.UUID, message_id: int
) -> MessageOut:
    room = await authorize_room(session, perms, actor, room_id, Action.ROOM_READ)
    return MessageOut.from_record(await chat.get_message(session, room.id, message_id))


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
    record = await chat.get_message(session, room.id, message_id)
    await perms.check(actor, Action.MESSAGE_EDIT, record)
    message = await chat.edit_message(
        session, room.id, message_id, content, state.settings.max_message_chars
    )
    out = MessageOut.from_record(await chat.message_record(session, message))
    staged = await stage_event(
        session, MessageEdited(room_id=str(room.id), message_id=out.id, actor_id=str(actor.id))
    )
    await session.commit()
    await after_commit(state, room.id, message_frame("message.edited", out), staged)
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
    record = await chat.get_message(session, room.id, message_id)
    await perms.check(actor, Action.MESSAGE_DELETE, record)
    await chat.delete_message(session, room.id, message_id)
    staged = await stage_event(
        session, MessageDeleted(room_id=str(room.id), message_id=message_id, actor_id=str(actor.id))
    )
    await session.commit()
    await after_commit(
        state, room.id, {"type": "message.deleted", "message_id": message_id}, staged
    )


async def import_transcript(
    session: AsyncSession,
    state: AppState,
    perms: Permissions,
    actor: User,
    room_id: uuid.UUID,
    body: TranscriptIn,
) -> ImportOut:
    """Admins only. All rows are validated before anything is written; one
    ``room.rebuild_requested`` (full=false) event and one ``messages.imported`` frame announce
    the import after the commit."""
    room = await authorize_room(session, perms, actor, room_id, Action.MESSAGE_IMPORT)
    max_chars = state.settings.max_message_chars
    try:
        # polars parses off the event loop
        rows = await asyncio.to_thread(
            transcripts.parse_transcript, body.content, body.format, max_chars
        )
    except transcripts.TranscriptError as error:
        raise Unprocessable(
            str(error),
            "invalid_input",
            details=[{"line": p.line, "message": p.reason} for p in error.problems],
        ) from None
    result = await transcripts.import_transcript(session, room.id, rows, max_chars)
    staged = await stage_event(
        session, RoomRebuildRequested(room_id=str(room.id), full=False, actor_id=str(actor.id))
    )
    await session.commit()
    out = ImportOut(
        room_id=result.room_id,
        messages=result.messages,
        speakers=result.speakers,
        new_users=result.new_users,
        first_time=result.first_time,
        last_time=result.last_time,
        first_message_id=result.first_message_id,
        last_message_id=result.last_message_id,
    )
    await after_commit(
        state,
        room.id,
        {
            "type": "messages.imported",
            "messages": out.messages,
            "first_message_id": out.first_message_id,
            "last_message_id": out.last_message_id,
        },
        staged,
    )
    return out
