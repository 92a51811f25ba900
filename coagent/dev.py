"""``coagent dev``: the Dagster webserver + daemon (with the events sensor) and the API together.

The parent process owns the embedded PostgreSQL and Redis and hands their URLs to the children,
so every process talks to the same servers; Ctrl-C (or SIGTERM) stops the children, then the
services.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from coagent.database import prepare_database
from coagent.progress import say, step
from knowledge.platform import database_url, redis_url
from knowledge.settings import Settings
from pipelines.instance import ensure_dagster_home

_WORKSPACE = Path(__file__).resolve().parent.parent / "workspace.yaml"
_STOP_GRACE_SECONDS = 20


def _wait_http(url: str, timeout: float, process: subprocess.Popen) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
    deadline = time.monotonic() + _STOP_GRACE_SECONDS
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_dev(
    settings: Settings, host: str, api_port: int, dagster_port: int, ready_file: str | None
) -> int:

    prepare_database(settings)
    with step("Starting Redis" if settings.uses_embedded_redis else "Connecting Redis"):
        redis = redis_url(settings)
    with step("Preparing the Dagster instance"):
        home = ensure_dagster_home(settings)
    env = {
        **os.environ,
        "DATABASE_URL": database_url(settings),
        "REDIS_URL": redis,
        "DAGSTER_HOME": str(home),
        "COAGENT_DATA_DIR": str(settings.coagent_data_dir),
    }
    processes: list[subprocess.Popen] = []

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        dagster = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", str(_WORKSPACE),
             "-h", host, "-p", str(dagster_port)],
            env=env,
            start_new_session=True,
        )  # fmt: skip
        processes.append(dagster)
        api = subprocess.Popen(
            [sys.executable, "-m", "coagent.cli", "serve", "--host", host, "--port", str(api_port)],
            env=env,
            start_new_session=True,
        )
        processes.append(api)
        worker = subprocess.Popen(
            [sys.executable, "-m", "coagent.cli", "worker", "--log-level", "warning"],
            env=env,
            start_new_session=True,
        )
        processes.append(worker)
        with step(f"Waiting for the API on http://{host}:{api_port}"):
            if not _wait_http(f"http://{host}:{api_port}/docs", 120, api):
                raise RuntimeError("the API did not start (see its output above)")
        with step(f"Waiting for the Dagster UI on http://{host}:{dagster_port}"):
            if not _wait_http(f"http://{host}:{dagster_port}/server_info", 180, dagster):
                raise RuntimeError("the Dagster webserver did not start (see its output above)")
        say("")
        say(f"  API           http://{host}:{api_port}/docs")
        say(f"  Dagster UI    http://{host}:{dagster_port}  (sensor graphrag_events is running)")
        say("  agent worker  running (answers @mentions)")
        say(f"  data dir      {settings.coagent_data_dir}")
        say(
            f"  debounce      {settings.realtime_debounce_seconds:g} s "
            f"(max wait {settings.realtime_max_wait_seconds:g} s)"
        )
        say("Press Ctrl-C to stop everything.")
        if ready_file:
            Path(ready_file).write_text("ready\n")
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        say("a process exited; stopping the others")
        return 1
    except KeyboardInterrupt:
        say("\nStopping …")
        return 0
    finally:
        _stop(processes)
        say("Stopped.")
