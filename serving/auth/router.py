"""``/auth``: login, refresh, logout (tokens in HttpOnly cookies)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from serving.auth import service
from serving.auth.schemas import LoginIn, SessionOut
from serving.auth.security import (
    ACCESS_COOKIE,
    CSRF_COOKIE,
    CSRF_HEADER,
    REFRESH_COOKIE,
    clear_auth_cookies,
    csrf_matches,
    set_auth_cookies,
)
from serving.deps import SessionDep, StateDep
from serving.errors import ERROR_RESPONSES, RATE_LIMITED_RESPONSE, Forbidden, Unauthorized
from serving.state import AppState
from serving.users.schemas import UserOut

router = APIRouter(prefix="/auth", tags=["auth"], responses=ERROR_RESPONSES)


def _session_out(tokens: service.IssuedTokens) -> SessionOut:
    return SessionOut(
        user=UserOut.model_validate(tokens.user),
        access_expires_at=tokens.access_expires_at,
        refresh_expires_at=tokens.refresh_expires_at,
        csrf_token=tokens.csrf_token,
    )


def _set_cookies(response: Response, state: AppState, tokens: service.IssuedTokens) -> None:
    set_auth_cookies(
        response,
        state.settings,
        tokens.access_token,
        tokens.refresh_token,
        tokens.csrf_token,
        tokens.refresh_max_age,
    )


def _require_csrf(request: Request) -> None:
    if not csrf_matches(request.cookies.get(CSRF_COOKIE), request.headers.get(CSRF_HEADER)):
        raise Forbidden(
            f"the {CSRF_HEADER} header must repeat the {CSRF_COOKIE} cookie", "csrf_failed"
        )


@router.post(
    "/login",
    response_model=SessionOut,
    responses=RATE_LIMITED_RESPONSE,
)
async def login(
    body: LoginIn, request: Request, response: Response, session: SessionDep, state: StateDep
) -> SessionOut:
    """Check the credentials; set the access, refresh and CSRF cookies."""
    client_ip = request.client.host if request.client else "unknown"
    tokens = await service.login(
        session, state.redis, state.settings, body.email, body.password, client_ip
    )
    _set_cookies(response, state, tokens)
    return _session_out(tokens)


@router.post("/refresh", response_model=SessionOut)
async def refresh(
    request: Request, response: Response, session: SessionDep, state: StateDep
) -> SessionOut:
    """Rotate the refresh token (one use each) and issue a new access token. Reusing a spent
    refresh token revokes the whole login session (and closes its WebSockets), unless it is
    within ``REFRESH_REUSE_GRACE_SECONDS`` of its first use (two tabs refreshing at once both
    succeed). A session ends ``SESSION_MAX_LIFETIME_SECONDS`` after the login however often it
    is refreshed (401 ``session_expired``). Needs the CSRF header."""
    raw = request.cookies.get(REFRESH_COOKIE)
    if not raw:
        raise Unauthorized("no refresh token cookie", "invalid_refresh_token")
    _require_csrf(request)
    tokens = await service.refresh(
        session, state.settings, raw, request.cookies.get(CSRF_COOKIE), state.broadcaster
    )
    _set_cookies(response, state, tokens)
    return _session_out(tokens)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(request: Request, session: SessionDep, state: StateDep) -> Response:
    """End the login session (every token of it), close its WebSockets and clear the cookies.
    Needs the CSRF header when auth cookies are present."""
    raw_refresh = request.cookies.get(REFRESH_COOKIE)
    access = request.cookies.get(ACCESS_COOKIE)
    if raw_refresh or access:
        _require_csrf(request)
    await service.logout(session, state.settings, raw_refresh, access, state.broadcaster)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    clear_auth_cookies(response, state.settings)
    return response
