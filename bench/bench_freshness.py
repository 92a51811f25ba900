"""Freshness: message posted → its entity visible to local search, through the real stack.

Starts ``coagent dev`` (API, Dagster webserver + daemon with the events sensor) and a Redis
server, posts 20 messages one at a time (each naming a new person), and measures how long until
the graph query returns that entity. Prints p50 / p95 with the breakdown taken from the Dagster
runs: debounce (configured quiet time), sensor tick (event → run requested), run start
(requested → started), run time (started → finished) and the rest (answer visible).

    .venv/bin/python bench/bench_freshness.py [--messages 20] [--debounce 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import percentile  # noqa: E402

warnings.filterwarnings("ignore")

from dagster import DagsterInstance, RunsFilter  # noqa: E402

from knowledge.embedded import embedded_postgres_url  # noqa: E402
from tests.e2e.harness import Platform, wait_until  # noqa: E402

NAMES = [
    "Aurelia", "Bellator", "Cassius", "Drusilla", "Eutropius", "Faustina", "Gallienus",
    "Honoria", "Iulianus", "Justina", "Kaeso", "Livilla", "Macrinus", "Numerian", "Octavia",
    "Probus", "Quintilla", "Rufinus", "Sabina", "Tacitus", "Ulpia", "Valens", "Xanthippe",
    "Zosimus",
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--debounce", type=float, default=2.0)
    args = parser.parse_args()

    platform = Platform(debounce_seconds=args.debounce)
    print("starting coagent dev …", flush=True)
    started = time.perf_counter()
    platform.start()
    print(f"up in {time.perf_counter() - started:.0f} s", flush=True)
    try:
        api = platform.client()
        room_id = api.new_room()
        embedded_postgres_url(platform.data_dir)
        instance = DagsterInstance.from_config(str(platform.data_dir / "dagster"))
        rows = []
        for i in range(args.messages):
            name = NAMES[i % len(NAMES)] + ("" if i < len(NAMES) else str(i))
            posted = time.time()
            api.say(room_id, f"{name} of Ravenna met {name} of Ravenna's envoy; {name} agreed.")
            wait_until(
                lambda name=name: any(
                    name.lower() in e for e in api.entities(room_id, f"Who is {name}?")
                ),
                300,
                0.2,
                name,
            )
            visible = time.time()
            runs = instance.get_run_records(
                filters=RunsFilter(tags={"dagster/partition": room_id}), limit=1
            )
            run = runs[0]
            created = run.create_timestamp.timestamp()
            start = run.start_time or created
            end = run.end_time or visible
            rows.append(
                {
                    "total": visible - posted,
                    "until_request": created - posted,
                    "run_start": start - created,
                    "run": end - start,
                    "after_run": visible - end,
                }
            )
            print(f"  {i + 1:>2} {name:<12} visible after {visible - posted:5.1f} s", flush=True)
        api.close()
        instance.dispose()
    finally:
        platform.stop()

    print(f"\nfreshness over {len(rows)} messages, debounce {args.debounce:g} s")
    print(f"{'':34}{'p50 (s)':>10}{'p95 (s)':>10}")
    for label, key in (
        ("message posted → visible", "total"),
        ("  posted → run requested", "until_request"),
        ("    of which debounce (config)", None),
        ("    sensor tick and cursor", "tick"),
        ("  run requested → started", "run_start"),
        ("  run time", "run"),
        ("  run end → answer visible", "after_run"),
    ):
        if key is None:
            print(f"{label:34}{args.debounce:>10.1f}{args.debounce:>10.1f}")
            continue
        if key == "tick":
            values = [max(0.0, r["until_request"] - args.debounce) for r in rows]
        else:
            values = [r[key] for r in rows]
        print(f"{label:34}{statistics.median(values):>10.2f}{percentile(values, 0.95):>10.2f}")
    print("target (DESIGN.md): p95 <= 8 s with a 2 s debounce")


if __name__ == "__main__":
    main()
