"""What every bench shares: the service settings a bench must not inherit (it starts its own
embedded services), its throwaway data dir, a nearest-rank percentile, and a free loopback
port."""

from __future__ import annotations

import atexit
import shutil
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

#: Environment variables pointing at external services or models: a bench drops them so it
#: measures its own embedded stack, offline.
SERVICE_VARS = (
    "DATABASE_URL", "POSTGRES_SERVER", "REDIS_URL", "NEO4J_URI", "QDRANT_URL", "QDRANT_HOST",
    "OPENAI_API_KEY", "LLM_BASE_URL", "EMBEDDING_BASE_URL", "EMBEDDING_API_KEY", "RERANK_URL",
    "DAGSTER_HOME", "DAGSTER_POSTGRES_URL",
)  # fmt: skip


def bench_data_dir(prefix: str) -> Path:
    """A data dir of this bench's own, removed at exit once its embedded PostgreSQL is down.

    The embedded servers' exit handlers (registered later, so run first) stop them when this
    process is their last user. pgserver counts a user per process id, though, so a subprocess
    that died without detaching (a killed ``coagent serve``, a Dagster run worker) keeps the
    server up, and removing its directory left it running for good: so it is stopped here."""
    from knowledge.embedded import stop_embedded_postgres

    data_dir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    atexit.register(shutil.rmtree, data_dir, ignore_errors=True)
    atexit.register(stop_embedded_postgres, data_dir)  # atexit runs it before the rmtree
    return data_dir


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
