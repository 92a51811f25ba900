"""A room whose run died with the Dagster daemon runs again: real processes (coagent dev, a real
Redis), the daemon killed (SIGKILL) while the room's refresh run is in its first step.

The step is held on a real table lock so that the kill lands mid-run; nothing is timed, every
wait is bounded.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import psycopg
import pytest
from dagster import DagsterRunStatus, RunsFilter

from tests.e2e.harness import Platform, wait_until

TIMEOUT = 180


@pytest.fixture
def platform() -> Iterator[Platform]:
    running = Platform(debounce_seconds=1.0)
    running.start()
    yield running
    running.stop()


def _sees(platform: Platform, room_id: str, name: str) -> bool:
    api = platform.client()
    try:
        return any(name in e for e in api.entities(room_id, f"What about {name.title()}?"))
    finally:
        api.close()


def test_a_run_killed_with_the_daemon_is_failed_and_the_room_runs_again(
    platform: Platform,
) -> None:
    api = platform.client()
    room_id = api.new_room()
    instance = platform.dagster_instance()
    with psycopg.connect(platform.postgres_uri(), autocommit=False) as lock:
        # the room's refresh will wait in its first step (chunks) for this lock
        lock.execute("LOCK TABLE room_chunks IN ACCESS EXCLUSIVE MODE")
        api.say(room_id, "Zenobia of Palmyra wrote to Aurelian from Antioch.")
        started = wait_until(
            lambda: instance.get_run_records(
                filters=RunsFilter(
                    tags={"dagster/partition": room_id}, statuses=[DagsterRunStatus.STARTED]
                )
            ),
            TIMEOUT,
            0.5,
            "the room's refresh run to start",
        )
        run_id = started[0].dagster_run.run_id
        [daemon] = platform.descendants("dagster._daemon")
        os.kill(daemon, signal.SIGKILL)
        lock.rollback()
    api.close()
    instance.dispose()
    # `dagster dev` stops when its daemon dies, and coagent dev with it
    platform.wait_exit(TIMEOUT)

    platform.start()  # same data dir, same Redis: the run is still STARTED, its thread gone
    instance = platform.dagster_instance()
    try:
        wait_until(
            lambda: (
                (run := instance.get_run_by_id(run_id)) is not None
                and run.status == DagsterRunStatus.FAILURE
            ),
            TIMEOUT,
            1,
            "run monitoring to fail the run whose worker died",
        )
        # the room's slot is free again: its next event gets a run, which indexes everything
        api = platform.client()
        api.say(room_id, "Aurelian answered Zenobia: Antioch will open its gates.")
        api.close()
        wait_until(lambda: _sees(platform, room_id, "aurelian"), TIMEOUT, 2, "the next refresh")
        assert _sees(platform, room_id, "zenobia")
    finally:
        instance.dispose()
