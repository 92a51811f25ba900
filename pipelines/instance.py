"""The Dagster instance, stored in PostgreSQL (SQLite locks under concurrent runs).

``dagster.yaml`` is written under ``DAGSTER_HOME`` so that ``dagster dev`` / the webserver /
the daemon started later find the same runs, event logs and schedules as the CLI.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from knowledge.platform import database_url, with_driver
from knowledge.settings import Settings

DAGSTER_DATABASE = "dagster"
#: dagster-webserver's defaults for its pooled storage connections.
POOL_RECYCLE_SECONDS = 3600
POOL_MAX_OVERFLOW = 20


class RoomInstance(DagsterInstance):
    """Dagster's instance, with pooled storage connections and minus one call that deadlocks
    runs sharing a process.

    Pooling: dagster-postgres opens a new PostgreSQL connection for every storage call unless
    the process asks for a pool (``optimize_for_webserver``, what ``dagster-webserver`` calls
    at start-up). A room refresh makes about 250 such calls (events, check results, partition
    and version lookups): half of a small room's run (1.1 s → 0.6 s at 1k messages). Every
    process of ours that runs or watches runs (the daemon and its run threads, run workers,
    the CLI) asks for one, with the webserver's pool settings and no statement timeout.

    Every run's log manager asks the instance for its ``python_logs`` handlers, and Dagster
    answers by calling ``logging.config.dictConfig`` even when none are configured. That call
    closes every logging handler of the process (taking each handler's lock) while it holds
    logging's module lock. With runs in threads of one daemon (``ThreadRunLauncher``), a run
    storing an event holds its event handler's lock and then needs the module lock, so a second
    room's run starting at that moment hung the daemon for good. Without a configured
    ``dagster_handler_config`` there are no handlers to build, so nothing is called; with one,
    Dagster's own code runs (under Dagster's default, one process per run, it is safe).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.optimize_for_webserver(
            statement_timeout=0, pool_recycle=POOL_RECYCLE_SECONDS, max_overflow=POOL_MAX_OVERFLOW
        )

    @classmethod
    def config_schema(cls) -> dict:
        return {}

    @staticmethod
    def config_defaults(base_dir: str) -> dict:
        return dict(InstanceRef.config_defaults(base_dir))

    def get_yaml_python_handlers(self) -> Sequence[logging.Handler]:
        if not self.get_python_log_dagster_handler_config():
            return []
        return super().get_yaml_python_handlers()


def dagster_storage_url(settings: Settings) -> str:
    """psycopg2 URL of Dagster's storage (dagster-postgres breaks on psycopg 3's NOTIFY)."""
    if settings.dagster_postgres_url:
        return with_driver(settings.dagster_postgres_url, "psycopg2")
    base = make_url(with_driver(database_url(settings), "psycopg"))
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": DAGSTER_DATABASE}
            ).first()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{DAGSTER_DATABASE}"'))
    except Exception as error:
        if "already exists" not in str(error):
            raise RuntimeError(
                f"could not create the {DAGSTER_DATABASE!r} database for Dagster ({error}); "
                "create it or set DAGSTER_POSTGRES_URL"
            ) from error
    finally:
        engine.dispose()
    url = base.set(drivername="postgresql+psycopg2", database=DAGSTER_DATABASE)
    return url.render_as_string(hide_password=False)


def dagster_home(settings: Settings) -> Path:
    return (settings.dagster_home or settings.coagent_data_dir / "dagster").expanduser().resolve()


def instance_config(settings: Settings) -> dict:
    return {
        "instance_class": {"module": "pipelines.instance", "class": "RoomInstance"},
        "storage": {"postgres": {"postgres_url": dagster_storage_url(settings)}},
        "telemetry": {"enabled": False},
        # Dagster's QueuedRunCoordinator; the daemon loads it at start-up, which shortens its
        # sensor loop to 1 s (see pipelines/launcher.py).
        "run_coordinator": {
            "module": "pipelines.launcher",
            "class": "RoomRunCoordinator",
            "config": {
                "dequeue_interval_seconds": 1,
                # One run per room at a time: runs of a room partition queue behind each other.
                "tag_concurrency_limits": [
                    {
                        "key": "dagster/partition",
                        "value": {"applyLimitPerUniqueValue": True},
                        "limit": 1,
                    }
                ],
            },
        },
        # Room runs start in a thread of the daemon: no per-run process start-up (see
        # pipelines/launcher.py); DAGSTER_RUN_LAUNCHER=process restores Dagster's default.
        "run_launcher": (
            {"module": "pipelines.launcher", "class": "ThreadRunLauncher"}
            if settings.dagster_run_launcher == "thread"
            else {"module": "dagster.core.launcher", "class": "DefaultRunLauncher"}
        ),
        # A run whose worker died (the daemon was killed mid-run) is marked failed, which frees
        # its room for the next run; one stuck starting or cancelling is failed / cancelled.
        "run_monitoring": {
            "enabled": True,
            "poll_interval_seconds": 5,
            "start_timeout_seconds": 60,
            "cancel_timeout_seconds": 60,
            # Neither launcher can resume a run: a failed worker fails the run.
            "max_resume_run_attempts": 0,
            # How often the thread launcher looks for its runs to terminate.
            "cancellation_thread_poll_interval_seconds": 2,
        },
        "sensors": {"use_threads": True, "num_workers": 2},
        "retention": {"sensor": {"purge_after_days": {"skipped": 1, "failure": 7, "success": 7}}},
    }


def ensure_dagster_home(settings: Settings) -> Path:
    """Write ``dagster.yaml`` (idempotent) and point ``DAGSTER_HOME`` at it."""
    home = dagster_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    config_path = home / "dagster.yaml"
    content = yaml.safe_dump(instance_config(settings), sort_keys=False)
    if not config_path.exists() or config_path.read_text() != content:
        tmp = config_path.with_suffix(".yaml.tmp")
        tmp.write_text(content)
        tmp.replace(config_path)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def get_instance(settings: Settings) -> DagsterInstance:
    home = ensure_dagster_home(settings)
    return DagsterInstance.from_config(str(home))
