"""A run launcher that executes each run in a thread of the process that launches it.

Dagster's default launcher starts a new Python process per run, which costs ~5-8 s on a small
machine before the first step runs (interpreter, Dagster and our imports). Room refreshes are
short and run on the in-process executor, so for the embedded default (``coagent dev``) the
daemon runs them in its own threads and a run starts within about a second. Trade-offs: runs
share the daemon's process (a crash of one takes the daemon down; Dagster then reports the run
as failed on restart), and a running run cannot be terminated from the UI. ``compose.yaml``
keeps the default, process-isolated launcher.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, Self

from dagster._config.config_schema import UserConfigSchema
from dagster._core.execution.api import execute_run
from dagster._core.launcher import LaunchRunContext, RunLauncher
from dagster._serdes import ConfigurableClass
from dagster._serdes.config_class import ConfigurableClassData
from dagster._utils.hosted_user_process import recon_job_from_origin

log = logging.getLogger(__name__)

# The sensor daemon sleeps so that each of its loops lasts at least 5 s, which alone adds up to
# 5 s to the freshness path. This module is loaded by the daemon (it is the instance's run
# launcher), so it shortens that floor to 1 s there; the sensor's own minimum interval (1 s)
# still spaces evaluations. A private constant: guarded, and harmless if Dagster renames it.
_SENSOR_LOOP_SECONDS = 1
try:
    import dagster._daemon.sensor as _sensor_daemon

    if hasattr(_sensor_daemon, "MIN_INTERVAL_LOOP_TIME"):
        _sensor_daemon.MIN_INTERVAL_LOOP_TIME = _SENSOR_LOOP_SECONDS  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - a Dagster without that module
    pass


class ThreadRunLauncher(RunLauncher, ConfigurableClass):
    def __init__(self, inst_data: ConfigurableClassData | None = None) -> None:
        self._inst_data = inst_data
        self._threads: dict[str, threading.Thread] = {}
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

    def launch_run(self, context: LaunchRunContext) -> None:
        recon_job = recon_job_from_origin(context.job_code_origin)  # type: ignore[arg-type]
        run_id = context.dagster_run.run_id
        instance = self._instance

        def target() -> None:
            try:
                run = instance.get_run_by_id(run_id)
                if run is not None:
                    execute_run(recon_job, run, instance)
            except Exception:  # execute_run records step failures itself; this is the rest
                log.exception("run %s failed outside its steps", run_id)
            finally:
                self._threads.pop(run_id, None)

        thread = threading.Thread(target=target, name=f"dagster-run-{run_id[:8]}", daemon=True)
        self._threads[run_id] = thread
        thread.start()

    def terminate(self, run_id: str) -> bool:
        log.warning("run %s runs in a thread and cannot be terminated", run_id)
        return False

    def join(self, timeout: float | None = None) -> None:
        for thread in list(self._threads.values()):
            thread.join(timeout)
