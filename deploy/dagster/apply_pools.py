"""Set the instance's pool limits from deploy/dagster/pools.yaml (idempotent).

    DAGSTER_HOME=/opt/dagster/home python deploy/dagster/apply_pools.py [pools.yaml]

The same as ``dagster instance concurrency set NAME LIMIT`` for each pool; run it once per
instance (e.g. as a Kubernetes Job or a compose one-shot) after ``dagster instance migrate``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from dagster import DagsterInstance

POOLS = Path(__file__).with_name("pools.yaml")


def pool_limits(path: Path = POOLS) -> dict[str, int]:
    data = yaml.safe_load(path.read_text()) or {}
    return {str(name): int(limit) for name, limit in (data.get("pools") or {}).items()}


def main() -> None:
    limits = pool_limits(Path(sys.argv[1]) if len(sys.argv) > 1 else POOLS)
    with DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        if not storage.supports_global_concurrency_limits:
            raise SystemExit("this instance's storage has no pools: use PostgreSQL storage")
        for name, limit in limits.items():
            storage.set_concurrency_slots(name, limit)
            print(f"pool {name}: {limit}")


if __name__ == "__main__":
    main()
