"""The agent reply queue: arq on the API's Redis. One job per (message, agent), so a mention
is answered once however often it is enqueued (arq refuses a job id it already holds)."""

from __future__ import annotations

import uuid

from arq.connections import ArqRedis
from redis.asyncio import Redis

QUEUE_NAME = "coagent:agents"
REPLY_JOB = "agent_reply"


def reply_job_id(message_id: int, agent_user_id: uuid.UUID) -> str:
    return f"agent-reply:{message_id}:{agent_user_id}"


def arq_redis(redis: Redis) -> ArqRedis:
    """An arq view of an existing client (same connection pool)."""
    return ArqRedis(connection_pool=redis.connection_pool)


async def enqueue_reply(
    redis: Redis, room_id: uuid.UUID, message_id: int, agent_user_id: uuid.UUID, depth: int
) -> bool:
    """Queue one reply; False when that (message, agent) job already exists."""
    job = await arq_redis(redis).enqueue_job(
        REPLY_JOB,
        str(room_id),
        message_id,
        str(agent_user_id),
        depth,
        _job_id=reply_job_id(message_id, agent_user_id),
        _queue_name=QUEUE_NAME,
    )
    return job is not None
