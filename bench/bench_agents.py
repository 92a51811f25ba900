"""Agent replies: a chat @mention → the worker's streamed reply on the room WebSocket.

    .venv/bin/python bench/bench_agents.py [--mentions 20] [--latency-ms 200] [--concurrent 50]
        [--rooms 10] [--server subprocess|thread]

Starts an embedded platform in its own temporary data dir (PostgreSQL, Redis), migrates it,
creates rooms of the bundled sample dialogue (Coriolanus, first 90 speeches) and indexes each
with ``index_room`` (what a refresh run materializes), so an agent's ``graph_query`` has a graph
to answer from. Then it serves the API (``coagent serve``) and runs the agent worker
(``coagent worker``, arq, ``max_jobs`` 8), as subprocesses by default or as threads of this
process (``--server thread``: ``tests.serving.conftest.LiveServer`` and
``tests.serving.agent_worker.WorkerThread``). The platform itself stays offline (no LLM, no
embedding or rerank server): the only model calls are the agents' own, to their per-agent
``base_url``: the local OpenAI-compatible server of the tests (``tests.llm_server.FakeOpenAI``,
tool call turn + streamed answer turn), one at 0 ms and one at ``--latency-ms`` per call.

A room member posts ``@agent <question>`` (questions of the coriolanus golden set, cycled) with
``POST /api/v1/rooms/{id}/messages``; a listener on the room's WebSocket notes when the reply's
frames arrive: ``agent.typing`` (the worker picked the job up), the first ``message.delta``
(first streamed token) and the reply's ``message.created``. Rows, after 2 warm-up mentions:

- LLM agent at 0 ms and at ``--latency-ms``, ``--mentions`` sequential mentions each;
- the offline Analytics Agent (``@analytics``: its tools, no model) for comparison;
- ``--concurrent`` mentions posted at once across ``--rooms`` rooms (one agent at
  ``--latency-ms`` and one WebSocket listener per room); afterwards the database is read:
  every mention must have exactly one message with ``reply_to`` = its id.

Nothing is asserted; the exit status is 1 when a reply was lost or duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "bench" / "quality" / "data" / "coriolanus" / "questions.jsonl"
sys.path.insert(0, str(ROOT))
from bench.common import SERVICE_VARS, bench_data_dir, free_port, percentile  # noqa: E402

warnings.filterwarnings("ignore")

SAMPLE_SPEECHES = 90
WARMUP = 2
REPLY_TIMEOUT = 60.0  # per sequential mention; a hang guard, not a measure
BATCH_TIMEOUT = 120.0  # for the whole concurrent batch


def import_test_helpers() -> None:
    """Import tests.conftest (it points COAGENT_DATA_DIR at a temp dir of its own on import)
    and put this bench's data dir back."""
    mine = os.environ["COAGENT_DATA_DIR"]
    import tests.conftest as base

    os.environ["COAGENT_DATA_DIR"] = mine
    if str(base._DATA_DIR) != mine:
        shutil.rmtree(base._DATA_DIR, ignore_errors=True)


# --- the room listener -----------------------------------------------------------------------


@dataclass
class Reply:
    """When each frame of one mention's reply arrived (perf_counter seconds)."""

    typing: float | None = None
    first_delta: float | None = None
    created: float | None = None
    created_frames: int = 0
    pending_ids: set[str] = field(default_factory=set)
    reply_pending_id: str | None = None


