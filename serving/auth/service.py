"""Login, refresh-token rotation with reuse detection, logout, and the first super admin.

A login session lives at most ``SESSION_MAX_LIFETIME_SECONDS`` from the login, however often it
is refreshed. Ending a session (logout, reuse of a refresh token, an account change) also
closes its open WebSockets, in every API process (``Broadcaster.close_sockets``)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import AuthSession, RefreshToken, User, UserRole
from knowledge import users
from knowledge.settings import Settings
from serving.auth import ratelimit
from serving.auth.security import (
    AccessClaims,
    create_access_token,
    decode_access_token,
    hash_password,
    hash_refresh_token,
    new_csrf_token,
    new_refresh_token,
    verify_password,
)
from serving.chat.broadcast import CLOSE_SESSION_ENDED, Broadcaster
from serving.errors import Unauthorized

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IssuedTokens:
    user: User
    session_id: uuid.UUID
    access_token: str
    access_expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime
    csrf_token: str

    @property
    def refresh_max_age(self) -> int:
        """Seconds the refresh (and CSRF) cookie should live."""
        return max(int((self.refresh_expires_at - datetime.now(UTC)).total_seconds()), 1)


def session_ends_at(settings: Settings, login_session: AuthSession) -> datetime:
    """When the login session expires for good (refreshing does not extend it)."""
    created = login_session.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return created + timedelta(seconds=settings.session_max_lifetime_seconds)


def _session_expired() -> Unauthorized:
    return Unauthorized(
        "this login session has reached its maximum lifetime; log in again", "session_expired"
    )


async def authenticate(
    session: AsyncSession, settings: Settings, token: str
) -> tuple[User, AccessClaims]:
    """The active user of a valid access token whose login session is not revoked."""
    claims = decode_access_token(settings, token)
    row = (
        await session.execute(
            select(User, AuthSession)
            .join(AuthSession, AuthSession.user_id == User.id)
            .where(AuthSession.id == claims.session_id, User.id == claims.user_id)
        )
    ).first()
    if row is None or row[1].revoked_at is not None:
        raise Unauthorized("this login session has ended; log in again", "session_revoked")
    if session_ends_at(settings, row[1]) <= datetime.now(UTC):
        raise _session_expired()
    user: User = row[0]
    if not user.is_active:
        raise Unauthorized("this account is disabled", "inactive_user")
    return user, claims


async def _issue(
    session: AsyncSession,
    settings: Settings,
    user: User,
    login_session: AuthSession,
    csrf_token: str | None = None,
) -> IssuedTokens:
    raw, digest = new_refresh_token()
    expires = min(
        datetime.now(UTC) + timedelta(seconds=settings.refresh_token_ttl_seconds),
        session_ends_at(settings, login_session),
    )
    session.add(RefreshToken(session_id=login_session.id, token_hash=digest, expires_at=expires))
    await session.flush()
    access, access_exp = create_access_token(settings, user.id, login_session.id)
    return IssuedTokens(
        user=user,
        session_id=login_session.id,
        access_token=access,
        access_expires_at=datetime.fromtimestamp(access_exp, UTC),
        refresh_token=raw,
        refresh_expires_at=expires,
        csrf_token=csrf_token or new_csrf_token(),
    )


async def login(
    session: AsyncSession,
    redis: Redis,
    settings: Settings,
    email: str,
    password: str,
    client_ip: str,
) -> IssuedTokens:
    await ratelimit.check_login(redis, settings, client_ip, email)
    user = await users.get_user_by_email(session, email)
    ok, needs_rehash = await verify_password(user.hashed_password if user else None, password)
    if user is None or not ok or not user.is_active or user.role == UserRole.agent:
        await ratelimit.record_failure(redis, settings, client_ip, email)
        raise Unauthorized("wrong email or password", "invalid_credentials")
    await ratelimit.clear_failures(redis, client_ip, email)
    if needs_rehash:
        user.hashed_password = await hash_password(password)
    login_session = AuthSession(user_id=user.id, created_at=datetime.now(UTC))
    session.add(login_session)
    await session.flush()
    tokens = await _issue(session, settings, user, login_session)
    await session.commit()
    return tokens


async def refresh(
    session: AsyncSession,
    settings: Settings,
    raw_token: str,
    csrf_token: str | None,
    sockets: Broadcaster | None = None,
) -> IssuedTokens:
    """Rotate a refresh token. Presenting one that was already used revokes its whole family
    (the login session): either the client or a thief holds a copy, and we cannot tell which.

    Except within ``REFRESH_REUSE_GRACE_SECONDS`` of its first use: two tabs that refresh at
    the same moment both get fresh tokens (each its own refresh token of the same session)."""
    row = (
        await session.execute(
            select(RefreshToken, AuthSession)
            .join(AuthSession, AuthSession.id == RefreshToken.session_id)
            .where(RefreshToken.token_hash == hash_refresh_token(raw_token))
            .with_for_update(of=RefreshToken)
        )
    ).first()
    if row is None:
        raise Unauthorized("the refresh token is not valid", "invalid_refresh_token")
    token, login_session = row
    now = datetime.now(UTC)
    if login_session.revoked_at is not None:
        raise Unauthorized("this login session has ended; log in again", "session_revoked")
    if session_ends_at(settings, login_session) <= now:
        raise _session_expired()
    if token.used_at is not None:
        used_at = token.used_at if token.used_at.tzinfo else token.used_at.replace(tzinfo=UTC)
        if (now - used_at).total_seconds() > settings.refresh_reuse_grace_seconds:
            await revoke_session(session, login_session.id, "refresh_token_reuse")
            await session.commit()
            log.warning("refresh token reuse: session %s revoked", login_session.id)
            if sockets is not None:
                await sockets.close_sockets(
                    CLOSE_SESSION_ENDED,
                    "the session was revoked",
                    user_id=login_session.user_id,
                    session_id=login_session.id,
                )
            raise Unauthorized(
                "this refresh token was already used; the session is revoked",
                "refresh_token_reused",
            )
        log.info("refresh token of session %s reused within the grace window", login_session.id)
    if token.expires_at <= now:
        raise Unauthorized("the refresh token has expired", "refresh_token_expired")
    user = await session.get(User, login_session.user_id)
    if user is None or not user.is_active:
        raise Unauthorized("this account is disabled", "inactive_user")
    if token.used_at is None:
        token.used_at = now
    tokens = await _issue(session, settings, user, login_session, csrf_token)
    await session.commit()
    return tokens


async def revoke_session(session: AsyncSession, session_id: uuid.UUID, reason: str) -> None:
    await session.execute(
        update(AuthSession)
        .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC), revoked_reason=reason)
    )


async def revoke_user_sessions(
    session: AsyncSession, user_id: uuid.UUID, reason: str, keep: uuid.UUID | None = None
) -> None:
    """End every login session of the user (but ``keep``)."""
    query = update(AuthSession).where(
        AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None)
    )
    if keep is not None:
        query = query.where(AuthSession.id != keep)
    await session.execute(query.values(revoked_at=datetime.now(UTC), revoked_reason=reason[:64]))


async def logout(
    session: AsyncSession,
    settings: Settings,
    raw_refresh: str | None,
    access: str | None,
    sockets: Broadcaster | None = None,
) -> None:
    """End the login session named by the refresh cookie (or else by the access cookie), and
    close its WebSockets."""
    session_id: uuid.UUID | None = None
    if raw_refresh:
        token = (
            await session.execute(
                select(RefreshToken).where(
                    RefreshToken.token_hash == hash_refresh_token(raw_refresh)
                )
            )
        ).scalar_one_or_none()
        session_id = token.session_id if token is not None else None
    if session_id is None and access:
        try:
            session_id = decode_access_token(settings, access).session_id
        except Unauthorized:
            session_id = None
    if session_id is not None:
        await revoke_session(session, session_id, "logout")
        await session.commit()
        user_id = await session.scalar(
            select(AuthSession.user_id).where(AuthSession.id == session_id)
        )
        if sockets is not None and user_id is not None:
            await sockets.close_sockets(
                CLOSE_SESSION_ENDED, "logged out", user_id=user_id, session_id=session_id
            )


async def ensure_superuser(session: AsyncSession, settings: Settings) -> User | None:
    """Create the super admin named by FIRST_SUPERUSER / FIRST_SUPERUSER_PASSWORD once.

    An existing account keeps its password; it is made an active super admin again."""
    settings.check_production()  # never create a super admin with a default password
    email, password = settings.first_superuser, settings.first_superuser_password
    if not email or not password:
        return None
    user = await users.get_user_by_email(session, email)
    if user is None:
        try:
            user = await users.create_user(
                session,
                email,
                "Super Admin",
                UserRole.super_admin,
                hashed_password=await hash_password(password),
            )
            await session.commit()
            log.info("created the super admin %s", user.email)
            return user
        except IntegrityError:  # another process created it at the same moment
            await session.rollback()
            user = await users.get_user_by_email(session, email)
            if user is None:
                raise
    if user.role != UserRole.super_admin or not user.is_active:
        user.role = UserRole.super_admin
        user.is_active = True
    await session.commit()
    return user
