"""The thread run launcher under Dagster's run monitoring, and the daemon's sensor loop: real
runs on the PostgreSQL-backed instance (their steps held on a real table lock)."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster._daemon.sensor as sensor_daemon
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter, build_sensor_context
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.launcher import LaunchRunContext, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._daemon.monitoring.run_monitoring import monitor_started_run
from sqlalchemy import text

from knowledge.platform import sync_engine
from knowledge.settings import Settings
from pipelines.definitions import defs
from pipelines.launcher import (
    WORKER_TAG,
    RoomRunCoordinator,
    ThreadRunLauncher,
    apply_sensor_loop_interval,
    record_sensor_loop,
    sensor_loop_status,
    worker_alive,
)
from pipelines.sensors import graphrag_events_sensor
from tests.conftest import make_room, with_platform

ROOT = Path(__file__).resolve().parents[2]
LINES = [("Ada", "Babbage built the Difference Engine in London."), ("Charles", "Ada agreed.")]


# --- the sensor loop ----------------------------------------------------------------------------


def test_the_sensor_loop_is_shortened_on_the_installed_dagster(
    dagster_instance: DagsterInstance,
) -> None:
    status = apply_sensor_loop_interval()
    assert status.error is None and status.effective == 1
    assert sensor_daemon.MIN_INTERVAL_LOOP_TIME == 1
    # the daemon builds the run coordinator at start-up: that records the outcome
    assert isinstance(dagster_instance.run_coordinator, RoomRunCoordinator)
    recorded = sensor_loop_status(dagster_instance)
    assert recorded is not None and recorded.error is None


def test_a_renamed_loop_constant_is_an_error_at_start_up_and_in_every_sensor_tick(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    dagster_instance: DagsterInstance,
) -> None:
    monkeypatch.delattr(sensor_daemon, "MIN_INTERVAL_LOOP_TIME")  # as a Dagster upgrade might
    with caplog.at_level(logging.ERROR, logger="pipelines.launcher"):
        status = apply_sensor_loop_interval()
    assert status.error and status.effective is None
    assert any("NOT shortened" in r.getMessage() for r in caplog.records)

    record_sensor_loop(dagster_instance, status)
    try:
        context = build_sensor_context(instance=dagster_instance, definitions=defs)
        tick_log: list[logging.LogRecord] = []
        handler = logging.Handler(logging.ERROR)
        handler.emit = tick_log.append  # type: ignore[method-assign]
        context.log.addHandler(handler)
        graphrag_events_sensor(context)
        assert any("sensor loop is not 1 s" in r.getMessage() for r in tick_log)
    finally:
        record_sensor_loop(dagster_instance)


# --- runs in threads ----------------------------------------------------------------------------


@contextmanager
def chunks_locked(settings: Settings) -> Iterator[None]:
    """Hold an exclusive lock on room_chunks: a run's first step waits on it."""
    engine = sync_engine(settings)
    with engine.connect() as conn:
        conn.execute(text("SET lock_timeout = '60s'"))
        conn.execute(text("LOCK TABLE room_chunks IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            conn.rollback()
    engine.dispose()


def _launch(instance: DagsterInstance, launcher: ThreadRunLauncher, room_id: str) -> DagsterRun:
    instance.add_dynamic_partitions("rooms", [room_id])
    repository = ReconstructableRepository.for_module(
        "pipelines.definitions", "defs", working_directory=str(ROOT)
    )
    run = instance.create_run_for_job(
        job_def=defs.resolve_job_def("refresh_room"),
        job_code_origin=repository.get_reconstructable_job("refresh_room").get_python_origin(),
        tags={"dagster/partition": room_id},
        status=DagsterRunStatus.STARTING,
    )
    launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    return run


def _status(instance: DagsterInstance, run_id: str, wanted: set[DagsterRunStatus]) -> DagsterRun:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.status in wanted:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} never reached {wanted} (last: {run and run.status})")


def test_a_running_thread_is_healthy_and_terminating_it_cancels_the_run(
    settings: Settings, dagster_instance: DagsterInstance
) -> None:
    launcher = dagster_instance.run_launcher
    assert isinstance(launcher, ThreadRunLauncher)
    room_id = with_platform(settings, lambda platform: make_room(platform, LINES, "terminate"))
    with chunks_locked(settings):
        run = _launch(dagster_instance, launcher, room_id)
        started = _status(dagster_instance, run.run_id, {DagsterRunStatus.STARTED})
        assert started.tags[WORKER_TAG] == launcher.worker_id
        assert launcher.check_run_worker_health(started).status == WorkerStatus.RUNNING
        assert launcher.terminate(run.run_id)
    # the step gets the lock, then the interrupt at its next instruction
    launcher.join(timeout=60)
    finished = _status(dagster_instance, run.run_id, {DagsterRunStatus.CANCELED})
    assert finished.status == DagsterRunStatus.CANCELED
    # a finished run has no thread: nothing to terminate
    assert not launcher.terminate(run.run_id)


def _dead_worker() -> str:
    """The worker id a process that has exited would have had."""
    code = "from pipelines.launcher import _worker_id; print(_worker_id())"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return result.stdout.strip().splitlines()[-1]


def test_a_run_whose_worker_process_died_is_failed_by_dagsters_run_monitoring(
    settings: Settings, dagster_instance: DagsterInstance
) -> None:
    launcher = dagster_instance.run_launcher
    assert isinstance(launcher, ThreadRunLauncher)
    assert dagster_instance.run_monitoring_enabled
    worker = _dead_worker()
    assert worker_alive(worker) is False
    room_id = with_platform(settings, lambda platform: make_room(platform, LINES, "dead worker"))
    dagster_instance.add_dynamic_partitions("rooms", [room_id])
    # what a daemon killed mid-run leaves behind: a STARTED run tagged with its process
    run = dagster_instance.create_run_for_job(
        job_def=defs.resolve_job_def("refresh_room"),
        tags={"dagster/partition": room_id, WORKER_TAG: worker},
        status=DagsterRunStatus.STARTED,
    )
    [record] = dagster_instance.get_run_records(filters=RunsFilter(run_ids=[run.run_id]))
    health = launcher.check_run_worker_health(record.dagster_run)
    assert health.status == WorkerStatus.FAILED and worker in (health.msg or "")

    monitor_started_run(dagster_instance, None, record, logging.getLogger("test"))  # type: ignore[arg-type]
    failed = dagster_instance.get_run_by_id(run.run_id)
    assert failed is not None and failed.status == DagsterRunStatus.FAILURE


def test_runs_not_launched_in_a_thread_are_left_alone(
    dagster_instance: DagsterInstance,
) -> None:
    launcher = dagster_instance.run_launcher
    assert isinstance(launcher, ThreadRunLauncher)
    run = dagster_instance.create_run_for_job(
        job_def=defs.resolve_job_def("refresh_room"),
        tags={"dagster/partition": "cli-room"},
        status=DagsterRunStatus.NOT_STARTED,
    )
    try:
        assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
        # this process's own id, but no thread: the thread ended without finishing the run
        own = run.with_tags({**run.tags, WORKER_TAG: launcher.worker_id})
        assert launcher.check_run_worker_health(own).status == WorkerStatus.FAILED
    finally:
        dagster_instance.delete_run(run.run_id)


# --- runs sharing the daemon's process ----------------------------------------------------------


class _HeldHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - never logged to
        pass


def test_starting_a_run_does_not_wait_for_another_runs_logging_handler(
    dagster_instance: DagsterInstance,
) -> None:
    """A run's log manager asks the instance for its handlers. Dagster's answer re-ran
    ``logging.config.dictConfig``, which takes every handler's lock (closing it) while holding
    logging's module lock: with another run holding its event handler's lock and waiting for
    the module lock, two rooms' runs in one daemon deadlocked for good."""
    held = _HeldHandler()
    logging.getLogger("tests.a_running_run").addHandler(held)
    held.acquire()  # what a running run's handler holds while it stores an event
    try:
        asked = threading.Thread(target=dagster_instance.get_handlers, daemon=True)
        asked.start()
        asked.join(5)
        waited = asked.is_alive()
    finally:
        held.release()
        logging.getLogger("tests.a_running_run").removeHandler(held)
    assert type(dagster_instance).__name__ == "RoomInstance"
    assert not waited, "the run's log manager set-up waited for another handler's lock"
