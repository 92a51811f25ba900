"""The retrieval pipeline: plan → candidates → fusion → rerank → ranked evidence.

``retrieve`` is what the answer routes, the agents and the API's ``mode=evidence`` call. Each
stage reports what it found and how long it took (``Retrieval.stages``), so a poor answer can be
traced to the stage that missed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from sqlalchemy import select

from dbschema.models import EntityAlias
from knowledge.errors import InvalidInputError
from knowledge.graph import RoomGraph
from knowledge.indexing import message_unit_id
from knowledge.lexical import analyze
from knowledge.platform import Platform
from knowledge.retrieval import candidates as gen
from knowledge.retrieval.candidates import CandidateList, SearchContext
from knowledge.retrieval.fusion import fuse
from knowledge.retrieval.query import QueryPlan, name_lookup, plan_query
from knowledge.retrieval.rerank import (
    HttpReranker,
    LLMReranker,
    OfflineReranker,
    Reranker,
    RerankError,
    RerankItem,
)
from knowledge.retrieval.timeparse import event_window
from knowledge.retrieval.units import Unit, load_units, message_id_of, room_profile
from knowledge.stores.base import EVIDENCE
from knowledge.text import excerpt

log = logging.getLogger(__name__)

SIGNALS = ("lexical", "clauses", "dense", "context", "graph", "speaker", "time", "reports")
#: Fusion weights. Lexical and dense are the primary text signals; the others add units the
#: text signals rank low (replies, aliases, a speaker's or a week's messages).
DEFAULT_WEIGHTS = {
    "lexical": 1.0,
    "clauses": 0.8,
    "dense": 1.0,
    "context": 0.3,
    "graph": 0.6,
    "speaker": 0.8,
    "time": 1.0,
    "reports": 0.4,
}
MAX_TOP_K = 50
_EXCERPT_CHARS = 300


@dataclass(frozen=True)
class RetrievalOptions:
    #: Generators to run; ``dense`` runs only with a real embedding model (the evidence points
    #: of the offline hashing embedder have no dense vector).
    signals: frozenset[str] = frozenset(SIGNALS)
    #: "auto" (HTTP reranker if RERANK_URL, else offline), "offline", "http", "llm", "none".
    rerank: str = "auto"
    #: Include the community-report generator (the global route sets it).
    reports: bool = False
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))


@dataclass
class Evidence:
    kind: str  # "message" or "artifact"
    id: str  # message id, or artifact id
    unit_id: str
    score: float
    #: signal -> 1-based rank in that generator's list (the signals that found it).
    signals: dict[str, int]
    speaker: str | None
    time: datetime | None
    text: str

    @property
    def excerpt(self) -> str:
        return excerpt(self.text, _EXCERPT_CHARS)


@dataclass
class StageReport:
    stage: str
    found: int
    seconds: float
    note: str = ""


@dataclass
class Retrieval:
    question: str
    plan: QueryPlan
    evidence: list[Evidence]
    stages: list[StageReport]
    #: Units by id (the evidence and their neighbouring turns), for building context.
    units: dict[str, Unit]
    subgraph: RoomGraph | None = None
    focus: list[str] = field(default_factory=list)
    #: Community reports matching the question, best first (global route only).
    report_ids: list[str] = field(default_factory=list)
    reranker: str = "none"
    seconds: float = 0.0


async def load_aliases(platform: Platform, room_id: str) -> dict[str, str]:
    """alias -> canonical entity name, for the room (written by entity resolution)."""
    async with platform.session() as session:
        rows = await session.execute(
            select(EntityAlias.alias, EntityAlias.canonical).where(EntityAlias.room_id == room_id)
        )
        return {alias: canonical for alias, canonical in rows}


RERANKERS = ("auto", "offline", "http", "llm", "none")


def rerank_choice(platform: Platform, choice: str) -> str:
    """The reranker ``choice`` stands for on this platform ("auto": "http" when RERANK_URL is
    set, else "offline"); an unknown or unconfigured choice is an ``InvalidInputError``."""
    settings = platform.settings
    if choice not in RERANKERS:
        raise InvalidInputError(f"unknown reranker {choice!r}: one of {', '.join(RERANKERS)}")
    if choice == "auto":
        choice = "http" if settings.rerank_url else "offline"
    if choice == "http" and not settings.rerank_url:
        raise InvalidInputError("rerank=http needs RERANK_URL")
    if choice == "llm" and platform.llm is None:
        raise InvalidInputError("rerank=llm needs an LLM (OPENAI_API_KEY)")
    return choice


def make_reranker(platform: Platform, choice: str, idf: dict[str, float]) -> Reranker | None:
    settings = platform.settings
    choice = rerank_choice(platform, choice)
    if choice == "none":
        return None
    if choice == "http":
        assert settings.rerank_url is not None
        return HttpReranker(
            settings.rerank_url,
            settings.rerank_model,
            settings.rerank_api_key,
            settings.rerank_timeout_seconds,
        )
    if choice == "llm":
        assert platform.llm is not None
        return LLMReranker(platform.llm)
    return OfflineReranker(idf)


async def _anchor_on_event(ctx: SearchContext, stages: list[StageReport]) -> QueryPlan:
    """Resolve "the day after the outage": the best message about the event gives its time."""
    t0 = time.perf_counter()
    anchor = ctx.plan.time.event
    assert anchor is not None
    terms = analyze(anchor.event)
    hits = await ctx.platform.vectors.search_lexical(EVIDENCE, ctx.room_id, terms, 5)
    best = hits[0].score if hits else 0.0
    # The first strong mention of an event is when it happened (later ones refer back to it).
    dated = sorted(
        (h for h in hits if h.payload.get("ts") is not None and h.score >= 0.7 * best),
        key=lambda h: float(h.payload["ts"]),
    )
    if not dated:
        stages.append(StageReport("event", 0, time.perf_counter() - t0, anchor.event))
        return ctx.plan
    moment = datetime.fromtimestamp(float(dated[0].payload["ts"]), tz=UTC)
    since, until = event_window(anchor, moment)
    ctx.event_terms = terms
    stages.append(
        StageReport(
            "event",
            1,
            time.perf_counter() - t0,
            f"{anchor.event!r} at {moment:%Y-%m-%d %H:%M} ({dated[0].id}) → {anchor.relation}",
        )
    )
    return replace(ctx.plan, time=replace(ctx.plan.time, since=since, until=until))


async def _timed(
    stages: list[StageReport], name: str, work: Awaitable[CandidateList]
) -> CandidateList:
    started = time.perf_counter()
    found = await work
    stages.append(
        StageReport(name, len(found.candidates), time.perf_counter() - started, found.note)
    )
    return found


async def retrieve(
    platform: Platform,
    room_id: str,
    question: str,
    top_k: int = 10,
    options: RetrievalOptions | None = None,
) -> Retrieval:
    """The room's best units of evidence for ``question``, ranked (at most ``top_k``)."""
    started = time.perf_counter()
    options = options or RetrievalOptions()
    # Checked first, so a misconfigured reranker fails every question, not only those that
    # find candidates.
    rerank = rerank_choice(platform, options.rerank)
    top_k = max(1, min(top_k, MAX_TOP_K))
    stages: list[StageReport] = []

    # Plan: what the question names. (Its two reads are independent round trips: together. A
    # missing room raises its NotFoundError from the gather.)
    t0 = time.perf_counter()
    profile, entity_names = await asyncio.gather(
        room_profile(platform, room_id),
        platform.graph.entity_names_matching(room_id, *name_lookup(question)),
    )
    aliases = profile.aliases
    plan = plan_query(question, set(entity_names), aliases, profile.speakers, profile.last_time)
    aliases_of: dict[str, list[str]] = {}
    for alias, canonical in aliases.items():
        aliases_of.setdefault(canonical, []).append(alias)
    stages.append(
        StageReport(
            "plan",
            len(plan.entities) + len(plan.speakers),
            time.perf_counter() - t0,
            f"entities={plan.entities} speakers={plan.speakers} "
            f"window={plan.time.phrase or '-'} direction={plan.time.direction}",
        )
    )

    depth = max(50, top_k * 5)
    ctx = SearchContext(platform, room_id, plan, depth)
    if plan.time.event is not None and not plan.time.has_window:
        plan = await _anchor_on_event(ctx, stages)
        ctx.plan = plan
    enabled = options.signals
    lists: list[CandidateList] = []
    # Lexical hits always run (the context, graph and time generators start from them); they are
    # fused only when the signal is enabled.
    lexical = await _timed(stages, "lexical", gen.lexical(ctx))
    if "lexical" in enabled:
        lists.append(lexical)

    units = await load_units(platform, room_id, [c.unit_id for c in lexical.candidates[:20]])
    neighbours = {uid: (u.previous_id, u.next_id) for uid, u in units.items()}
    jobs: list[tuple[str, Callable[[], Awaitable[CandidateList]]]] = []
    if "clauses" in enabled:
        jobs.append(("clauses", lambda: gen.clauses(ctx)))
    if "context" in enabled:
        jobs.append(("context", lambda: gen.context_turns(ctx, lexical, neighbours)))
    if "dense" in enabled and (platform.embedder.semantic):
        jobs.append(("dense", lambda: gen.dense(ctx)))
    if "graph" in enabled:
        bridges = [units[c.unit_id].text for c in lexical.candidates[:3] if c.unit_id in units]
        jobs.append(("graph", lambda: gen.graph(ctx, aliases_of, bridges)))
    if "speaker" in enabled:
        jobs.append(("speaker", lambda: gen.speaker(ctx)))
    if "time" in enabled:
        jobs.append(("time", lambda: gen.time_window(ctx)))
    # Together: each is a few round trips to the stores, and a round trip costs more waiting
    # than Python (about 1 ms each through the async driver), so their waits overlap. (Stage
    # times then overlap too: each is its generator's wall time.)
    job_stages: list[list[StageReport]] = [[] for _ in jobs]
    lists += await asyncio.gather(
        *(_timed(own, name, job()) for own, (name, job) in zip(job_stages, jobs, strict=True))
    )
    stages += [stage for own in job_stages for stage in own]  # in the jobs' order
    if options.reports and "reports" in enabled:
        lists.append(await _timed(stages, "reports", gen.reports(ctx, aliases_of)))

    # Fusion.
    t0 = time.perf_counter()
    weights = dict(options.weights)
    if plan.speakers and not plan.speech:
        weights["speaker"] = weights.get("speaker", 0.0) * 0.4
    fused = fuse(lists, weights)
    stages.append(StageReport("fusion", len(fused), time.perf_counter() - t0))
    pool = fused[: max(top_k * 6, 60)]

    # Units and their neighbouring turns (those of units loaded before, by their ids).
    t0 = time.perf_counter()

    def neighbour_ids(unit: Unit) -> list[str]:
        return [message_unit_id(m) for m in (unit.previous_id, unit.next_id) if m is not None]

    missing = [f.unit_id for f in pool if f.unit_id not in units]
    missing += [uid for f in pool if f.unit_id in units for uid in neighbour_ids(units[f.unit_id])]
    units.update(
        await load_units(
            platform, room_id, [u for u in dict.fromkeys(missing) if u not in units], True
        )
    )
    items = [
        RerankItem(
            fused=f,
            unit=units[f.unit_id],
            neighbours=tuple(
                units[uid].text for uid in neighbour_ids(units[f.unit_id]) if uid in units
            ),
        )
        for f in pool
        if f.unit_id in units  # deleted since the index was refreshed: never evidence
    ]
    stages.append(StageReport("load", len(items), time.perf_counter() - t0))

    # Rerank.
    t0 = time.perf_counter()
    reranker_name = "none"
    order = list(range(len(items)))
    if rerank != "none" and items:
        # The question terms' IDF (fetched once: the graph generator weighed by it too).
        reranker = make_reranker(platform, rerank, await ctx.term_idf())
        if reranker is not None:
            try:
                scores = await reranker.scores(plan, items)
                order.sort(key=lambda i: (-scores[i], i))
                reranker_name = reranker.name
            except RerankError as error:
                # A reranker that is down must not take answers down: keep the fused order.
                log.warning("rerank failed, keeping the fused order: %s", error)
                reranker_name = f"{reranker.name} (failed: fused order kept)"
    window = plan.time
    if "time" in enabled and window.has_window and window.event is None and not window.attributive:
        # A window the question states ("in May", "on April 14", "last week") is a filter:
        # units of the window first, in rerank order, then the rest. (A window resolved from
        # an event is only as sure as the event's match, and a date that names a thing, "the
        # April 14 outage", says nothing of when the answer was said: they boost, in the
        # reranker.)
        assert window.since is not None and window.until is not None
        lo, hi = window.since, window.until
        inside = [i for i in order if (t := items[i].unit.time) is not None and lo <= t < hi]
        order = inside + [i for i in order if i not in set(inside)]
    stages.append(StageReport("rerank", len(items), time.perf_counter() - t0, reranker_name))

    evidence = []
    for position, index in enumerate(order[:top_k]):
        item = items[index]
        unit = item.unit
        evidence.append(
            Evidence(
                kind=unit.kind,
                id=unit.ref,
                unit_id=unit.unit_id,
                # A rank-derived score in (0, 1]: comparable across rerankers.
                score=round(1.0 / (1.0 + position), 4),
                signals=dict(item.fused.ranks),
                speaker=unit.speaker,
                time=unit.time,
                text=unit.text,
            )
        )
    return Retrieval(
        question=question,
        plan=plan,
        evidence=evidence,
        stages=stages,
        units=units,
        subgraph=ctx.subgraph,
        focus=ctx.focus,
        report_ids=ctx.report_ids,
        reranker=reranker_name,
        seconds=time.perf_counter() - started,
    )


def cited_message_ids(retrieval: Retrieval) -> list[int]:
    return [mid for e in retrieval.evidence if (mid := message_id_of(e.unit_id)) is not None]
