"""Query latency: retrieval in process and over HTTP, on the sample room (offline platform).

    .venv/bin/python bench/bench_query.py [--queries 200] [--warmup 20] [--server subprocess|thread]

Loads the bundled sample room (Coriolanus, 497 messages, as ``coagent demo`` does) into its own
temporary data dir (embedded PostgreSQL and Redis), indexes it with the domain layer's steps
(``index_room``: chunks, evidence, graph, communities, reports), then times, per query, after
``--warmup`` untimed queries and cycling over the questions of the coriolanus golden set:

- in process: ``knowledge.search.answer_question(..., mode=Mode.evidence)`` (retrieval only),
  and ``mode=answer`` (offline: extractive answers, map-reduce over the reports on the global
  route);
- over HTTP: ``POST /api/v1/rooms/{id}/graph/query`` with ``{"question", "mode"}`` against the
  real API served by uvicorn (``coagent serve`` in a subprocess by default, or a thread of this
  process), logged in as a room member with the password (cookies + CSRF header), one
  keep-alive connection, one query at a time. "of which the server's answer seconds" is the
  answer's own ``seconds``; the rest of the HTTP time is routing, auth, the room check, the
  freshness lookups (Dagster instance, event stream), serialization and the client: the
  ``GET /health`` row is the floor of HTTP + client, the "Dagster freshness lookup" row the
  five ``fetch_materializations`` calls every graph query makes.

The LLM, embedding, reranker, Neo4j and Qdrant variables are dropped from the environment: this
measures the default offline platform. Nothing is asserted; the targets are printed beside.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "bench" / "quality" / "data" / "coriolanus" / "questions.jsonl"
sys.path.insert(0, str(ROOT))
from bench.common import SERVICE_VARS, bench_data_dir, free_port, percentile  # noqa: E402

warnings.filterwarnings("ignore")

EMAIL = "bench.member@bench.coagent.local"
PASSWORD = "bench-query-password-123"
TARGETS_MS = {"in process": 50.0, "HTTP": 100.0}


async def prepare() -> tuple[str, int]:
    """Migrate, load and index the sample room, add a member with a password."""
    from dbschema.migrate import upgrade
    from dbschema.models import UserRole
    from knowledge import rooms, users
    from knowledge.indexing import index_room
    from knowledge.platform import open_platform, sync_engine
    from knowledge.sample import ensure_demo_room
    from knowledge.settings import get_settings
    from serving.auth.security import hash_password

    settings = get_settings()
    engine = sync_engine(settings)
    upgrade(engine)
    engine.dispose()
    async with open_platform(settings) as platform:
        async with platform.session() as session:
            demo = await ensure_demo_room(session, settings.max_message_chars)
            member = await users.create_user(
                session, EMAIL, "Bench Member", UserRole.student, await hash_password(PASSWORD)
            )
            await rooms.add_member(session, demo.room_id, member.id)
            await session.commit()
        room_id = str(demo.room_id)
        started = time.perf_counter()
        built = await index_room(platform, room_id)
        print(
            f"sample room: {demo.messages_total} messages, {built.graph.entities} entities; "
            f"indexed in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
    return room_id, demo.messages_total


def schedule(questions: list[str], warmup: int, queries: int) -> tuple[list[str], list[str]]:
    """Warm-up questions, then the timed ones, cycling over the set."""
    cycle = [questions[i % len(questions)] for i in range(warmup + queries)]
    return cycle[:warmup], cycle[warmup:]


async def in_process(
    room_id: str, questions: list[str], warmup: int, queries: int
) -> dict[str, tuple[list[float], dict[str, list[float]]]]:
    """Per mode: wall seconds per query, and seconds per retrieval stage."""
    from knowledge.platform import open_platform
    from knowledge.search import Mode, answer_question
    from knowledge.settings import get_settings

    out = {}
    async with open_platform(get_settings()) as platform:
        for mode in (Mode.evidence, Mode.answer):
            warm, timed = schedule(questions, warmup, queries)
            for question in warm:
                await answer_question(platform, room_id, question, mode=mode)
            seconds: list[float] = []
            stages: dict[str, list[float]] = defaultdict(list)
            for question in timed:
                t0 = time.perf_counter()
                answer = await answer_question(platform, room_id, question, mode=mode)
                seconds.append(time.perf_counter() - t0)
                per_stage: dict[str, float] = defaultdict(float)
                for stage in answer.stages:
                    per_stage[stage.stage] += stage.seconds
                for name, value in per_stage.items():
                    stages[name].append(value)
            out[mode.value] = (seconds, stages)
    # What the API adds to every graph query: the freshness lookup in the Dagster instance.
    from serving.graph.dagster import DagsterGateway

    gateway = DagsterGateway(get_settings())
    try:
        for _ in range(warmup):
            await gateway.last_materializations(room_id)
        seconds = []
        for _ in range(queries):
            t0 = time.perf_counter()
            await gateway.last_materializations(room_id)
            seconds.append(time.perf_counter() - t0)
        out["freshness"] = (seconds, {})
    finally:
        gateway.close()
    return out


class ThreadServer:
    """The API served by uvicorn in a thread of this process."""

    def __init__(self, port: int) -> None:
        import uvicorn

        from knowledge.settings import get_settings
        from serving.app import create_app

        config = uvicorn.Config(
            create_app(get_settings()), host="127.0.0.1", port=port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_subprocess(port: int) -> subprocess.Popen[bytes]:
    coagent = Path(sys.executable).parent / "coagent"
    return subprocess.Popen(
        [str(coagent), "serve", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def over_http(
    base: str, room_id: str, questions: list[str], warmup: int, queries: int
) -> dict[str, tuple[list[float], list[float]]]:
    """Per mode: client wall seconds per query, and the server's own answer seconds."""
    import httpx

    from serving.auth.security import CSRF_COOKIE, CSRF_HEADER

    out = {}
    with httpx.Client(base_url=f"{base}/api/v1", timeout=60) as client:
        login = client.post("/auth/login", json={"email": EMAIL, "password": PASSWORD})
        login.raise_for_status()
        client.headers[CSRF_HEADER] = client.cookies[CSRF_COOKIE]
        url = f"/rooms/{room_id}/graph/query"
        for mode in ("evidence", "answer"):
            warm, timed = schedule(questions, warmup, queries)
            for question in warm:
                response = client.post(url, json={"question": question, "mode": mode})
                response.raise_for_status()
                assert response.json()["evidence"], response.text
            seconds: list[float] = []
            server: list[float] = []
            for question in timed:
                t0 = time.perf_counter()
                response = client.post(url, json={"question": question, "mode": mode})
                seconds.append(time.perf_counter() - t0)
                response.raise_for_status()
                server.append(float(response.json()["seconds"]))
            out[mode] = (seconds, server)
        # The floor: an unauthenticated GET on the same connection.
        for _ in range(warmup):
            client.get("/health").raise_for_status()
        seconds = []
        for _ in range(queries):
            t0 = time.perf_counter()
            client.get("/health").raise_for_status()
            seconds.append(time.perf_counter() - t0)
        out["health"] = (seconds, [])
    return out


