"""``/rooms``: rooms and their members."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from serving.deps import CurrentUser, PermissionsDep, SessionDep, StateDep
from serving.errors import ERROR_RESPONSES
from serving.pagination import Page, PageDep
from serving.permissions import Action
from serving.rooms import service
from serving.rooms.schemas import RoomCreate, RoomMemberIn, RoomMemberOut, RoomOut, RoomUpdate

router = APIRouter(prefix="/rooms", tags=["rooms"], responses=ERROR_RESPONSES)


@router.get("", response_model=Page[RoomOut])
async def list_rooms(
    session: SessionDep,
    user: CurrentUser,
    page: PageDep,
    course_id: Annotated[uuid.UUID | None, Query()] = None,
) -> Page[RoomOut]:
    """Every room for admins; otherwise your rooms and the rooms of courses you manage."""
    return await service.list_rooms(session, user, page, course_id)


@router.post("", response_model=RoomOut, status_code=status.HTTP_201_CREATED)
async def create_room(
    body: RoomCreate, session: SessionDep, perms: PermissionsDep, user: CurrentUser
) -> RoomOut:
    """Create a room in a course you manage; you become its moderator."""
    return RoomOut.model_validate(await service.create_room(session, perms, user, body))


@router.get("/{room_id}", response_model=RoomOut)
async def read_room(
    room_id: uuid.UUID, session: SessionDep, perms: PermissionsDep, user: CurrentUser
) -> RoomOut:
    room = await service.authorize_room(session, perms, user, room_id, Action.ROOM_READ)
    return RoomOut.model_validate(room)


@router.patch("/{room_id}", response_model=RoomOut)
async def update_room(
    room_id: uuid.UUID,
    body: RoomUpdate,
    session: SessionDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> RoomOut:
    return RoomOut.model_validate(await service.update_room(session, perms, user, room_id, body))


@router.delete("/{room_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_room(
    room_id: uuid.UUID,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> Response:
    """Delete the room; its open WebSockets close (4404)."""
    await service.delete_room(session, perms, user, room_id, state.broadcaster)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{room_id}/members", response_model=Page[RoomMemberOut])
async def list_room_members(
    room_id: uuid.UUID,
    session: SessionDep,
    perms: PermissionsDep,
    user: CurrentUser,
    page: PageDep,
) -> Page[RoomMemberOut]:
    return await service.list_members(session, perms, user, room_id, page)


@router.put("/{room_id}/members", response_model=RoomMemberOut)
async def set_room_member(
    room_id: uuid.UUID,
    body: RoomMemberIn,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> RoomMemberOut:
    """Add a member or change their role."""
    return await service.set_member(session, state, perms, user, room_id, body)


@router.delete("/{room_id}/members/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_room_member(
    room_id: uuid.UUID,
    user_id: uuid.UUID,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> Response:
    """Remove a member; their open WebSockets on the room are closed."""
    await service.remove_member(session, state, perms, user, room_id, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
