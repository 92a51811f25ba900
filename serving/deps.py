"""FastAPI dependencies as ``Annotated`` types: ``SessionDep``, ``CurrentUser``, …"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyCookie, APIKeyHeader
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from dbschema.models import User
from knowledge.platform import Platform
from knowledge.settings import Settings
from serving.auth import service as auth_service
from serving.auth.security import (
    ACCESS_COOKIE,
    CSRF_COOKIE,
    CSRF_HEADER,
    SAFE_METHODS,
    csrf_matches,
)
from serving.errors import Forbidden, Unauthorized
from serving.permissions import Permissions
from serving.state import AppState


def get_state(conn: HTTPConnection) -> AppState:
    state: AppState = conn.app.state.coagent
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_platform(state: StateDep) -> Platform:
    return state.platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with state.session_factory() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise


SessionDep = Annotated[AsyncSession, Depends(get_session)]

# Documented in OpenAPI as the two halves of cookie authentication.
_access_cookie = APIKeyCookie(
    name=ACCESS_COOKIE,
    auto_error=False,
    description="The access JWT, set as an HttpOnly cookie by POST /api/v1/auth/login.",
)
_csrf_header = APIKeyHeader(
    name=CSRF_HEADER,
    auto_error=False,
    description=(
        f"Required on POST/PUT/PATCH/DELETE: the value of the `{CSRF_COOKIE}` cookie "
        "(double-submit CSRF protection)."
    ),
)


async def get_current_user(
    request: Request,
    session: SessionDep,
    state: StateDep,
    access_token: Annotated[str | None, Security(_access_cookie)] = None,
    csrf_header: Annotated[str | None, Security(_csrf_header)] = None,
) -> User:
    """The user of the access cookie; unsafe methods must also pass the CSRF check."""
    if not access_token:
        raise Unauthorized("log in first (no access token cookie)")
    user, claims = await auth_service.authenticate(session, state.settings, access_token)
    request.state.auth_session_id = claims.session_id
    if request.method not in SAFE_METHODS and not csrf_matches(
        request.cookies.get(CSRF_COOKIE), csrf_header
    ):
        raise Forbidden(
            f"the {CSRF_HEADER} header must repeat the {CSRF_COOKIE} cookie", "csrf_failed"
        )
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_permissions(session: SessionDep) -> Permissions:
    return Permissions(session)


PermissionsDep = Annotated[Permissions, Depends(get_permissions)]
