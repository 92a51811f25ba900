"""The ``graphrag:events`` sensor: per-room debounce, then a refresh, rebuild or purge run.

It reads the stream with XRANGE from the id in its cursor, keeps per-room pending state in the
cursor (committed by Dagster together with the run requests), registers unknown rooms as
partitions and asks for one run per due room with a run key unique per (room, last event id).
Redis down: the tick is skipped with the reason and the cursor stays, so nothing is lost.
Events trimmed before they were read: every known room is rebuilt.

A room with a run that has not started yet gets no second one, unless that run does not cover
what is due: a due rebuild waits (pending) while only a refresh is waiting, and is asked for
once it has started. A deleted room (``room.deleted``) gets a ``room_purge`` run at once, its
queued refreshes are cancelled, and its later events are ignored (``realtime.debounce``); the
one-run-per-room limit keeps the purge behind a refresh that is still running.
"""

from __future__ import annotations

import time

from dagster import (
    AddDynamicPartitionsRequest,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRecord,
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
from pipelines.jobs import REBUILD_RUN_CONFIG, rebuild_room, refresh_room, room_purge
from pipelines.launcher import sensor_loop_status
from pipelines.partitions import rooms_partitions
from realtime.debounce import DebounceState, stream_id_key
from realtime.reader import read_after

ROOMS = rooms_partitions.name or "rooms"
_WAITING = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING]


def _waiting_runs(context: SensorEvaluationContext, room_id: str) -> list[RunRecord]:
    """The room's runs that have not started yet."""
    return list(
        context.instance.get_run_records(
            filters=RunsFilter(tags={"dagster/partition": room_id}, statuses=_WAITING), limit=50
        )
    )


#: What a run of each job brings up to date: a rebuild re-derives everything a refresh would.
_COVERS = {
    refresh_room.name: {refresh_room.name},
    rebuild_room.name: {refresh_room.name, rebuild_room.name},
    room_purge.name: {room_purge.name},
}


def _cancel_queued_refreshes(context: SensorEvaluationContext, records: list[RunRecord]) -> None:
    """A deleted room's queued refreshes would run before its purge, on a room that is gone."""
    for record in records:
        run = record.dagster_run
        if run.job_name != room_purge.name and run.status == DagsterRunStatus.QUEUED:
            context.instance.report_run_canceled(run, "the room was deleted")
            context.log.info(f"cancelled queued run {run.run_id}: its room was deleted")


@sensor(
    name="graphrag_events",
    jobs=[refresh_room, rebuild_room, room_purge],
    minimum_interval_seconds=1,
    default_status=DefaultSensorStatus.RUNNING,
    description="Debounces graphrag:events per room and launches room refresh (rebuild, purge) "
    "runs.",
)
def graphrag_events_sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    settings = get_settings()
    loop = sensor_loop_status(context.instance)
    if loop is not None and loop.error:
        context.log.error(
            f"the daemon's sensor loop is not {loop.requested:g} s ({loop.error}): events wait "
            "up to ~4 s longer for their run (see pipelines/launcher.py)"
        )
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

    # Rooms pending now (not those whose events were ignored: deleted rooms).
    new_rooms = sorted({e.room_id for _, e in batch.events if e.room_id in state.rooms} - known)
    requests = []
    for due in state.due(
        now_ms,
        int(settings.realtime_debounce_seconds * 1000),
        int(settings.realtime_max_wait_seconds * 1000),
    ):
        job = room_purge if due.purge else rebuild_room if due.rebuild else refresh_room
        waiting_runs = _waiting_runs(context, due.room_id)
        if due.purge:
            _cancel_queued_refreshes(context, waiting_runs)
            waiting_runs = [r for r in waiting_runs if r.dagster_run.job_name == room_purge.name]
        waiting = {record.dagster_run.job_name for record in waiting_runs}
        if waiting:
            if any(job.name in _COVERS.get(name, set()) for name in waiting):
                # A run that has not started yet will read the room as it is then: it covers
                # these events too.
                state.done(due.room_id)
            # Otherwise (a rebuild is due, a refresh is waiting) the room stays pending: its
            # rebuild is asked for once that refresh has started (one run per room at a time).
            continue
        requests.append(
            RunRequest(
                run_key=f"{due.room_id}:{due.last_id}:{job.name}",
                partition_key=due.room_id,
                job_name=job.name,
                run_config=REBUILD_RUN_CONFIG if job is rebuild_room else {},
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
