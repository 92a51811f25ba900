"""The graphrag:events sensor against the real embedded Redis and a real Dagster instance."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dagster import DagsterInstance, SensorResult, SkipReason, build_sensor_context
from redis import Redis

from knowledge.platform import redis_url
from knowledge.settings import Settings
from pipelines.definitions import defs
from pipelines.sensors import graphrag_events_sensor
from realtime.debounce import DebounceState
from realtime.events import STREAM, MessageCreated, RoomRebuildRequested


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
