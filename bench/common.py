"""What every bench shares: the service settings a bench must not inherit (it starts its own
embedded services), a nearest-rank percentile, and a free loopback port."""

from __future__ import annotations

import socket
from collections.abc import Sequence

#: Environment variables pointing at external services or models: a bench drops them so it
#: measures its own embedded stack, offline.
SERVICE_VARS = (
    "DATABASE_URL", "POSTGRES_SERVER", "REDIS_URL", "NEO4J_URI", "QDRANT_URL", "QDRANT_HOST",
    "OPENAI_API_KEY", "LLM_BASE_URL", "EMBEDDING_BASE_URL", "EMBEDDING_API_KEY", "RERANK_URL",
    "DAGSTER_HOME", "DAGSTER_POSTGRES_URL",
)  # fmt: skip


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
