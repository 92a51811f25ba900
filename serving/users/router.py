"""``/users``: accounts (admins manage them; everyone reads and edits their own)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status

from serving.deps import CurrentUser, PermissionsDep, SessionDep, StateDep
from serving.errors import ERROR_RESPONSES, ErrorResponse
from serving.pagination import Page, PageDep
from serving.users import service
from serving.users.schemas import MeUpdate, UserCreate, UserOut, UserUpdate

router = APIRouter(prefix="/users", tags=["users"], responses=ERROR_RESPONSES)

EMAIL_TAKEN_RESPONSE: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse, "description": "another account has this email (email_taken)"}
}


@router.get("", response_model=Page[UserOut])
async def list_users(
    session: SessionDep,
    perms: PermissionsDep,
    user: CurrentUser,
    page: PageDep,
    q: Annotated[str | None, Query(max_length=200, description="email or name contains")] = None,
) -> Page[UserOut]:
    return await service.list_users(session, perms, user, page, q)


@router.post(
    "",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    responses=EMAIL_TAKEN_RESPONSE,
)
async def create_user(
    body: UserCreate, session: SessionDep, perms: PermissionsDep, user: CurrentUser
) -> UserOut:
    return UserOut.model_validate(await service.create_user(session, perms, user, body))


@router.get("/me", response_model=UserOut)
async def read_me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user)


@router.patch("/me", response_model=UserOut)
async def update_me(
    body: MeUpdate, request: Request, session: SessionDep, state: StateDep, user: CurrentUser
) -> UserOut:
    """Change your name, or your password (with the current one; other sessions end and
    their WebSockets close)."""
    current = getattr(request.state, "auth_session_id", None)
    return UserOut.model_validate(
        await service.update_me(session, user, body, current, state.broadcaster)
    )


@router.get("/{user_id}", response_model=UserOut)
async def read_user(
    user_id: uuid.UUID, session: SessionDep, perms: PermissionsDep, user: CurrentUser
) -> UserOut:
    return UserOut.model_validate(await service.get_user(session, perms, user, user_id))


@router.patch("/{user_id}", response_model=UserOut, responses=EMAIL_TAKEN_RESPONSE)
async def update_user(
    user_id: uuid.UUID,
    body: UserUpdate,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> UserOut:
    """Admins: change an account. A new password or ``is_active: false`` ends the user's
    sessions and closes their WebSockets at once."""
    return UserOut.model_validate(
        await service.update_user(session, perms, user, user_id, body, state.broadcaster)
    )


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_user(
    user_id: uuid.UUID,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> Response:
    await service.delete_user(session, perms, user, user_id, state.broadcaster)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
