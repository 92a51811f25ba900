"""The ``graphrag:events`` sensor: per-room debounce, then a refresh (or rebuild) run.

It reads the stream with XRANGE from the id in its cursor, keeps per-room pending state in the
cursor (committed by Dagster together with the run requests), registers unknown rooms as
partitions and asks for one run per due room with a run key unique per (room, last event id).
Redis down: the tick is skipped with the reason and the cursor stays, so nothing is lost.
Events trimmed before they were read: every known room is rebuilt.
"""

from __future__ import annotations

import time

from dagster import (
    AddDynamicPartitionsRequest,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from redis import Redis
from redis.exceptions import RedisError

from knowledge.platform import redis_url
from knowledge.settings import get_settings
from pipelines.jobs import REBUILD_RUN_CONFIG, rebuild_room, refresh_room
from pipelines.partitions import rooms_partitions
from realtime.debounce import DebounceState, stream_id_key
from realtime.reader import read_after

ROOMS = rooms_partitions.name or "rooms"
_WAITING = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING]


def _has_waiting_run(context: SensorEvaluationContext, room_id: str) -> bool:
    runs = context.instance.get_run_records(
        filters=RunsFilter(tags={"dagster/partition": room_id}, statuses=_WAITING), limit=1
    )
    return bool(runs)


@sensor(
    name="graphrag_events",
    jobs=[refresh_room, rebuild_room],
    minimum_interval_seconds=1,
    default_status=DefaultSensorStatus.RUNNING,
    description="Debounces graphrag:events per room and launches room refresh runs.",
)
def graphrag_events_sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    settings = get_settings()
    state = DebounceState.from_cursor(context.cursor)
    url = redis_url(settings)
    try:
        redis = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            batch = read_after(redis, state.last_id)
            now_ms = _redis_time_ms(redis)
        finally:
            redis.close()
    except (RedisError, OSError) as error:
        return SkipReason(f"Redis unreachable at {url} ({error}); cursor kept, will retry")

    known = set(context.instance.get_dynamic_partitions(ROOMS))
    for entry_id, event in batch.events:
        state.add(entry_id, event)
    if batch.last_id:
        state.last_id = max(state.last_id, batch.last_id, key=stream_id_key)
    if batch.gap:
        context.log.warning("events were trimmed before they were read: rebuilding every room")
        for room_id in known:
            state.mark(room_id, state.last_id, now_ms, rebuild=True)

    new_rooms = sorted({e.room_id for _, e in batch.events} - known)
    requests = []
    for due in state.due(
        now_ms,
        int(settings.realtime_debounce_seconds * 1000),
        int(settings.realtime_max_wait_seconds * 1000),
    ):
        if _has_waiting_run(context, due.room_id):
            # A run that has not started yet will read the room as it is then: it covers
            # these events too.
            state.done(due.room_id)
            continue
        job = rebuild_room if due.rebuild else refresh_room
        requests.append(
            RunRequest(
                run_key=f"{due.room_id}:{due.last_id}:{job.name}",
                partition_key=due.room_id,
                job_name=job.name,
                run_config=REBUILD_RUN_CONFIG if due.rebuild else {},
                tags={
                    "coagent/events": str(due.events),
                    "coagent/last_event_id": due.last_id,
                    "coagent/waited_ms": str(due.waited_ms),
                },
            )
        )
        state.done(due.room_id)
    return SensorResult(
        run_requests=requests,
        cursor=state.to_cursor(),
        dynamic_partitions_requests=[AddDynamicPartitionsRequest(ROOMS, new_rooms)]
        if new_rooms
        else [],
    )


def _redis_time_ms(redis: Redis) -> int:
    """Stream ids carry Redis's clock: compare against the same clock."""
    try:
        seconds, micros = redis.time()  # type: ignore[misc]
        return int(seconds) * 1000 + int(micros) // 1000
    except RedisError:
        return int(time.time() * 1000)
