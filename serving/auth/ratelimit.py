"""Rate limiting in Redis (shared by every API process), in fixed windows.

Logins: per client address for all attempts and per (client, email) for failed ones. Costly
operations (graph questions, build requests): per user (``check_user``). Each answers 429 with
``Retry-After``; if Redis is unreachable the limiter fails open (logged)."""

from __future__ import annotations

import hashlib
import logging
import uuid

from redis.asyncio import Redis
from redis.exceptions import RedisError

from knowledge.settings import Settings
from serving.errors import TooManyRequests

log = logging.getLogger(__name__)

_PREFIX = "coagent:login"
_USER_PREFIX = "coagent:ratelimit"


def _keys(ip: str, email: str) -> tuple[str, str]:
    digest = hashlib.sha256(email.strip().lower().encode("utf-8", "replace")).hexdigest()[:32]
    return f"{_PREFIX}:ip:{ip}", f"{_PREFIX}:fail:{ip}:{digest}"


async def _bump(redis: Redis, key: str, window: int) -> tuple[int, int]:
    """Count one hit in the key's window; (hits so far, seconds left in the window)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(key, 0, ex=window, nx=True)
        pipe.incr(key)
        pipe.ttl(key)
        _, hits, ttl = await pipe.execute()
    return int(hits), max(int(ttl), 1)


async def check_login(redis: Redis, settings: Settings, ip: str, email: str) -> None:
    """Count the attempt; 429 (with Retry-After) when either limit is exceeded.

    If Redis is unreachable the limiter fails open (logged): logins keep working."""
    try:
        await _check(redis, settings, ip, email)
    except RedisError as error:
        log.warning("login rate limiter unavailable (%s); not limiting", error)


async def _check(redis: Redis, settings: Settings, ip: str, email: str) -> None:
    window = settings.login_rate_window_seconds
    ip_key, fail_key = _keys(ip, email)
    hits, ttl = await _bump(redis, ip_key, window)
    if hits > settings.login_ip_rate_limit:
        raise _limited(ttl)
    failures = await redis.get(fail_key)
    if failures is not None and int(failures) >= settings.login_rate_limit:
        raise _limited(max(int(await redis.ttl(fail_key)), 1))


async def record_failure(redis: Redis, settings: Settings, ip: str, email: str) -> None:
    try:
        await _bump(redis, _keys(ip, email)[1], settings.login_rate_window_seconds)
    except RedisError as error:
        log.warning("login rate limiter unavailable (%s)", error)


async def clear_failures(redis: Redis, ip: str, email: str) -> None:
    try:
        await redis.delete(_keys(ip, email)[1])
    except RedisError as error:
        log.warning("login rate limiter unavailable (%s)", error)


def _limited(retry_after: int, what: str = "login attempts") -> TooManyRequests:
    return TooManyRequests(
        f"too many {what}; try again in {retry_after} s",
        headers={"Retry-After": str(retry_after)},
    )


async def check_user(
    redis: Redis, user_id: uuid.UUID, action: str, limit: int, window: int, what: str
) -> None:
    """Count one ``action`` of the user; 429 (with Retry-After) past ``limit`` per window."""
    try:
        hits, ttl = await _bump(redis, f"{_USER_PREFIX}:{action}:{user_id}", window)
    except RedisError as error:
        log.warning("rate limiter unavailable (%s); not limiting %s", error, action)
        return
    if hits > limit:
        raise _limited(ttl, what)
