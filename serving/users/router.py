"""``/users``: accounts (admins manage them; everyone reads and edits their own)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from serving.deps import CurrentUser, PermissionsDep, SessionDep
from serving.errors import ERROR_RESPONSES
from serving.pagination import Page, PageDep
from serving.users import service
from serving.users.schemas import MeUpdate, UserCreate, UserOut, UserUpdate

router = APIRouter(prefix="/users", tags=["users"], responses=ERROR_RESPONSES)


@router.get("", response_model=Page[UserOut])
async def list_users(
    session: SessionDep,
    perms: PermissionsDep,
    user: CurrentUser,
    page: PageDep,
    q: Annotated[str | None, Query(max_length=200, description="email or name contains")] = None,
) -> Page[UserOut]:
    return await service.list_users(session, perms, user, page, q)


@router.post("", response_model=UserOut, status_code=status.HTTP_201_CREATED)
async def create_user(
    body: UserCreate, session: SessionDep, perms: PermissionsDep, user: CurrentUser
) -> UserOut:
    return UserOut.model_validate(await service.create_user(session, perms, user, body))


@router.get("/me", response_model=UserOut)
async def read_me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user)


@router.patch("/me", response_model=UserOut)
async def update_me(
    body: MeUpdate, request: Request, session: SessionDep, user: CurrentUser
) -> UserOut:
    """Change your name, or your password (with the current one; other sessions end)."""
    current = getattr(request.state, "auth_session_id", None)
    return UserOut.model_validate(await service.update_me(session, user, body, current))


@router.get("/{user_id}", response_model=UserOut)
async def read_user(
    user_id: uuid.UUID, session: SessionDep, perms: PermissionsDep, user: CurrentUser
) -> UserOut:
    return UserOut.model_validate(await service.get_user(session, perms, user, user_id))


@router.patch("/{user_id}", response_model=UserOut)
async def update_user(
    user_id: uuid.UUID,
    body: UserUpdate,
    session: SessionDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> UserOut:
    return UserOut.model_validate(await service.update_user(session, perms, user, user_id, body))


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_user(
    user_id: uuid.UUID, session: SessionDep, perms: PermissionsDep, user: CurrentUser
) -> Response:
    await service.delete_user(session, perms, user, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
