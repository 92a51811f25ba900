"""LLM cost of a full build versus an incremental refresh (+1% messages), and build time.

Runs the real pipeline (a Dagster run per build) against the local OpenAI-compatible server of
the tests, with a ~190 kB room (Coriolanus, repeated with part markers) in chunks of 1,200
tokens, and prints side by side:

- LLM calls and tokens per 1,000 input tokens, full build vs refresh after adding 1% messages;
- wall time of the full build with a zero-latency server and with 200 ms per call.

    .venv/bin/python bench/bench_llm.py [--target-kb 190] [--latency-ms 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore")
_DATA = Path(tempfile.mkdtemp(prefix="cgb-", dir="/tmp"))
os.environ["COAGENT_DATA_DIR"] = str(_DATA)
os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")

from coagent.runs import run_room_job  # noqa: E402
from dbschema.migrate import upgrade  # noqa: E402
from knowledge.platform import open_platform, sync_engine  # noqa: E402
from knowledge.sample import load_sample  # noqa: E402
from knowledge.settings import get_settings  # noqa: E402
from pipelines.instance import get_instance  # noqa: E402
from pipelines.resources import KnowledgeResource  # noqa: E402
from tests.conftest import add_messages, make_room  # noqa: E402
from tests.llm_server import FakeOpenAI  # noqa: E402


def conversation(target_kb: int) -> list[tuple[str, str]]:
    speeches = load_sample()
    lines: list[tuple[str, str]] = []
    part = 0
    while sum(len(t) for _, t in lines) < target_kb * 1000:
        part += 1
        lines += [(s.speaker, f"{s.text} [part {part}]") for s in speeches]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target-kb", type=int, default=190)
    parser.add_argument("--latency-ms", type=int, default=200)
    args = parser.parse_args()

    settings = get_settings()
    engine = sync_engine(settings)
    upgrade(engine)
    engine.dispose()
    instance = get_instance(settings)
    fake = FakeOpenAI().start()
    lines = conversation(args.target_kb)

    def overrides(model: str) -> dict[str, str]:
        return {
            "openai_api_key": "bench",
            "llm_base_url": fake.base_url,
            "llm_chat_model": model,
            "llm_embedding_dim": "256",
            "chunk_tokens": "1200",
            "chunk_overlap_tokens": "100",
            "llm_concurrency": "16",
        }

    def new_room(count: int) -> str:
        async def create() -> str:
            async with open_platform(settings) as platform:
                return await make_room(platform, lines[:count], "bench")

        return asyncio.run(create())

    def build(room_id: str, model: str) -> dict[str, float]:
        fake.reset()
        started = time.perf_counter()
        outcome = run_room_job(
            instance,
            "refresh_room",
            room_id,
            show_progress=False,
            resources={"knowledge": KnowledgeResource(overrides=overrides(model))},
        )
        seconds = time.perf_counter() - started
        assert outcome.success, outcome.error
        meta = outcome.metadata
        steps = [
            meta.get(k, {}) for k in ("chunks", "entities", "communities", "community_reports")
        ]
        return {
            "seconds": seconds,
            "calls": sum(s.get("llm_calls", 0) for s in steps),
            "tokens": sum(
                s.get("llm_prompt_tokens", 0) + s.get("llm_completion_tokens", 0) for s in steps
            ),
            "input_tokens": meta["chunks"]["tokens"],
            "chunks": meta["chunks"]["chunks"],
            "extracted": meta["entities"]["chunks_extracted"],
            "max_in_flight": fake.max_in_flight,
            "steps": " / ".join(f"{s.get('seconds', 0):.1f}" for s in steps),
        }

    total = len(lines)
    base = int(total / 1.01)
    room = new_room(base)
    full = build(room, "gpt-4o-mini")

    async def grow() -> None:
        async with open_platform(settings) as platform:
            await add_messages(platform, room, lines[base:])

    asyncio.run(grow())
    refresh = build(room, "gpt-4o-mini")

    fake.latency = args.latency_ms / 1000
    slow_room = new_room(base)
    slow = build(slow_room, "gpt-4o-mini-latency")  # another model name: no cache hits
    fake.stop()

    def per_k(row: dict[str, float], key: str) -> float:
        return row[key] / row["input_tokens"] * 1000

    kb = sum(len(t) for _, t in lines[:base]) / 1000
    print(
        f"\nroom: {base} messages, {kb:.0f} kB, {full['chunks']:.0f} chunks of <=1200 tokens; "
        f"refresh adds {total - base} messages ({(total - base) / base:.1%})"
    )
    print(f"{'':34}{'full build':>14}{'refresh +1%':>14}{'ratio':>10}")
    rows = [
        ("chunks extracted", "extracted"),
        ("LLM calls", "calls"),
        ("LLM tokens", "tokens"),
    ]
    for label, key in rows:
        ratio = refresh[key] / full[key] if full[key] else 0.0
        print(f"{label:34}{full[key]:>14.0f}{refresh[key]:>14.0f}{ratio:>10.2%}")
    for label, key in (
        ("LLM calls / 1k input tokens", "calls"),
        ("LLM tokens / 1k input tokens", "tokens"),
    ):
        print(f"{label:34}{per_k(full, key):>14.2f}{per_k(refresh, key):>14.2f}")
    print(f"{'wall time (s), 0 ms per call':34}{full['seconds']:>14.2f}{refresh['seconds']:>14.2f}")
    print(
        f"{f'wall time (s), {args.latency_ms} ms per call':34}{slow['seconds']:>14.2f}"
        f"{'':>14}  (max {slow['max_in_flight']:.0f} calls in flight)"
    )
    print(f"{'step seconds chunks/graph/comm/rep':34}{full['steps']:>14}{refresh['steps']:>14}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'peak RSS of this process (MB)':34}{peak:>14.0f}")
    print(
        "targets (DESIGN.md): refresh calls <= 2% of a full build; full build <= 7.5 s at 0 ms, "
        "<= 10 s at 200 ms"
    )


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(_DATA, ignore_errors=True)
