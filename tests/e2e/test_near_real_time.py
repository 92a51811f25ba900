"""Near-real-time refresh end to end: real processes (coagent dev: API, Dagster webserver and
daemon with the events sensor; a real Redis), messages posted over HTTP, answers from the graph
query. Waits are bounded; nothing is timed."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from dagster import DagsterRunStatus, RunsFilter

from tests.e2e.harness import ApiClient, Platform, wait_until

REFRESH_TIMEOUT = 180


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    running = Platform(debounce_seconds=1.0)
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api(platform: Platform) -> Iterator[ApiClient]:
    client = platform.client()
    yield client
    client.close()


def _sees(api: ApiClient, room_id: str, name: str) -> bool:
    return any(name in e for e in api.entities(room_id, f"What about {name.title()}?"))


def test_posted_messages_become_answerable_then_edits_and_deletes_remove_them(
    platform: Platform, api: ApiClient
) -> None:
    room_id = api.new_room()
    first = api.say(room_id, "Zenobia of Palmyra wrote to Aurelian from Antioch.")
    doomed = api.say(room_id, "Zenobia trusted Longinus in Palmyra; Longinus planned Antioch.")
    api.say(room_id, "Aurelian answered Zenobia: Antioch will open its gates.")

    wait_until(lambda: _sees(api, room_id, "zenobia"), REFRESH_TIMEOUT, 2, "zenobia in answers")
    assert _sees(api, room_id, "longinus")

    # delete the only message naming Longinus: its entity goes
    response = api.http.delete(f"/rooms/{room_id}/messages/{doomed}")
    assert response.status_code == 204, response.text
    wait_until(
        lambda: not _sees(api, room_id, "longinus"), REFRESH_TIMEOUT, 2, "longinus to be gone"
    )
    # edit a message so it names someone new instead
    response = api.http.patch(
        f"/rooms/{room_id}/messages/{first}",
        json={"content": "Vaballathus of Palmyra wrote to Aurelian from Emesa, Vaballathus said."},
    )
    assert response.status_code == 200, response.text
    wait_until(lambda: _sees(api, room_id, "vaballathus"), REFRESH_TIMEOUT, 2, "the edit")
    assert _sees(api, room_id, "emesa")


def test_a_redis_restart_loses_nothing(platform: Platform, api: ApiClient) -> None:
    assert platform.redis is not None
    room_id = api.new_room()
    api.say(room_id, "Odaenathus of Palmyra defeated Shapur near Ctesiphon, Odaenathus wrote.")
    wait_until(lambda: _sees(api, room_id, "odaenathus"), REFRESH_TIMEOUT, 2, "odaenathus")
    platform.redis.stop()
    during = api.http.post(
        f"/rooms/{room_id}/messages",
        json={"content": "Septimia of Palmyra met Odaenathus at Emesa; Septimia stayed."},
    )
    # the message itself is stored whatever happens to the event bus; its event waits in the
    # outbox
    assert during.status_code == 201, during.text
    platform.redis.start()
    # no later message in the room: the outbox relay alone brings the event to the sensor
    wait_until(lambda: _sees(api, room_id, "septimia"), REFRESH_TIMEOUT, 2, "septimia")


def _runs(platform: Platform, room_id: str, job: str) -> list[DagsterRunStatus]:
    instance = platform.dagster_instance()
    try:
        records = instance.get_run_records(
            filters=RunsFilter(job_name=job, tags={"dagster/partition": room_id})
        )
        return [r.dagster_run.status for r in records]
    finally:
        instance.dispose()


def _partition_exists(platform: Platform, room_id: str) -> bool:
    instance = platform.dagster_instance()
    try:
        return instance.has_dynamic_partition("rooms", room_id)
    finally:
        instance.dispose()


def _chunks(platform: Platform, room_id: str) -> int:
    with psycopg.connect(platform.postgres_uri()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM room_chunks WHERE room_id = %s", (room_id,)
        ).fetchone()
    return int(row[0]) if row else 0


def test_deleting_a_room_purges_it_and_removes_its_partition(
    platform: Platform, api: ApiClient
) -> None:
    room_id = api.new_room()
    api.say(room_id, "Vaballathus of Palmyra wrote to Aurelian from Emesa.")
    wait_until(lambda: _sees(api, room_id, "vaballathus"), REFRESH_TIMEOUT, 2, "vaballathus")
    assert _partition_exists(platform, room_id) and _chunks(platform, room_id) > 0

    response = api.http.delete(f"/rooms/{room_id}")
    assert response.status_code == 204, response.text
    wait_until(
        lambda: _runs(platform, room_id, "room_purge") == [DagsterRunStatus.SUCCESS],
        REFRESH_TIMEOUT,
        1,
        "the room's purge run to succeed",
    )
    assert not _partition_exists(platform, room_id)
    assert _chunks(platform, room_id) == 0
    # no refresh of the deleted room failed (none ran after it, or it was cancelled)
    assert DagsterRunStatus.FAILURE not in _runs(platform, room_id, "refresh_room")
