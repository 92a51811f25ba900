"""How room runs are started and watched: a thread run launcher, and the daemon's sensor loop.

**ThreadRunLauncher.** Dagster's default launcher starts a new Python process per run, which
costs ~5-8 s on a small machine before the first step runs (interpreter, Dagster and our
imports). Room refreshes are short and run on the in-process executor, so for the embedded
default (``coagent dev``) the daemon runs them in its own threads and a run starts within about
a second. ``compose.yaml`` keeps the default, process-isolated launcher.

- *Run monitoring* (``run_monitoring`` in the instance's ``dagster.yaml``): every run is tagged
  with the process running it (``coagent/run_worker``: host, pid, process start time), and
  ``check_run_worker_health`` answers FAILED when that process is gone (the daemon crashed or
  was killed) or, in the process itself, when the run's thread ended without finishing the
  run. Dagster's monitoring daemon then marks the run failed, which frees the room's slot
  (one run per room at a time) so the room's next run starts. Runs cannot be resumed
  (``max_resume_run_attempts: 0``).
- *Termination* (the UI's Terminate, ``max_runtime_seconds``): the run is marked CANCELING; the
  process running it (which polls its runs every ``cancellation_thread_poll_interval_seconds``)
  raises ``DagsterExecutionInterruptedError`` in the run's thread, at its next Python
  instruction (a call blocked in C, e.g. a socket read, is interrupted when it returns), and
  Dagster records the run as canceled.
- A crash of one run still takes the daemon down with it (runs share its process).
- Runs also share the process's ``logging``: the instance class (``RoomInstance`` in
  ``pipelines/instance.py``) keeps a starting run from re-configuring it under a running one,
  which deadlocked two rooms' runs.

**The sensor loop.** Dagster's sensor daemon sleeps so that each of its loops lasts at least
``MIN_INTERVAL_LOOP_TIME`` (5 s, a private constant; Dagster has no setting for it), which
alone adds up to 5 s to the freshness path. ``RoomRunCoordinator`` (Dagster's queued run
coordinator; the daemon builds it at start-up) shortens it to 1 s in the daemon, after checking
that the constant still exists and is what the loop reads. If a Dagster upgrade renamed it, the
daemon logs an error at start-up, the instance records it (``sensor_loop_status``) and the
``graphrag_events`` sensor reports it in every tick's log, instead of losing seconds silently.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Self

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._config.config_schema import UserConfigSchema
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.execution.api import execute_run
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, RunLauncher, WorkerStatus
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.dagster_run import DagsterRun
from dagster._serdes import ConfigurableClass
from dagster._serdes.config_class import ConfigurableClassData
from dagster._utils.hosted_user_process import recon_job_from_origin

log = logging.getLogger(__name__)

# --- the sensor daemon's loop -------------------------------------------------------------------

SENSOR_LOOP_SECONDS = 1.0
_LOOP_CONSTANT = "MIN_INTERVAL_LOOP_TIME"
#: Where the instance keeps the outcome (its daemon cursor key-value store).
SENSOR_LOOP_KEY = "coagent/sensor_loop"


@dataclass(frozen=True)
class SensorLoopStatus:
    #: The loop floor asked for, and the one in effect (None: Dagster's own, unknown).
    requested: float
    effective: float | None
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SensorLoopStatus:
        return cls(**json.loads(text))


def apply_sensor_loop_interval(seconds: float = SENSOR_LOOP_SECONDS) -> SensorLoopStatus:
    """Shorten the sensor daemon's loop floor, checking first that Dagster still has it."""
    try:
        import dagster._daemon.sensor as sensor_daemon
    except ImportError as error:  # pragma: no cover - a Dagster without that module
        return _loop_not_shortened(seconds, f"dagster._daemon.sensor cannot be imported ({error})")
    current = getattr(sensor_daemon, _LOOP_CONSTANT, None)
    loop = getattr(sensor_daemon, "execute_sensor_iteration_loop", None)
    if not isinstance(current, int | float) or isinstance(current, bool):
        return _loop_not_shortened(seconds, f"Dagster has no numeric {_LOOP_CONSTANT} any more")
    if loop is None or _LOOP_CONSTANT not in loop.__code__.co_names:
        return _loop_not_shortened(
            seconds, f"Dagster's sensor loop no longer reads {_LOOP_CONSTANT}", float(current)
        )
    setattr(sensor_daemon, _LOOP_CONSTANT, seconds)
    return SensorLoopStatus(requested=seconds, effective=seconds)


def _loop_not_shortened(
    seconds: float, reason: str, effective: float | None = None
) -> SensorLoopStatus:
    log.error(
        "the sensor daemon's loop was NOT shortened to %g s: %s. Every change event can wait "
        "up to ~4 s more before its run is asked for; adapt pipelines/launcher.py to this "
        "Dagster version.",
        seconds,
        reason,
    )
    return SensorLoopStatus(requested=seconds, effective=effective, error=reason)


#: What importing this module did to the daemon's loop (the daemon imports it at start-up).
SENSOR_LOOP = apply_sensor_loop_interval()


def record_sensor_loop(instance: DagsterInstance, status: SensorLoopStatus | None = None) -> None:
    instance.run_storage.set_cursor_values({SENSOR_LOOP_KEY: (status or SENSOR_LOOP).to_json()})


def sensor_loop_status(instance: DagsterInstance) -> SensorLoopStatus | None:
    """The outcome the daemon recorded at start-up (None: nothing recorded)."""
    value = instance.run_storage.get_cursor_values({SENSOR_LOOP_KEY}).get(SENSOR_LOOP_KEY)
    return SensorLoopStatus.from_json(value) if value else None


