"""The graphrag:events sensor against the real embedded Redis and a real Dagster instance."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from dagster import (
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    SensorResult,
    SkipReason,
    build_sensor_context,
)
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from redis import Redis

from knowledge.platform import redis_url
from knowledge.settings import Settings
from pipelines.definitions import defs
from pipelines.sensors import graphrag_events_sensor
from realtime.debounce import DebounceState
from realtime.events import STREAM, MessageCreated, RoomDeleted, RoomRebuildRequested


@pytest.fixture
def redis(settings: Settings) -> Iterator[Redis]:
    client = Redis.from_url(redis_url(settings))
    client.delete(STREAM)
    yield client
    client.delete(STREAM)
    client.close()


@pytest.fixture
def tuned(settings: Settings) -> Iterator[Settings]:
    saved = (settings.realtime_debounce_seconds, settings.realtime_max_wait_seconds)
    yield settings
    settings.realtime_debounce_seconds, settings.realtime_max_wait_seconds = saved


def _tick(instance: DagsterInstance, cursor: str | None) -> SensorResult | SkipReason:
    context = build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    return graphrag_events_sensor(context)


def _publish(redis: Redis, *events) -> list[str]:  # type: ignore[no-untyped-def]
    return [redis.xadd(STREAM, e.to_fields()).decode() for e in events]


def test_debounce_then_one_run_per_room_with_unique_run_keys(
    redis: Redis, tuned: Settings, dagster_instance: DagsterInstance
) -> None:
    room_a, room_b = "sensor-room-a", "sensor-room-b"
    ids = _publish(
        redis,
        MessageCreated(room_id=room_a, message_id=1),
        MessageCreated(room_id=room_a, message_id=2),
        RoomRebuildRequested(room_id=room_b, full=True),
    )
    tuned.realtime_debounce_seconds = 3600  # nothing is due yet
    first = _tick(dagster_instance, None)
    assert isinstance(first, SensorResult)
    assert first.run_requests == []
    # unknown rooms are registered as partitions
    [partitions] = first.dynamic_partitions_requests
    assert set(partitions.partition_keys) == {room_a, room_b}
    dagster_instance.add_dynamic_partitions("rooms", [room_a, room_b])
    state = DebounceState.from_cursor(first.cursor)
    assert state.last_id == ids[-1] and set(state.rooms) == {room_a, room_b}

    tuned.realtime_debounce_seconds = 0
    second = _tick(dagster_instance, first.cursor)
    assert isinstance(second, SensorResult)
    requests = {r.partition_key: r for r in second.run_requests}
    assert set(requests) == {room_a, room_b}
    assert requests[room_a].job_name == "refresh_room"
    assert requests[room_b].job_name == "rebuild_room"
    assert requests[room_a].run_key == f"{room_a}:{ids[1]}:refresh_room"
    assert DebounceState.from_cursor(second.cursor).rooms == {}

    # nothing new: no runs, same position
    third = _tick(dagster_instance, second.cursor)
    assert isinstance(third, SensorResult) and third.run_requests == []
    assert DebounceState.from_cursor(third.cursor).last_id == ids[-1]


def test_redis_unreachable_skips_the_tick_and_keeps_the_cursor(
    tuned: Settings, dagster_instance: DagsterInstance
) -> None:
    saved = tuned.redis_url
    tuned.redis_url = "redis://127.0.0.1:9/0"  # nothing listens there
    cursor = DebounceState(last_id="123-0").to_cursor()
    try:
        result = _tick(dagster_instance, cursor)
    finally:
        tuned.redis_url = saved
    assert isinstance(result, SkipReason)
    assert "Redis unreachable" in (result.skip_message or "")
    # a SkipReason carries no cursor: Dagster keeps the old one


def test_trimmed_events_trigger_a_rebuild_of_every_room(
    redis: Redis, tuned: Settings, dagster_instance: DagsterInstance
) -> None:
    dagster_instance.add_dynamic_partitions("rooms", ["trim-room"])
    _publish(redis, *(MessageCreated(room_id="trim-room", message_id=i) for i in range(5)))
    redis.xtrim(STREAM, maxlen=1, approximate=False)
    tuned.realtime_debounce_seconds = 0
    # the cursor points before the oldest entry left: what was in between is gone
    result = _tick(dagster_instance, DebounceState(last_id="1-0").to_cursor())
    assert isinstance(result, SensorResult)
    jobs = {r.partition_key: r.job_name for r in result.run_requests}
    assert jobs["trim-room"] == "rebuild_room"


def test_a_due_rebuild_is_kept_while_only_a_refresh_is_waiting(
    redis: Redis, tuned: Settings, dagster_instance: DagsterInstance
) -> None:
    room = "sensor-rebuild-room"
    dagster_instance.add_dynamic_partitions("rooms", [room])
    # a refresh of the room is waiting (asked for earlier, not started yet)
    waiting = dagster_instance.create_run_for_job(
        job_def=defs.resolve_job_def("refresh_room"),
        tags={"dagster/partition": room},
        status=DagsterRunStatus.NOT_STARTED,
    )
    try:
        [rebuild_id] = _publish(redis, RoomRebuildRequested(room_id=room, full=True))
        tuned.realtime_debounce_seconds = 0
        first = _tick(dagster_instance, None)
        assert isinstance(first, SensorResult)
        # the queued refresh does not cover a rebuild: nothing launched, the rebuild still due
        assert first.run_requests == []
        pending = DebounceState.from_cursor(first.cursor).rooms[room]
        assert pending.rebuild and pending.last_id == rebuild_id

        # once the refresh has started, the rebuild is asked for (it queues behind it)
        dagster_instance.handle_run_event(
            waiting.run_id,
            DagsterEvent(DagsterEventType.RUN_START.value, job_name=waiting.job_name),
        )
        second = _tick(dagster_instance, first.cursor)
        assert isinstance(second, SensorResult)
        assert [(r.partition_key, r.job_name) for r in second.run_requests] == [
            (room, "rebuild_room")
        ]
        assert DebounceState.from_cursor(second.cursor).rooms == {}
    finally:
        dagster_instance.delete_run(waiting.run_id)


def test_a_waiting_rebuild_covers_a_due_refresh(
    redis: Redis, tuned: Settings, dagster_instance: DagsterInstance
) -> None:
    room = "sensor-covered-room"
    dagster_instance.add_dynamic_partitions("rooms", [room])
    waiting = dagster_instance.create_run_for_job(
        job_def=defs.resolve_job_def("rebuild_room"),
        run_config={"ops": {"chunks": {"config": {"wipe": True}}}},
        tags={"dagster/partition": room},
        status=DagsterRunStatus.NOT_STARTED,
    )
    try:
        _publish(redis, MessageCreated(room_id=room, message_id=1))
        tuned.realtime_debounce_seconds = 0
        result = _tick(dagster_instance, None)
        assert isinstance(result, SensorResult) and result.run_requests == []
        assert DebounceState.from_cursor(result.cursor).rooms == {}
    finally:
        dagster_instance.delete_run(waiting.run_id)


def test_a_deleted_room_gets_a_purge_run_and_nothing_else(
    redis: Redis, tuned: Settings, dagster_instance: DagsterInstance
) -> None:
    room = f"sensor-deleted-{uuid.uuid4().hex[:8]}"
    _, deleted_id = _publish(
        redis, MessageCreated(room_id=room, message_id=1), RoomDeleted(room_id=room)
    )
    tuned.realtime_debounce_seconds = 3600  # a refresh would not be due yet; a purge is
    first = _tick(dagster_instance, None)
    assert isinstance(first, SensorResult)
    # the pending refresh is dropped; the purge is asked for at once, its partition registered
    assert [(r.partition_key, r.job_name, r.run_key) for r in first.run_requests] == [
        (room, "room_purge", f"{room}:{deleted_id}:room_purge")
    ]
    [partitions] = first.dynamic_partitions_requests
    assert list(partitions.partition_keys) == [room]
    state = DebounceState.from_cursor(first.cursor)
    assert state.rooms == {} and room in state.deleted

    # a late event of the room (an older change relayed late, a duplicate): ignored
    _publish(redis, MessageCreated(room_id=room, message_id=2), RoomDeleted(room_id=room))
    tuned.realtime_debounce_seconds = 0
    second = _tick(dagster_instance, first.cursor)
    assert isinstance(second, SensorResult)
    assert second.run_requests == [] and second.dynamic_partitions_requests == []
    assert DebounceState.from_cursor(second.cursor).rooms == {}


def test_a_deleted_rooms_queued_refresh_is_cancelled_before_its_purge(
    redis: Redis, tuned: Settings, dagster_instance: DagsterInstance
) -> None:
    room = f"sensor-deleted-{uuid.uuid4().hex[:8]}"
    dagster_instance.add_dynamic_partitions("rooms", [room])
    # a refresh submitted earlier, waiting in the run queue
    location = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="pipelines.definitions", attribute="defs")
    )
    queued = dagster_instance.create_run_for_job(
        job_def=defs.resolve_job_def("refresh_room"),
        tags={"dagster/partition": room},
        status=DagsterRunStatus.QUEUED,
        remote_job_origin=RemoteJobOrigin(
            RemoteRepositoryOrigin(location, "__repository__"), "refresh_room"
        ),
    )
    try:
        _publish(redis, RoomDeleted(room_id=room))
        result = _tick(dagster_instance, None)
        assert isinstance(result, SensorResult)
        assert [r.job_name for r in result.run_requests] == ["room_purge"]
        cancelled = dagster_instance.get_run_by_id(queued.run_id)
        assert cancelled is not None and cancelled.status == DagsterRunStatus.CANCELED
    finally:
        dagster_instance.delete_run(queued.run_id)
