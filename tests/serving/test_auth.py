"""Login, cookies, CSRF, access-token checks, refresh rotation with reuse detection, logout,
rate limiting and the start-up super admin."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import jwt
from fastapi import FastAPI
from sqlalchemy import func, select, update
from starlette.responses import Response

from dbschema.models import AuthSession, RefreshToken, User, UserRole
from knowledge import users
from knowledge.platform import Platform
from knowledge.settings import Settings
from serving.auth.security import (
    ACCESS_COOKIE,
    CSRF_COOKIE,
    CSRF_HEADER,
    REFRESH_COOKIE,
    hash_password,
    hash_refresh_token,
    set_auth_cookies,
)
from serving.auth.service import ensure_superuser
from tests.serving.conftest import (
    PASSWORD,
    SUPERUSER,
    SUPERUSER_PASSWORD,
    Api,
    LiveServer,
    client_with,
    error_code,
)


async def _login(app: FastAPI, email: str, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    client = client_with(app)
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    return client, response


def _set_cookie_headers(response) -> dict[str, str]:  # type: ignore[no-untyped-def]
    headers = {}
    for raw in response.headers.get_list("set-cookie"):
        headers[raw.split("=", 1)[0]] = raw
    return headers


async def test_login_sets_httponly_cookies_and_returns_the_user(api: Api, app: FastAPI) -> None:
    user = await api.user(UserRole.teacher, PASSWORD)
    client, response = await _login(app, user.email.upper())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"]["email"] == user.email
    assert body["user"]["role"] == "teacher"
    assert "access_token" not in body and "refresh_token" not in body
    cookies = _set_cookie_headers(response)
    access, refresh, csrf = cookies[ACCESS_COOKIE], cookies[REFRESH_COOKIE], cookies[CSRF_COOKIE]
    for header in (access, refresh):
        assert "HttpOnly" in header
    assert "HttpOnly" not in csrf
    for header in (access, refresh, csrf):
        assert "SameSite=lax" in header or "samesite=lax" in header.lower()
        assert "Secure" not in header  # COOKIE_SECURE defaults to false for local http
    assert "Path=/api/v1/auth" in refresh
    assert body["csrf_token"] == client.cookies[CSRF_COOKIE]

    me = await client.get("/api/v1/users/me")
    assert me.status_code == 200
    assert me.json()["id"] == str(user.id)


def test_secure_flag_is_configurable(settings: Settings) -> None:
    response = Response()
    set_auth_cookies(response, settings.model_copy(update={"cookie_secure": True}), "a", "r", "c")
    headers = [v.decode() for k, v in response.raw_headers if k == b"set-cookie"]
    assert len(headers) == 3
    assert all("Secure" in h and "samesite=lax" in h.lower() for h in headers)


async def test_wrong_password_and_unknown_email_look_the_same(api: Api, app: FastAPI) -> None:
    user = await api.user(password=PASSWORD)
    _, wrong = await _login(app, user.email, "not the password")
    _, unknown = await _login(app, f"nobody.{uuid.uuid4().hex}@serving.test")
    assert wrong.status_code == unknown.status_code == 401
    assert error_code(wrong) == error_code(unknown) == "invalid_credentials"
    assert ACCESS_COOKIE not in _set_cookie_headers(wrong)


async def test_agents_and_disabled_users_cannot_log_in(api: Api, app: FastAPI) -> None:
    agent = await api.user(UserRole.agent, PASSWORD)
    disabled = await api.user(password=PASSWORD)
    disabled.is_active = False
    await api.commit()
    for user in (agent, disabled):
        _, response = await _login(app, user.email)
        assert response.status_code == 401


async def test_login_is_rate_limited(api: Api, app: FastAPI, api_settings: Settings) -> None:
    user = await api.user(password=PASSWORD)
    for _ in range(api_settings.login_rate_limit):
        _, response = await _login(app, user.email, "wrong password")
        assert response.status_code == 401
    _, limited = await _login(app, user.email, PASSWORD)
    assert limited.status_code == 429
    assert error_code(limited) == "rate_limited"
    assert int(limited.headers["Retry-After"]) > 0
    # Other accounts from the same address are not locked out.
    other = await api.user(password=PASSWORD)
    _, fine = await _login(app, other.email)
    assert fine.status_code == 200


async def test_anonymous_requests_get_401(app: FastAPI) -> None:
    client = client_with(app)
    response = await client.get("/api/v1/users/me")
    assert response.status_code == 401
    assert error_code(response) == "not_authenticated"


async def test_unsafe_methods_need_the_csrf_header(api: Api, app: FastAPI) -> None:
    user = await api.user(UserRole.teacher)
    client = await api.client(user)
    token = client.headers.pop(CSRF_HEADER)
    created = await client.post("/api/v1/courses", json={"name": "no csrf"})
    assert created.status_code == 403
    assert error_code(created) == "csrf_failed"
    wrong = await client.post(
        "/api/v1/courses", json={"name": "wrong csrf"}, headers={CSRF_HEADER: token + "x"}
    )
    assert wrong.status_code == 403
    # Reads need no header.
    assert (await client.get("/api/v1/courses")).status_code == 200
    ok = await client.post(
        "/api/v1/courses", json={"name": "with csrf"}, headers={CSRF_HEADER: token}
    )
    assert ok.status_code == 201


async def test_tampered_and_expired_tokens_are_refused(
    api: Api, app: FastAPI, api_settings: Settings
) -> None:
    user = await api.user(UserRole.admin)
    client = await api.client(user)
    token = client.cookies[ACCESS_COOKIE]
    header, payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})

    forged_claims = {**claims, "sub": str(uuid.uuid4())}
    forged = jwt.encode(
        forged_claims, "not-the-secret-but-just-as-long-0123456789", algorithm="HS256"
    )
    flipped = f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    expired = jwt.encode(
        {**claims, "iat": int(time.time()) - 3600, "exp": int(time.time()) - 60},
        api_settings.secret_key,
        algorithm="HS256",
    )
    none_alg = jwt.encode(claims, None, algorithm="none")
    for bad, code in (
        (forged, "invalid_token"),
        (flipped, "invalid_token"),
        (none_alg, "invalid_token"),
        ("garbage", "invalid_token"),
        (expired, "token_expired"),
    ):
        probe = client_with(app, {ACCESS_COOKIE: bad})
        response = await probe.get("/api/v1/users/me")
        assert response.status_code == 401, bad
        assert error_code(response) == code


async def _spent_long_ago(api: Api, raw_refresh: str, seconds: float) -> None:
    """Backdate the first use of a refresh token (instead of sleeping through the window)."""
    await api.session.execute(
        update(RefreshToken)
        .where(RefreshToken.token_hash == hash_refresh_token(raw_refresh))
        .values(used_at=RefreshToken.used_at - timedelta(seconds=seconds))
    )
    await api.commit()


async def test_refresh_rotates_and_reuse_revokes_the_family(
    api: Api, app: FastAPI, api_settings: Settings
) -> None:
    user = await api.user(password=PASSWORD)
    client, response = await _login(app, user.email)
    assert response.status_code == 200
    csrf = client.cookies[CSRF_COOKIE]
    first_refresh = client.cookies.get(REFRESH_COOKIE, path="/api/v1/auth")

    # Without the CSRF header the refresh is refused and nothing rotates.
    refused = await client.post("/api/v1/auth/refresh")
    assert refused.status_code == 403

    rotated = await client.post("/api/v1/auth/refresh", headers={CSRF_HEADER: csrf})
    assert rotated.status_code == 200, rotated.text
    second_refresh = client.cookies.get(REFRESH_COOKIE, path="/api/v1/auth")
    assert second_refresh and second_refresh != first_refresh
    assert (await client.get("/api/v1/users/me")).status_code == 200

    # Someone replays the first (spent) refresh token after the grace window: the whole
    # family is revoked …
    await _spent_long_ago(api, first_refresh, api_settings.refresh_reuse_grace_seconds + 1)
    thief = client_with(app, {CSRF_COOKIE: csrf})
    thief.cookies.set(REFRESH_COOKIE, first_refresh, domain="testserver.local", path="/api/v1/auth")
    reused = await thief.post("/api/v1/auth/refresh", headers={CSRF_HEADER: csrf})
    assert reused.status_code == 401
    assert error_code(reused) == "refresh_token_reused"

    # … so the legitimate client's newer refresh token and its access token die too.
    after = await client.post("/api/v1/auth/refresh", headers={CSRF_HEADER: csrf})
    assert after.status_code == 401
    assert error_code(after) == "session_revoked"
    me = await client.get("/api/v1/users/me")
    assert me.status_code == 401
    assert error_code(me) == "session_revoked"
    revoked = await api.session.scalar(
        select(AuthSession.revoked_reason).where(AuthSession.user_id == user.id)
    )
    assert revoked == "refresh_token_reuse"


async def test_refresh_with_unknown_or_missing_token(app: FastAPI) -> None:
    client = client_with(app, {CSRF_COOKIE: "c"})
    missing = await client.post("/api/v1/auth/refresh", headers={CSRF_HEADER: "c"})
    assert missing.status_code == 401
    client.cookies.set(REFRESH_COOKIE, "made-up", domain="testserver.local", path="/api/v1/auth")
    unknown = await client.post("/api/v1/auth/refresh", headers={CSRF_HEADER: "c"})
    assert unknown.status_code == 401
    assert error_code(unknown) == "invalid_refresh_token"


async def test_logout_ends_the_session(api: Api, app: FastAPI) -> None:
    user = await api.user(password=PASSWORD)
    client, _ = await _login(app, user.email)
    access = client.cookies[ACCESS_COOKIE]
    csrf = client.cookies[CSRF_COOKIE]
    out = await client.post("/api/v1/auth/logout", headers={CSRF_HEADER: csrf})
    assert out.status_code == 204
    assert ACCESS_COOKIE not in client.cookies
    # The old access token is dead even before it expires.
    replay = client_with(app, {ACCESS_COOKIE: access})
    assert (await replay.get("/api/v1/users/me")).status_code == 401


async def test_password_change_ends_other_sessions(api: Api, app: FastAPI) -> None:
    user = await api.user(password=PASSWORD)
    phone, _ = await _login(app, user.email)
    laptop, _ = await _login(app, user.email)
    wrong = await laptop.patch(
        "/api/v1/users/me",
        json={"password": "a new password", "current_password": "nope"},
        headers={CSRF_HEADER: laptop.cookies[CSRF_COOKIE]},
    )
    assert wrong.status_code == 401
    changed = await laptop.patch(
        "/api/v1/users/me",
        json={"password": "a new password", "current_password": PASSWORD},
        headers={CSRF_HEADER: laptop.cookies[CSRF_COOKIE]},
    )
    assert changed.status_code == 200
    assert (await laptop.get("/api/v1/users/me")).status_code == 200
    assert (await phone.get("/api/v1/users/me")).status_code == 401
    _, again = await _login(app, user.email, "a new password")
    assert again.status_code == 200


async def test_super_admin_from_the_environment_is_created_once(
    api: Api, app: FastAPI, api_settings: Settings
) -> None:
    # The app's start-up created it; running it again changes nothing.
    again = await ensure_superuser(api.session, api_settings)
    assert again is not None and again.role == UserRole.super_admin
    count = await api.session.scalar(
        select(func.count()).select_from(User).where(User.email == SUPERUSER)
    )
    assert count == 1
    _, response = await _login(app, SUPERUSER, SUPERUSER_PASSWORD)
    assert response.status_code == 200
    assert response.json()["user"]["role"] == "super_admin"


async def test_two_tabs_refreshing_at_once_both_succeed(
    live: LiveServer, platform: Platform, api_settings: Settings
) -> None:
    """Two concurrent refreshes of one refresh token (two tabs, real HTTP, committed data)
    within the grace window: both get fresh tokens and the session lives on."""
    async with platform.session() as session:
        user = await users.create_user(
            session,
            f"tabs.{uuid.uuid4().hex[:8]}@serving.test",
            "Tabs",
            UserRole.student,
            await hash_password(PASSWORD),
        )
        await session.commit()
    async with httpx.AsyncClient(base_url=live.url) as login_client:
        login = await login_client.post(
            "/api/v1/auth/login", json={"email": user.email, "password": PASSWORD}
        )
        assert login.status_code == 200
        jar = login_client.cookies
    original = jar.get(REFRESH_COOKIE, path="/api/v1/auth")

    def tab() -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=live.url, cookies=httpx.Cookies(jar))
        client.headers[CSRF_HEADER] = jar[CSRF_COOKIE]
        return client

    async with tab() as one, tab() as two:
        first, second = await asyncio.gather(
            one.post("/api/v1/auth/refresh"), two.post("/api/v1/auth/refresh")
        )
        assert (first.status_code, second.status_code) == (200, 200), (first.text, second.text)
        new_one, new_two = first.cookies[REFRESH_COOKIE], second.cookies[REFRESH_COOKIE]
        assert len({new_one, new_two, original}) == 3
        # Both tabs go on: their new access tokens work, and each can refresh again.
        for client in (one, two):
            assert (await client.get("/api/v1/users/me")).status_code == 200
            assert (await client.post("/api/v1/auth/refresh")).status_code == 200
    async with platform.session() as session:
        revoked = await session.scalar(
            select(AuthSession.revoked_at).where(AuthSession.user_id == user.id)
        )
    assert revoked is None


async def test_reuse_within_the_grace_window_gets_fresh_tokens(
    api: Api, app: FastAPI, api_settings: Settings
) -> None:
    user = await api.user(password=PASSWORD)
    client, _ = await _login(app, user.email)
    csrf = client.cookies[CSRF_COOKIE]
    spent = client.cookies.get(REFRESH_COOKIE, path="/api/v1/auth")
    assert (
        await client.post("/api/v1/auth/refresh", headers={CSRF_HEADER: csrf})
    ).status_code == 200
    # The same (spent) token again, just inside the window: fresh tokens, nothing revoked.
    await _spent_long_ago(api, spent, api_settings.refresh_reuse_grace_seconds - 5)
    other = client_with(app, {CSRF_COOKIE: csrf})
    other.cookies.set(REFRESH_COOKIE, spent, domain="testserver.local", path="/api/v1/auth")
    again = await other.post("/api/v1/auth/refresh", headers={CSRF_HEADER: csrf})
    assert again.status_code == 200, again.text
    assert (await client.get("/api/v1/users/me")).status_code == 200
    # Just outside it: reuse, and the whole session is revoked.
    await _spent_long_ago(api, spent, 10)
    thief = client_with(app, {CSRF_COOKIE: csrf})
    thief.cookies.set(REFRESH_COOKIE, spent, domain="testserver.local", path="/api/v1/auth")
    late = await thief.post("/api/v1/auth/refresh", headers={CSRF_HEADER: csrf})
    assert late.status_code == 401
    assert error_code(late) == "refresh_token_reused"
    assert (await client.get("/api/v1/users/me")).status_code == 401


async def _age_session(api: Api, user: User, seconds: float) -> None:
    await api.session.execute(
        update(AuthSession)
        .where(AuthSession.user_id == user.id)
        .values(created_at=AuthSession.created_at - timedelta(seconds=seconds))
    )
    await api.commit()


async def test_refreshing_never_extends_a_session_past_its_lifetime(
    api: Api, app: FastAPI, api_settings: Settings
) -> None:
    lifetime = api_settings.session_max_lifetime_seconds
    user = await api.user(password=PASSWORD)
    client, _ = await _login(app, user.email)
    csrf = client.cookies[CSRF_COOKIE]
    # A day before the end, a refresh is granted only until the end (not REFRESH_TOKEN_TTL).
    await _age_session(api, user, lifetime - 86_400)
    near_end = await client.post("/api/v1/auth/refresh", headers={CSRF_HEADER: csrf})
    assert near_end.status_code == 200, near_end.text
    refresh_expires = datetime.fromisoformat(near_end.json()["refresh_expires_at"])
    remaining = (refresh_expires - datetime.now(UTC)).total_seconds()
    assert 86_400 - 60 < remaining <= 86_400
    assert api_settings.refresh_token_ttl_seconds > 86_400
    refresh_cookie = _set_cookie_headers(near_end)[REFRESH_COOKIE]
    max_age = int(refresh_cookie.lower().split("max-age=")[1].split(";")[0])
    assert 86_400 - 60 < max_age <= 86_400
    # Past the end: the refresh and the (still unexpired) access token are refused.
    await _age_session(api, user, 86_400 + 1)
    expired = await client.post("/api/v1/auth/refresh", headers={CSRF_HEADER: csrf})
    assert expired.status_code == 401
    assert error_code(expired) == "session_expired"
    me = await client.get("/api/v1/users/me")
    assert me.status_code == 401
    assert error_code(me) == "session_expired"