class RoomRunCoordinator(QueuedRunCoordinator):
    """Dagster's queued run coordinator, configured the same way. It is here because the daemon
    builds the run coordinator when it starts (the run launcher only when it launches a first
    run): loading this module shortens the sensor loop from the start, and the instance
    records whether that worked."""

    def register_instance(self, instance: DagsterInstance) -> None:
        super().register_instance(instance)
        try:
            record_sensor_loop(instance)
        except Exception:  # the instance's storage is not reachable yet: not this class's job
            log.warning("could not record the sensor loop status", exc_info=True)


# --- the thread run launcher ----------------------------------------------------------------------

#: Run tag: the process that runs the run (``host:pid:start``).
WORKER_TAG = "coagent/run_worker"


def _process_start(pid: int) -> str | None:
    """The start time of a process (clock ticks since boot, from /proc), None if there is no
    such process (or no /proc): with the pid it tells a process from a later one reusing it."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _worker_id() -> str:
    start = _process_start(os.getpid()) or f"u{uuid.uuid4().hex[:12]}"
    return f"{socket.gethostname()}:{os.getpid()}:{start}"


def worker_alive(worker: str) -> bool | None:
    """Whether the process a ``coagent/run_worker`` tag names still runs (None: cannot tell,
    e.g. another host)."""
    host, _, rest = worker.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    if not start.startswith("u"):
        return _process_start(pid) == start
    try:  # no /proc where it was launched: the pid alone
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ThreadRunLauncher(RunLauncher, ConfigurableClass):
    def __init__(self, inst_data: ConfigurableClassData | None = None) -> None:
        self._inst_data = inst_data
        self._threads: dict[str, threading.Thread] = {}
        self._interrupted: set[str] = set()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self.worker_id = _worker_id()
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return {}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> Self:
        return cls(inst_data=inst_data)

    # --- launching ---------------------------------------------------------------------------

    def launch_run(self, context: LaunchRunContext) -> None:
        recon_job = recon_job_from_origin(context.job_code_origin)  # type: ignore[arg-type]
        run_id = context.dagster_run.run_id
        instance = self._instance
        instance.add_run_tags(run_id, {WORKER_TAG: self.worker_id})

        def target() -> None:
            try:
                run = instance.get_run_by_id(run_id)
                if run is not None:
                    execute_run(recon_job, run, instance)
            except BaseException:  # execute_run records step failures itself; this is the rest
                log.exception("run %s failed outside its steps", run_id)
            finally:
                with self._lock:
                    self._threads.pop(run_id, None)
                    self._interrupted.discard(run_id)

        thread = threading.Thread(target=target, name=f"dagster-run-{run_id[:8]}", daemon=True)
        with self._lock:
            self._threads[run_id] = thread
        thread.start()
        self._ensure_watcher()

    # --- run monitoring ----------------------------------------------------------------------

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        worker = run.tags.get(WORKER_TAG)
        if worker is None:
            # Not launched by this launcher (e.g. `coagent materialize` runs it in process).
            return CheckRunHealthResult(WorkerStatus.RUNNING, "not a thread-launched run")
        if worker == self.worker_id:
            thread = self._threads.get(run.run_id)
            if thread is not None and thread.is_alive():
                return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=worker)
            return CheckRunHealthResult(
                WorkerStatus.FAILED,
                "the run's thread ended without finishing the run",
                run_worker_id=worker,
            )
        if worker_alive(worker) is False:
            return CheckRunHealthResult(
                WorkerStatus.FAILED,
                f"the process that ran it ({worker}) is gone: the Dagster daemon stopped or "
                "crashed during the run",
                run_worker_id=worker,
            )
        # Alive (its own monitoring watches it), or on another host (cannot tell).
        return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=worker)

    # --- termination -------------------------------------------------------------------------

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        worker = run.tags.get(WORKER_TAG)
        if worker is None:
            return False
        if worker != self.worker_id and worker_alive(worker) is False:
            self._instance.report_run_canceled(run, "its worker process is gone")
            return True
        if run.status != DagsterRunStatus.CANCELING:
            self._instance.report_run_canceling(run)
        # In this process: interrupt it now; in another one, its watcher does.
        return self._interrupt(run_id) if worker == self.worker_id else True

    def _interrupt(self, run_id: str) -> bool:
        with self._lock:
            thread = self._threads.get(run_id)
            if thread is None or thread.ident is None or run_id in self._interrupted:
                return thread is not None
            self._interrupted.add(run_id)
        done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(DagsterExecutionInterruptedError)
        )
        if done != 1:  # 0: the thread is gone; >1 cannot happen for one ident, but undo it
            if done > 1:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), None)
            return False
        log.info("interrupting run %s (terminated)", run_id)
        return True

    def _ensure_watcher(self) -> None:
        with self._lock:
            if self._watcher is not None and self._watcher.is_alive():
                return
            self._watcher = threading.Thread(
                target=self._watch, name="dagster-run-terminations", daemon=True
            )
            self._watcher.start()

    def _watch(self) -> None:
        """While this process runs runs: interrupt those marked CANCELING (by any process)."""
        instance = self._instance
        interval = max(0.2, float(instance.cancellation_thread_poll_interval_seconds))
        stop = threading.Event()
        while True:
            with self._lock:
                running = list(self._threads)
                if not running:
                    self._watcher = None
                    return
            try:
                records = instance.get_run_records(
                    filters=RunsFilter(run_ids=running, statuses=[DagsterRunStatus.CANCELING])
                )
                for record in records:
                    self._interrupt(record.dagster_run.run_id)
            except Exception:
                log.warning("could not check runs for termination", exc_info=True)
            stop.wait(interval)

    def join(self, timeout: float | None = None) -> None:
        for thread in list(self._threads.values()):
            thread.join(timeout)
