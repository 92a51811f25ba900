"""``/rooms/{room_id}/messages``: post, edit, delete, and history with cursor pagination."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Path, Query, Response, status

from dbschema.models import UserRole
from serving.agents.service import respond_to_mentions
from serving.chat import service
from serving.chat.schemas import (
    MAX_ID,
    ImportOut,
    MessageIn,
    MessageOut,
    MessagePage,
    TranscriptIn,
)
from serving.deps import CurrentUser, PermissionsDep, SessionDep, StateDep
from serving.errors import ERROR_RESPONSES

router = APIRouter(prefix="/rooms/{room_id}/messages", tags=["chat"], responses=ERROR_RESPONSES)

MessageId = Annotated[int, Path(ge=1, le=MAX_ID)]
Cursor = Annotated[int | None, Query(ge=0, le=MAX_ID)]


@router.get("", response_model=MessagePage)
async def list_messages(
    room_id: uuid.UUID,
    session: SessionDep,
    perms: PermissionsDep,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Cursor = None,
    after: Cursor = None,
) -> MessagePage:
    """The newest messages (or those older than ``before``), or the oldest ones newer than
    ``after`` (to catch up after a disconnect)."""
    return await service.history(session, perms, user, room_id, limit, before, after)


@router.post("", response_model=MessageOut, status_code=status.HTTP_201_CREATED)
async def post_message(
    room_id: uuid.UUID,
    body: MessageIn,
    background: BackgroundTasks,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> MessageOut:
    """Post a message; it is broadcast to the room. Mention ``@analytics`` (or a room agent's
    ``@name``) to have that agent answer in the room."""
    message = await service.post_message(session, state, perms, user, room_id, body.content)
    if "@" in message.content and user.role != UserRole.agent:
        background.add_task(respond_to_mentions, state, room_id, message.id, message.content)
    return message


@router.post("/import", response_model=ImportOut, status_code=status.HTTP_201_CREATED)
async def import_transcript(
    room_id: uuid.UUID,
    body: TranscriptIn,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> ImportOut:
    """Admins only: import a transcript (JSONL or CSV content) as the room's messages, in
    order; each speaker becomes a member. A malformed transcript is refused whole (422, the
    line and the reason) and nothing is stored. The room's graph refresh is requested."""
    return await service.import_transcript(session, state, perms, user, room_id, body)


@router.get("/{message_id}", response_model=MessageOut)
async def read_message(
    room_id: uuid.UUID,
    message_id: MessageId,
    session: SessionDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> MessageOut:
    return await service.get_message(session, perms, user, room_id, message_id)


@router.patch("/{message_id}", response_model=MessageOut)
async def edit_message(
    room_id: uuid.UUID,
    message_id: MessageId,
    body: MessageIn,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> MessageOut:
    """Edit your own message."""
    return await service.edit_message(
        session, state, perms, user, room_id, message_id, body.content
    )


@router.delete("/{message_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_message(
    room_id: uuid.UUID,
    message_id: MessageId,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> Response:
    """Delete your own message (moderators may delete any)."""
    await service.delete_message(session, state, perms, user, room_id, message_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
