"""The agent worker: an arq worker on the API's Redis that runs agent replies off the request
path (``coagent worker``; ``coagent dev`` and compose start one).

Retries are bounded (``max_tries``) and safe: a reply is stored at most once per (message,
agent) (a unique index), so a job re-run after a crash cannot post twice. An LLM failure is
not retried here (the model client already retried): the agent posts a short error reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from arq.worker import Worker, func
from redis.asyncio import Redis
from redis.exceptions import RedisError

from knowledge.platform import open_platform, redis_url
from knowledge.settings import Settings
from realtime.outbox import OutboxRelay
from realtime.publisher import EventPublisher
from serving.agents import queue
from serving.agents.service import answer_mention
from serving.chat.broadcast import Broadcaster
from serving.graph.dagster import DagsterGateway
from serving.state import AppState, platform_sessions

log = logging.getLogger(__name__)


async def agent_reply(
    ctx: dict[str, Any], room_id: str, message_id: int, agent_user_id: str, depth: int
) -> str:
    state: AppState = ctx["state"]
    outcome = await answer_mention(
        state, uuid.UUID(room_id), message_id, uuid.UUID(agent_user_id), depth
    )
    log.info("agent %s on message %s: %s", agent_user_id, message_id, outcome)
    return outcome


def build_worker(settings: Settings, redis: Redis, state_holder: dict[str, Any]) -> Worker:
    async def startup(ctx: dict[str, Any]) -> None:
        ctx["state"] = state_holder["state"]

    return Worker(
        functions=[func(agent_reply, name=queue.REPLY_JOB)],  # type: ignore[arg-type]
        queue_name=queue.QUEUE_NAME,
        redis_pool=queue.arq_redis(redis),
        on_startup=startup,
        handle_signals=False,
        max_jobs=8,
        max_tries=3,
        # The whole reply is bounded by agent_timeout_seconds; the job a little longer.
        job_timeout=int(settings.agent_timeout_seconds) + 30,
        poll_delay=0.05,
        keep_result=3600,
    )


async def serve_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run the worker until ``stop`` is set (or forever). A Redis outage does not end it: the
    arq loop is restarted with a fresh connection, with backoff, until Redis is back (jobs
    wait in Redis meanwhile)."""
    stop = stop or asyncio.Event()
    location = await asyncio.to_thread(redis_url, settings)
    async with open_platform(settings) as platform:
        # A Redis that hangs costs a frame or a job at most these seconds.
        redis = Redis.from_url(location, socket_timeout=5, socket_connect_timeout=5)
        relay_redis = Redis.from_url(location, socket_timeout=5, socket_connect_timeout=5)
        sessions = platform_sessions(platform)
        # Replies are messages: their change events go through the outbox like the API's.
        relay = OutboxRelay(
            sessions, EventPublisher(relay_redis, maxlen=settings.events_stream_maxlen)
        )
        state = AppState(
            settings=settings,
            platform=platform,
            redis=redis,
            events=EventPublisher(redis, maxlen=settings.events_stream_maxlen),
            outbox=relay,
            broadcaster=Broadcaster(redis),
            dagster=DagsterGateway(settings),
            session_factory=sessions,
        )
        relay.start()
        backoff = 0.5
        try:
            while not stop.is_set():
                failed = await _run_until(settings, location, state, stop)
                if not failed:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 10.0)
        finally:
            await relay.stop()
            await relay_redis.aclose()
            await redis.aclose()


async def _run_until(
    settings: Settings, location: str, state: AppState, stop: asyncio.Event
) -> bool:
    """One arq worker on its own connection until ``stop``; True when Redis failed under it."""
    pool = Redis.from_url(location)
    worker = build_worker(settings, pool, {"state": state})
    task = asyncio.create_task(worker.async_run(), name="agent-worker")
    waiter = asyncio.create_task(stop.wait())
    failed = False
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task.done() and not task.cancelled() and task.exception() is not None:
            error = task.exception()
            if not isinstance(error, RedisError | OSError):
                raise error  # type: ignore[misc]
            log.warning("agent worker lost Redis (%s); reconnecting", error)
            failed = True
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await worker.close()  # closes this worker's connection pool
        with contextlib.suppress(Exception):
            await pool.aclose()
    return failed
