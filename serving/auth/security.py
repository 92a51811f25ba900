"""Passwords (Argon2), access JWTs, opaque refresh tokens, CSRF tokens and the auth cookies."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from knowledge.settings import Settings
from serving.errors import Unauthorized

API_PREFIX = "/api/v1"
ACCESS_COOKIE = "coagent_access"
REFRESH_COOKIE = "coagent_refresh"
CSRF_COOKIE = "coagent_csrf"
CSRF_HEADER = "X-CSRF-Token"
#: The refresh cookie is only sent to the auth endpoints.
REFRESH_COOKIE_PATH = f"{API_PREFIX}/auth"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

_ALGORITHM = "HS256"
_ISSUER = "coagent"
_hasher = PasswordHasher()
# Verified against when the email is unknown, so both cases cost the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

MAX_PASSWORD_CHARS = 1024


# passwords


async def hash_password(password: str) -> str:
    return await run_in_threadpool(_hasher.hash, password)


async def verify_password(hashed: str | None, password: str) -> tuple[bool, bool]:
    """(matches, needs rehash). A missing hash never matches (agents cannot log in)."""

    def verify() -> tuple[bool, bool]:
        try:
            _hasher.verify(hashed or _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            return False, False
        if hashed is None:
            return False, False
        return True, _hasher.check_needs_rehash(hashed)

    return await run_in_threadpool(verify)


# access tokens


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    session_id: uuid.UUID
    expires_at: float


def create_access_token(
    settings: Settings, user_id: uuid.UUID, session_id: uuid.UUID
) -> tuple[str, float]:
    now = int(time.time())
    expires = now + settings.access_token_ttl_seconds
    claims = {
        "sub": str(user_id),
        "sid": str(session_id),
        "typ": "access",
        "iss": _ISSUER,
        "iat": now,
        "exp": expires,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, settings.secret_key, algorithm=_ALGORITHM), float(expires)


def decode_access_token(settings: Settings, token: str) -> AccessClaims:
    try:
        claims = jwt.decode(
            token,
            settings.secret_key,
            algorithms=[_ALGORITHM],
            issuer=_ISSUER,
            options={"require": ["exp", "iat", "sub", "sid", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the access token has expired", "token_expired") from None
    except jwt.PyJWTError:
        raise Unauthorized("the access token is not valid", "invalid_token") from None
    if claims.get("typ") != "access":
        raise Unauthorized("the access token is not valid", "invalid_token")
    try:
        return AccessClaims(
            user_id=uuid.UUID(str(claims["sub"])),
            session_id=uuid.UUID(str(claims["sid"])),
            expires_at=float(claims["exp"]),
        )
    except (ValueError, TypeError):
        raise Unauthorized("the access token is not valid", "invalid_token") from None


# refresh and CSRF tokens


def new_refresh_token() -> tuple[str, str]:
    """(the token sent to the client, its SHA-256 stored in the database)."""
    token = secrets.token_urlsafe(32)
    return token, hash_refresh_token(token)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(cookie: str | None, header: str | None) -> bool:
    if not cookie or not header:
        return False
    return secrets.compare_digest(cookie.encode(), header.encode())


# cookies


def set_auth_cookies(
    response: Response,
    settings: Settings,
    access: str,
    refresh: str,
    csrf: str,
    refresh_max_age: int | None = None,
) -> None:
    """``refresh_max_age``: seconds left of the refresh token (default: its full TTL)."""
    common = {"secure": settings.cookie_secure, "samesite": "lax"}
    refresh_max_age = refresh_max_age or settings.refresh_token_ttl_seconds
    response.set_cookie(
        ACCESS_COOKIE,
        access,
        max_age=settings.access_token_ttl_seconds,
        path="/",
        httponly=True,
        **common,  # type: ignore[arg-type]
    )
    response.set_cookie(
        REFRESH_COOKIE,
        refresh,
        max_age=refresh_max_age,
        path=REFRESH_COOKIE_PATH,
        httponly=True,
        **common,  # type: ignore[arg-type]
    )
    # Readable by the SPA, which echoes it in the X-CSRF-Token header (double submit).
    response.set_cookie(
        CSRF_COOKIE,
        csrf,
        max_age=refresh_max_age,
        path="/",
        httponly=False,
        **common,  # type: ignore[arg-type]
    )


def clear_auth_cookies(response: Response, settings: Settings) -> None:
    common = {"secure": settings.cookie_secure, "samesite": "lax"}
    response.delete_cookie(ACCESS_COOKIE, path="/", httponly=True, **common)  # type: ignore[arg-type]
    response.delete_cookie(
        REFRESH_COOKIE,
        path=REFRESH_COOKIE_PATH,
        httponly=True,
        **common,  # type: ignore[arg-type]
    )
    response.delete_cookie(CSRF_COOKIE, path="/", **common)  # type: ignore[arg-type]
