"""Launching room jobs as real Dagster runs recorded in the instance, with step progress."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from dagster import AssetCheckSeverity, DagsterEventType, DagsterInstance
from dagster._core.utils import make_new_run_id

from coagent.progress import say
from pipelines.definitions import defs
from pipelines.jobs import REBUILD_RUN_CONFIG

_STEP_EVENTS = {
    DagsterEventType.STEP_START,
    DagsterEventType.STEP_SUCCESS,
    DagsterEventType.STEP_FAILURE,
}
_QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class RunOutcome:
    run_id: str
    success: bool
    seconds: float
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed_checks: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


def run_room_job(
    instance: DagsterInstance,
    job_name: str,
    room_id: str,
    show_progress: bool = True,
    resources: dict[str, Any] | None = None,
) -> RunOutcome:
    """Run ``refresh_room`` / ``rebuild_room`` for one room partition in this process."""
    instance.add_dynamic_partitions("rooms", [room_id])
    job = defs.resolve_job_def(job_name)
    run_id = make_new_run_id()
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = job.execute_in_process(
                instance=instance,
                partition_key=room_id,
                run_id=run_id,
                # An explicit run config replaces the job's own: merge it back in.
                run_config={
                    **(REBUILD_RUN_CONFIG if job_name == "rebuild_room" else {}),
                    **_QUIET_LOGS,
                },
                raise_on_error=False,
                tags={"coagent/source": "cli"},
                resources=resources,
            )
        except Exception as error:  # reported below, never swallowed
            result["error"] = error

    started = time.perf_counter()
    worker = threading.Thread(target=target, name=f"dagster-{job_name}", daemon=True)
    worker.start()
    step_started: dict[str, float] = {}
    cursor: str | None = None
    while True:
        worker.join(timeout=0.3)
        finished = not worker.is_alive()
        if not show_progress:
            if finished:
                break
            continue
        # Only the step events since the last poll (and once more after the run ended).
        page = instance.get_records_for_run(run_id, cursor=cursor, of_type=_STEP_EVENTS)
        cursor = page.cursor
        for record in page.records:
            event = record.event_log_entry.get_dagster_event()
            step = event.step_key or ""
            if event.event_type == DagsterEventType.STEP_START:
                step_started[step] = time.perf_counter()
                say(f"  ▸ {step} …")
            else:
                took = time.perf_counter() - step_started.get(step, started)
                status = "ok" if event.event_type == DagsterEventType.STEP_SUCCESS else "FAILED"
                say(f"  ▸ {step} {status} ({took:.1f} s)")
        if finished:
            break
    if "error" in result:
        raise result["error"]
    execution = result["value"]
    outcome = RunOutcome(run_id, execution.success, time.perf_counter() - started)
    for event in execution.all_events:
        if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.step_materialization_data.materialization
            outcome.metadata[materialization.asset_key.to_user_string()] = {
                k: v.value for k, v in materialization.metadata.items()
            }
        elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            if not evaluation.passed:
                outcome.failed_checks.append(evaluation.check_name)
                if evaluation.severity != AssetCheckSeverity.ERROR:
                    outcome.warnings.append(evaluation.check_name)
        elif event.event_type == DagsterEventType.STEP_FAILURE:
            outcome.error = _root_cause(event.event_specific_data.error)
    return outcome


def _root_cause(error: Any) -> str:
    """The innermost error message: Dagster wraps the domain error in its own."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return str(error.message).strip()
