"""Login rate limiting in Redis (shared by every API process): fixed windows per client
address for all attempts and per (client, email) for failed ones."""

from __future__ import annotations

import hashlib

from redis.asyncio import Redis

from knowledge.settings import Settings
from serving.errors import TooManyRequests

_PREFIX = "coagent:login"


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
    """Count the attempt; 429 (with Retry-After) when either limit is exceeded."""
    window = settings.login_rate_window_seconds
    ip_key, fail_key = _keys(ip, email)
    hits, ttl = await _bump(redis, ip_key, window)
    if hits > settings.login_ip_rate_limit:
        raise _limited(ttl)
    failures = await redis.get(fail_key)
    if failures is not None and int(failures) >= settings.login_rate_limit:
        raise _limited(max(int(await redis.ttl(fail_key)), 1))


async def record_failure(redis: Redis, settings: Settings, ip: str, email: str) -> None:
    await _bump(redis, _keys(ip, email)[1], settings.login_rate_window_seconds)


async def clear_failures(redis: Redis, ip: str, email: str) -> None:
    await redis.delete(_keys(ip, email)[1])


def _limited(retry_after: int) -> TooManyRequests:
    return TooManyRequests(
        f"too many login attempts; try again in {retry_after} s",
        headers={"Retry-After": str(retry_after)},
    )