def wait_up(base: str, process: subprocess.Popen[bytes] | None, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            error = process.stderr.read().decode() if process.stderr else ""
            raise SystemExit(f"the API exited ({process.returncode}):\n{error}")
        try:
            if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the API did not start")


def ms(values: list[float], q: float) -> str:
    return f"{1000 * percentile(values, q):8.1f}"


def print_table(rows: list[tuple[str, list[float], float | None]]) -> None:
    header = (
        f"{'measure':<44} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'target':>8}  p95 ≤ target"
    )
    print(header)
    print("-" * len(header))
    for name, values, target in rows:
        verdict = (
            "" if target is None else ("yes" if percentile(values, 0.95) * 1000 <= target else "NO")
        )
        target_text = "" if target is None else f"≤ {target:.0f}"
        print(
            f"{name:<44} {len(values):>4} {ms(values, 0.5)} {ms(values, 0.95)} {ms(values, 0.99)} "
            f"{target_text:>8}  {verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--server", choices=["subprocess", "thread"], default="subprocess")
    args = parser.parse_args()

    data_dir = bench_data_dir("cgb-")
    os.environ["COAGENT_DATA_DIR"] = str(data_dir)
    for var in SERVICE_VARS:
        os.environ.pop(var, None)
    # One user asks hundreds of questions a minute here: above the per-user limit (30), which
    # would answer 429 (as it does since the limit came in; bench_scale.py lifts it too).
    os.environ["GRAPH_QUERY_RATE_LIMIT"] = "1000000"
    from knowledge.embedded import embedded_postgres_url, embedded_redis_url

    # Started here, so this process is their last user (the API subprocess attaches to them).
    embedded_postgres_url(data_dir)
    embedded_redis_url(data_dir)
    questions = [
        json.loads(line)["question"] for line in QUESTIONS.read_text().splitlines() if line.strip()
    ]
    process: subprocess.Popen[bytes] | None = None
    thread: ThreadServer | None = None
    try:
        room_id, _ = asyncio.run(prepare())
        local = asyncio.run(in_process(room_id, questions, args.warmup, args.queries))

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        if args.server == "subprocess":
            process = start_subprocess(port)
        else:
            thread = ThreadServer(port)
        wait_up(base, process)
        remote = over_http(base, room_id, questions, args.warmup, args.queries)

        load = os.getloadavg()[0]
        print(
            f"\n{len(questions)} questions (bench/quality/data/coriolanus), {args.warmup} warm-up "
            f"+ {args.queries} timed per row, one at a time; API: uvicorn ({args.server}); "
            f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load:.1f}\n"
        )
        http_server = "API subprocess" if args.server == "subprocess" else "API thread"
        print_table(
            [
                ("in process, mode=evidence", local["evidence"][0], TARGETS_MS["in process"]),
                ("in process, mode=answer (offline)", local["answer"][0], None),
                (f"HTTP, mode=evidence (client, {http_server})", remote["evidence"][0],
                 TARGETS_MS["HTTP"]),
                ("  of which the server's answer seconds", remote["evidence"][1], None),
                (f"HTTP, mode=answer (client, {http_server})", remote["answer"][0], None),
                ("  of which the server's answer seconds", remote["answer"][1], None),
                (f"HTTP, GET /health (client, {http_server})", remote["health"][0], None),
                ("in process, Dagster freshness lookup", local["freshness"][0], None),
            ]
        )  # fmt: skip
        print("\nin process, mode=evidence: retrieval stages (ms per query)")
        stages = local["evidence"][1]
        print(f"{'stage':<12} {'n':>4} {'p50':>8} {'p95':>8} {'mean':>8}")
        for name, values in stages.items():
            print(
                f"{name:<12} {len(values):>4} {ms(values, 0.5)} {ms(values, 0.95)} "
                f"{1000 * statistics.fmean(values):8.1f}"
            )
    finally:
        if thread is not None:
            thread.stop()
        if process is not None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