class RoomListener:
    """Reads one room's WebSocket and files the agent frames under the mention they answer."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.replies: dict[int, Reply] = defaultdict(Reply)
        self._done: dict[int, asyncio.Event] = defaultdict(asyncio.Event)
        self.task = asyncio.create_task(self._read())

    def done(self, mention_id: int) -> asyncio.Event:
        return self._done[mention_id]

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for raw in self.ws:
                now = time.perf_counter()
                data = json.loads(raw)
                kind = data.get("type")
                if kind in ("agent.typing", "message.delta"):
                    reply = self.replies[int(data["reply_to"])]
                    reply.pending_ids.add(str(data["pending_id"]))
                    if kind == "agent.typing" and reply.typing is None:
                        reply.typing = now
                    if kind == "message.delta" and reply.first_delta is None:
                        reply.first_delta = now
                elif kind == "message.created":
                    message = data["message"]
                    if message.get("author_kind") != "agent" or message.get("reply_to") is None:
                        continue
                    mention_id = int(message["reply_to"])
                    reply = self.replies[mention_id]
                    reply.created_frames += 1
                    if reply.created is None:
                        reply.created = now
                        reply.reply_pending_id = (message.get("agent") or {}).get("pending_id")
                    self._done[mention_id].set()
        except ConnectionClosed:
            pass

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self.task, return_exceptions=True)


# --- one timed mention -------------------------------------------------------------------------


@dataclass
class Sample:
    mention_id: int
    started: float
    post_seconds: float
    reply: Reply

    def since_post(self, moment: float | None) -> float | None:
        return None if moment is None else moment - self.started


@dataclass
class Room:
    room_id: str
    client: Any  # httpx.AsyncClient of a member
    listener: RoomListener
    handle: str  # what follows the @


async def mention(room: Room, question: str, timeout: float | None) -> Sample:
    started = time.perf_counter()
    response = await room.client.post(
        f"/api/v1/rooms/{room.room_id}/messages", json={"content": f"@{room.handle} {question}"}
    )
    post_seconds = time.perf_counter() - started
    response.raise_for_status()
    mention_id = int(response.json()["id"])
    if timeout is not None:
        with suppress(TimeoutError):
            await asyncio.wait_for(room.listener.done(mention_id).wait(), timeout)
    return Sample(mention_id, started, post_seconds, room.listener.replies[mention_id])


async def sequential(room: Room, questions: list[str], count: int) -> list[Sample]:
    for i in range(WARMUP):
        await mention(room, questions[i % len(questions)], REPLY_TIMEOUT)
    return [
        await mention(room, questions[(WARMUP + i) % len(questions)], REPLY_TIMEOUT)
        for i in range(count)
    ]


async def concurrent(
    rooms_: list[Room], questions: list[str], count: int
) -> tuple[list[Sample], float]:
    """``count`` mentions posted at once, spread over the rooms; the wall time until the last
    reply arrived (or the batch timed out)."""
    started = time.perf_counter()
    samples = await asyncio.gather(
        *(
            mention(rooms_[i % len(rooms_)], questions[i % len(questions)], None)
            for i in range(count)
        )
    )
    deadline = started + BATCH_TIMEOUT
    for sample, room in zip(samples, [rooms_[i % len(rooms_)] for i in range(count)], strict=True):
        left = deadline - time.perf_counter()
        if left > 0:
            with suppress(TimeoutError):
                await asyncio.wait_for(room.listener.done(sample.mention_id).wait(), left)
    arrived = [s.reply.created for s in samples if s.reply.created is not None]
    wall = (max(arrived) if arrived else time.perf_counter()) - started
    return list(samples), wall


async def stored_replies(platform: Any, mention_ids: list[int]) -> Counter[int]:
    """Messages with ``reply_to`` = each mention id, from the database."""
    from sqlalchemy import func, select

    from dbschema.models import Message

    async with platform.session() as session:
        rows = await session.execute(
            select(Message.reply_to, func.count())
            .where(Message.reply_to.in_(mention_ids))
            .group_by(Message.reply_to)
        )
        return Counter({int(reply_to): int(n) for reply_to, n in rows.all()})


@dataclass
class Check:
    mentions: int
    replies: int
    lost: int
    duplicated: int
    ws_lost: int
    ws_duplicated: int
    pending_mismatch: int

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0


async def check(platform: Any, samples: list[Sample]) -> Check:
    stored = await stored_replies(platform, [s.mention_id for s in samples])
    counts = [stored.get(s.mention_id, 0) for s in samples]
    frames = [s.reply.created_frames for s in samples]
    mismatch = sum(
        1
        for s in samples
        if s.reply.created is not None
        and (s.reply.reply_pending_id is None or s.reply.pending_ids != {s.reply.reply_pending_id})
    )
    return Check(
        mentions=len(samples),
        replies=sum(counts),
        lost=sum(1 for c in counts if c == 0),
        duplicated=sum(c - 1 for c in counts if c > 1),
        ws_lost=sum(1 for f in frames if f == 0),
        ws_duplicated=sum(f - 1 for f in frames if f > 1),
        pending_mismatch=mismatch,
    )


# --- the platform --------------------------------------------------------------------------


@dataclass
class Person:
    cookies: dict[str, str]

    @property
    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())

    def http(self, url: str) -> Any:
        import httpx

        from serving.auth.security import CSRF_COOKIE, CSRF_HEADER

        limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
        client = httpx.AsyncClient(base_url=url, timeout=60, limits=limits)
        for name, value in self.cookies.items():
            client.cookies.set(name, value)
        client.headers[CSRF_HEADER] = self.cookies[CSRF_COOKIE]
        return client


async def prepare(settings: Any, count: int) -> tuple[list[str], Person, Person, float]:
    """``count`` indexed rooms of sample dialogue, an admin and a member in every room."""
    from dbschema.migrate import upgrade
    from dbschema.models import UserRole
    from knowledge import rooms
    from knowledge.indexing import index_room
    from knowledge.platform import open_platform, sync_engine
    from knowledge.sample import load_sample
    from tests.conftest import make_room
    from tests.serving.conftest import committed_person

    engine = sync_engine(settings)
    upgrade(engine)
    engine.dispose()
    lines = [(s.speaker, s.text) for s in load_sample()[:SAMPLE_SPEECHES]]
    started = time.perf_counter()
    async with open_platform(settings) as platform:
        admin = await committed_person(platform, settings, UserRole.admin)
        member = await committed_person(platform, settings, UserRole.student)
        room_ids = []
        for i in range(count):
            room_id = await make_room(platform, lines, f"bench agents {i}")
            async with platform.session() as session:
                for person in (admin, member):
                    await rooms.add_member(session, uuid.UUID(room_id), person.user.id)
                await session.commit()
            await index_room(platform, room_id)
            room_ids.append(room_id)
    return (
        room_ids,
        Person(admin.cookies),
        Person(member.cookies),
        time.perf_counter() - started,
    )


async def create_agent(admin: Any, room_id: str, name: str, base_url: str) -> None:
    body = {
        "name": name,
        "system_prompt": "You are a careful tutor.",
        "model": "bench-model",
        "tools": ["graph_query", "search_messages"],
        "base_url": base_url,
        "api_key": "sk-bench-agent-0123456789",
    }
    response = await admin.post(f"/api/v1/rooms/{room_id}/agents", json=body)
    if response.status_code != 201:
        raise SystemExit(f"could not create the agent: {response.status_code} {response.text}")


async def open_room(ws_url: str, member: Person, client: Any, room_id: str, handle: str) -> Room:
    from websockets.asyncio.client import connect

    ws = await connect(
        f"{ws_url}/api/v1/rooms/{room_id}/ws",
        additional_headers={"Cookie": member.cookie_header},
        open_timeout=30,
        max_queue=None,
    )
    first = json.loads(await asyncio.wait_for(ws.recv(), 30))
    if first.get("type") != "ready":
        raise SystemExit(f"the room socket did not open: {first}")
    return Room(room_id, client, RoomListener(ws), handle)


@contextmanager
def serving(settings: Any, mode: str, logs: Path) -> Iterator[tuple[str, str]]:
    """The API and the agent worker; yields the API's HTTP and WebSocket base URLs."""
    import httpx

    if mode == "thread":
        from tests.serving.agent_worker import WorkerThread
        from tests.serving.conftest import LiveServer

        live = LiveServer(settings)
        live.start()
        worker = WorkerThread(settings).start()
        try:
            yield live.url, live.ws_url
        finally:
            worker.stop()
            live.stop()
        return

    coagent = Path(sys.executable).parent / "coagent"
    port = free_port()
    log_files = [open(logs / name, "wb") for name in ("api.log", "worker.log")]  # noqa: SIM115
    api = subprocess.Popen(
        [str(coagent), "serve", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log_files[0],
    )
    worker_process = subprocess.Popen(
        [str(coagent), "worker", "--log-level", "warning"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log_files[1],
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            for process, name in ((api, "api.log"), (worker_process, "worker.log")):
                if process.poll() is not None:
                    raise SystemExit(
                        f"{name[:-4]} exited ({process.returncode}):\n"
                        + (logs / name).read_text()[-3000:]
                    )
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the API did not start")
            time.sleep(0.2)
        yield url, f"ws://127.0.0.1:{port}"
    finally:
        # SIGINT, not SIGTERM: both exit through their atexit handlers, which release their
        # handle on the embedded PostgreSQL (else this process, the last user, leaves it running).
        for process in (worker_process, api):
            process.send_signal(signal.SIGINT)
        for process in (worker_process, api):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        for file in log_files:
            file.close()


# --- printing --------------------------------------------------------------------------------


def ms(values: list[float], q: float) -> str:
    return f"{1000 * percentile(values, q):7.0f}" if values else f"{'-':>7}"


def row(name: str, samples: list[Sample], calls: str) -> str:
    posts = [s.post_seconds for s in samples]
    typing = [t for s in samples if (t := s.since_post(s.reply.typing)) is not None]
    first = [t for s in samples if (t := s.since_post(s.reply.first_delta)) is not None]
    whole = [t for s in samples if (t := s.since_post(s.reply.created)) is not None]
    return (
        f"{name:<44} {len(samples):>3} {ms(posts, 0.5)} {ms(typing, 0.5)} "
        f"{ms(first, 0.5)} {ms(first, 0.95)} {ms(whole, 0.5)} {ms(whole, 0.95)} {calls:>9}"
    )


HEADER = (
    f"{'mention → reply (ms since the POST)':<44} {'n':>3} {'POST':>7} {'typing':>7} "
    f"{'1st p50':>7} {'1st p95':>7} {'all p50':>7} {'all p95':>7} {'LLM calls':>9}"
)


def calls_per_reply(fake: Any, replies: int) -> str:
    return f"{fake.calls['chat'] / replies:.1f}" if replies else "-"


# --- main --------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, data_dir: Path) -> int:
    from knowledge.platform import open_platform
    from knowledge.settings import get_settings
    from tests.llm_server import FakeOpenAI

    settings = get_settings()
    assert settings.coagent_data_dir == data_dir, settings.coagent_data_dir
    assert not settings.uses_llm, "the platform must stay offline"
    questions = [
        json.loads(line)["question"] for line in QUESTIONS.read_text().splitlines() if line.strip()
    ]
    room_count = 3 + args.rooms
    room_ids, admin, member, seconds = await prepare(settings, room_count)
    print(
        f"{room_count} rooms of {SAMPLE_SPEECHES} sample speeches, indexed in {seconds:.1f} s",
        flush=True,
    )
    latency = args.latency_ms / 1000
    fast, slow = FakeOpenAI(latency=0.0).start(), FakeOpenAI(latency=latency).start()
    failed = False
    try:
        with serving(settings, args.server, data_dir) as (url, ws_url):
            admin_http, member_http = admin.http(url), member.http(url)
            opened: list[Room] = []
            try:
                names = ["tutor0", f"tutor{args.latency_ms}"] + [
                    f"helper{i}" for i in range(args.rooms)
                ]
                bases = [fast.base_url, slow.base_url] + [slow.base_url] * args.rooms
                llm_rooms = [room_ids[0], room_ids[1], *room_ids[3:]]
                for room_id, name, base in zip(llm_rooms, names, bases, strict=True):
                    await create_agent(admin_http, room_id, name, base)
                for room_id, handle in zip(
                    room_ids, [*names[:2], "analytics", *names[2:]], strict=True
                ):
                    opened.append(await open_room(ws_url, member, member_http, room_id, handle))

                rows: list[tuple[str, list[Sample], str]] = []
                checks: list[tuple[str, Check]] = []
                for room, fake, label in (
                    (opened[0], fast, "LLM agent, fake at 0 ms, sequential"),
                    (opened[1], slow, f"LLM agent, fake at {args.latency_ms} ms, sequential"),
                    (opened[2], None, "Analytics Agent (offline), sequential"),
                ):
                    if fake is not None:
                        fake.reset()
                    samples = await sequential(room, questions, args.mentions)
                    calls = "0" if fake is None else calls_per_reply(fake, args.mentions + WARMUP)
                    rows.append((label, samples, calls))
                    print(f"  done: {label}", flush=True)

                slow.reset()
                load_before = os.getloadavg()[0]
                batch, wall = await concurrent(opened[3:], questions, args.concurrent)
                in_flight = slow.max_in_flight
                batch_label = (
                    f"{args.concurrent} at once / {args.rooms} rooms, {args.latency_ms} ms"
                )
                rows.append((batch_label, batch, calls_per_reply(slow, args.concurrent)))

                await asyncio.sleep(1.0)  # a late duplicate would be stored by now
                async with open_platform(settings) as platform:
                    for label, samples, _ in rows:
                        checks.append((label, await check(platform, samples)))
                stray = sum(f.total_calls - len(f.agent_requests) for f in (fast, slow))
            finally:
                for room in opened:
                    await room.listener.close()
                await admin_http.aclose()
                await member_http.aclose()
    finally:
        fast.stop()
        slow.stop()

    server = (
        "API: coagent serve, worker: coagent worker (subprocesses)"
        if args.server == "subprocess"
        else "API: uvicorn thread, worker: arq thread (this process)"
    )
    print(
        f"\n{server}; arq max_jobs 8; platform offline (only the agents' own calls reach the "
        f"fake); Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}\n"
        f"{WARMUP} warm-up mentions before each sequential row; POST = the message POST's own "
        "time, typing = agent.typing frame, 1st = first message.delta, all = the reply's "
        "message.created\n"
    )
    print(HEADER)
    print("-" * len(HEADER))
    for name, samples, calls in rows:
        print(row(name, samples, calls))

    print(
        f"\n{args.concurrent} concurrent mentions across {args.rooms} rooms "
        f"({args.concurrent // args.rooms} per room, one listener each; load average before "
        f"{load_before:.1f}): wall {wall:.2f} s from the first POST to the last reply, "
        f"{args.concurrent / wall:.1f} replies/s; at most {in_flight} agent LLM calls in flight"
    )
    print(
        f"\n{'replies checked in the database':<44} {'mentions':>8} {'replies':>8} {'lost':>5} "
        f"{'dup':>5}   {'ws lost':>7} {'ws dup':>6} {'pending≠':>8}"
    )
    for label, result in checks:
        print(
            f"{label:<44} {result.mentions:>8} {result.replies:>8} {result.lost:>5} "
            f"{result.duplicated:>5}   {result.ws_lost:>7} {result.ws_duplicated:>6} "
            f"{result.pending_mismatch:>8}"
        )
        failed = failed or not result.ok
    print(
        "(ws lost/dup: mentions whose reply's message.created never reached / reached the room "
        "socket more than once; pending≠: deltas not all under the reply's pending_id)"
    )
    if stray:
        print(f"\nNOTE: {stray} calls reached the fake that were not agent turns")
    if failed:
        print("\nFAILED: replies were lost or duplicated (see the table above)")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mentions", type=int, default=20, help="sequential mentions per row")
    parser.add_argument("--latency-ms", type=int, default=200, help="the slow fake's latency")
    parser.add_argument("--concurrent", type=int, default=50, help="mentions posted at once")
    parser.add_argument("--rooms", type=int, default=10, help="rooms of the concurrent batch")
    parser.add_argument("--server", choices=["subprocess", "thread"], default="subprocess")
    args = parser.parse_args()

    data_dir = bench_data_dir("cga-")
    os.environ["COAGENT_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    for var in SERVICE_VARS:
        os.environ.pop(var, None)
    from cryptography.fernet import Fernet

    # Read by this process and by the API and worker subprocesses alike.
    os.environ["SECRET_KEY"] = f"bench-agents-{uuid.uuid4().hex}"
    os.environ["FERNET_SECRET_KEY"] = Fernet.generate_key().decode()
    import_test_helpers()
    from knowledge.embedded import embedded_postgres_url, embedded_redis_url

    # Started here, so this process is their last user (the subprocesses attach to them).
    embedded_postgres_url(data_dir)
    embedded_redis_url(data_dir)
    sys.exit(asyncio.run(run(args, data_dir)))


if __name__ == "__main__":
    main()
