"""Answering a question about a room, with the messages that say it.

Both routes start from the same ranked evidence (:mod:`knowledge.retrieval`):

- local (specific people, things, events): evidence → context (whole messages with their
  neighbouring turns, entities, relationships) → an LLM answer citing the evidence it used, or
  offline an extractive answer from the best evidence;
- global (themes, summaries): community reports ranked against the question (map-reduce on the
  LLM path, extractive headlines offline), and the evidence retrieved with the report signal, so
  citations are the messages that support both the reports used and the question.

``mode="evidence"`` returns the ranked evidence only and makes no LLM call.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import datetime

from knowledge.errors import InvalidInputError
from knowledge.graph import CommunityReport
from knowledge.llm import prompts
from knowledge.llm.provider import LLMError, LLMProvider
from knowledge.llm.schemas import AnswerOutput, KeyPoints, RouteDecision
from knowledge.platform import Platform
from knowledge.reports import fit_to_budget, report_text
from knowledge.retrieval import Evidence, Retrieval, RetrievalOptions, StageReport, retrieve
from knowledge.retrieval.context import build_context, extractive_answer
from knowledge.retrieval.pipeline import MAX_TOP_K
from knowledge.rooms import get_room
from knowledge.stores.base import COMMUNITIES
from knowledge.text import excerpt

MAX_QUESTION_CHARS = 2_000
_MAX_KEY_POINTS = 12
log = logging.getLogger(__name__)

_CITATION_CHARS = 200
_GLOBAL_CUES = re.compile(
    r"\b(main|overall|themes?|topics?|summar\w*|overview|in general|whole|everything|"
    r"key points|big picture|all the|"
    # "what was discussed?" is about the room; "what was said about Aufidius?" is not.
    r"what (?:is|was|were|got) (?:discussed|said|talked about)(?! (?:about|of|by|to|on) ))\b",
    re.IGNORECASE,
)


class Route(enum.StrEnum):
    global_ = "global"
    local = "local"


class Mode(enum.StrEnum):
    answer = "answer"
    evidence = "evidence"


@dataclass
class Citation:
    kind: str  # "message" or "artifact"
    id: str
    speaker: str | None
    excerpt: str
    time: datetime | None = None


@dataclass
class Answer:
    question: str
    route: Route
    answer: str
    citations: list[Citation]
    evidence: list[Evidence] = field(default_factory=list)
    stages: list[StageReport] = field(default_factory=list)
    entities: list[str] = field(default_factory=list)
    communities: list[str] = field(default_factory=list)
    reports_as_of: datetime | None = None
    seconds: float = 0.0

    @property
    def message_ids(self) -> list[int]:
        return [int(c.id) for c in self.citations if c.kind == "message"]


def check_question(question: str) -> str:
    question = (question or "").strip()
    if not question:
        raise InvalidInputError("the question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidInputError(
            f"the question has {len(question)} characters; the limit is {MAX_QUESTION_CHARS}"
        )
    if "\x00" in question:
        raise InvalidInputError("the question contains a NUL character")
    return question


def check_top_k(top_k: int) -> int:
    if not 1 <= top_k <= MAX_TOP_K:
        raise InvalidInputError(f"top_k must be between 1 and {MAX_TOP_K}")
    return top_k


def choose_route(question: str) -> Route:
    """Global for questions about the room as a whole; everything else is local (evidence
    retrieval finds messages whether or not the question names an entity)."""
    return Route.global_ if _GLOBAL_CUES.search(question) else Route.local


async def _llm_route(platform: Platform, question: str) -> Route | None:
    """The LLM's reading of the question's intent; None (heuristic router) if it fails."""
    assert platform.llm is not None
    try:
        decision = await platform.llm.structured(
            prompts.route(question), RouteDecision, kind="route"
        )
    except LLMError:
        return None
    return Route(decision.route)


async def pick_route(platform: Platform, question: str, use_llm: bool = True) -> Route:
    route = await _llm_route(platform, question) if (platform.llm and use_llm) else None
    return route or choose_route(question)


async def find_evidence(
    platform: Platform,
    room_id: str,
    question: str,
    top_k: int = 10,
    options: RetrievalOptions | None = None,
    route: Route | None = None,
) -> Retrieval:
    """Ranked evidence for a question, routed like an answer (no LLM call is made: the
    heuristic router decides unless ``route`` is given)."""
    question = check_question(question)
    check_top_k(top_k)
    route = route or choose_route(question)
    options = options or RetrievalOptions()
    if route == Route.global_ and not options.reports:
        options = replace(options, reports=True)
    return await retrieve(platform, room_id, question, top_k, options)


def _citation(item: Evidence) -> Citation:
    return Citation(
        kind=item.kind,
        id=item.id,
        speaker=item.speaker,
        excerpt=excerpt(item.text, _CITATION_CHARS),
        time=item.time,
    )


async def answer_question(
    platform: Platform,
    room_id: str,
    question: str,
    route: Route | None = None,
    top_k: int = 10,
    mode: Mode = Mode.answer,
) -> Answer:
    started = time.perf_counter()
    question = check_question(question)
    check_top_k(top_k)
    async with platform.session() as session:
        await get_room(session, room_id)
    if route is None:
        route = await pick_route(platform, question, use_llm=mode == Mode.answer)
    retrieval = await find_evidence(platform, room_id, question, top_k, route=route)
    if mode == Mode.evidence:
        answer = Answer(
            question=question,
            route=route,
            answer="",
            citations=[_citation(e) for e in retrieval.evidence],
        )
    elif route == Route.local:
        answer = await _local_answer(platform, retrieval)
    else:
        answer = await _global_answer(platform, room_id, retrieval)
    return _finish(answer, retrieval, started)


def _finish(answer: Answer, retrieval: Retrieval, started: float) -> Answer:
    answer.evidence = retrieval.evidence
    answer.stages = retrieval.stages
    if not answer.entities and retrieval.subgraph is not None:
        by_name = {e.name: e for e in retrieval.subgraph.entities}
        answer.entities = [by_name[n].display_name for n in retrieval.focus if n in by_name]
    answer.seconds = time.perf_counter() - started
    return answer


@dataclass
class AnswerDelta:
    """A piece of a streamed answer's text."""

    text: str


async def stream_answer(
    platform: Platform,
    room_id: str,
    question: str,
    route: Route | None = None,
    top_k: int = 10,
) -> AsyncIterator[AnswerDelta | Answer]:
    """``answer_question``, streamed: pieces of the answer's text, then the whole ``Answer``.

    A local answer with an LLM streams the model's tokens (plain text citing [n]; the numbers
    become the citations). Offline and global answers are composed first (extractive, or
    map-reduce over reports) and sent in pieces, so every client reads one protocol.
    """
    started = time.perf_counter()
    question = check_question(question)
    check_top_k(top_k)
    async with platform.session() as session:
        await get_room(session, room_id)
    route = route or await pick_route(platform, question)
    retrieval = await find_evidence(platform, room_id, question, top_k, route=route)
    answer: Answer | None = None
    if route == Route.local and platform.llm is not None and retrieval.evidence:
        context = build_context(retrieval, platform.settings.llm_context_tokens)
        parts: list[str] = []
        try:
            async for piece in platform.llm.stream_text(
                prompts.streamed_answer(question, context.text)
            ):
                parts.append(piece)
                yield AnswerDelta(piece)
        except LLMError:
            if not parts:  # nothing sent yet: the composed answer below replaces it
                log.warning("streamed answer failed before its first piece; composing one")
        if parts:
            text = "".join(parts)
            numbers = [int(n) for n in re.findall(r"\[(\d+)\]", text)]
            used = [context.numbered[n] for n in dict.fromkeys(numbers) if n in context.numbered]
            used = used or list(context.numbered.values())[:3]
            answer = Answer(question, Route.local, text, [_citation(e) for e in used])
    if answer is None:
        if route == Route.local:
            answer = await _local_answer(platform, retrieval)
        else:
            answer = await _global_answer(platform, room_id, retrieval)
        for piece in re.findall(r"\S+\s*", answer.answer):
            yield AnswerDelta(piece)
    yield _finish(answer, retrieval, started)


# --- local ---------------------------------------------------------------------------------------


async def _local_answer(platform: Platform, retrieval: Retrieval) -> Answer:
    question = retrieval.question
    if not retrieval.evidence:
        return Answer(question, Route.local, "Nothing in this room answers that yet.", [])
    if platform.llm is not None:
        composed = await _llm_answer(
            platform.llm, retrieval, platform.settings.llm_context_tokens, "local"
        )
        if composed is not None:
            text, used = composed
            return Answer(question, Route.local, text, [_citation(e) for e in used])
    text, used = extractive_answer(retrieval)
    # Citations: the evidence the answer quotes first, then the rest of the top evidence.
    cited = list({e.unit_id: e for e in [*used, *retrieval.evidence[:5]]}.values())
    return Answer(question, Route.local, text, [_citation(e) for e in cited])


async def _llm_answer(
    llm: LLMProvider, retrieval: Retrieval, budget: int, kind: str
) -> tuple[str, list[Evidence]] | None:
    """An answer from the context; its citations are the numbered evidence it says it used
    (numbers outside the context are ignored)."""
    context = build_context(retrieval, budget)
    try:
        output = await llm.structured(
            prompts.answer(retrieval.question, context.text), AnswerOutput, kind=kind
        )
    except LLMError:
        return None
    used = [context.numbered[n] for n in dict.fromkeys(output.sources) if n in context.numbered]
    return output.answer, used or list(context.numbered.values())[:3]


# --- global --------------------------------------------------------------------------------------


async def _ranked_reports(
    platform: Platform, room_id: str, retrieval: Retrieval
) -> list[CommunityReport]:
    """The room's reports, those matching the question first (the order the retrieval's
    report generator found; store-agnostic: positions, not scores), then by their own rank."""
    matching = retrieval.report_ids
    if not matching:  # the report signal was switched off: rank the reports here
        query_vector = (await platform.embedder.embed([retrieval.question]))[0]
        hits = await platform.vectors.search(
            COMMUNITIES, room_id, retrieval.question, query_vector, limit=10
        )
        matching = [h.id for h in hits]
    reports = {r.community_id: r for r in await platform.graph.get_reports(room_id)}
    relevant = [reports[cid] for cid in matching if cid in reports]
    seen = {r.community_id for r in relevant}
    return relevant + sorted(
        (r for r in reports.values() if r.community_id not in seen),
        key=lambda r: (-r.rank, r.community_id),
    )


def _headline(summary: str) -> str:
    """A report summary without its example excerpt."""
    return summary.split(' For example: "')[0]


async def _global_answer(platform: Platform, room_id: str, retrieval: Retrieval) -> Answer:
    question = retrieval.question
    ranked = await _ranked_reports(platform, room_id, retrieval)
    citations = [_citation(e) for e in retrieval.evidence[:5]]
    if not ranked:
        if retrieval.evidence:
            text, used = extractive_answer(retrieval)
            return Answer(question, Route.global_, text, [_citation(e) for e in used])
        return Answer(question, Route.global_, "This room has no community reports yet.", [])
    as_of = max((r.generated_at for r in ranked if r.generated_at), default=None)
    if platform.llm is not None:
        composed = await _llm_global_answer(platform, retrieval, ranked[:8])
        if composed is not None:
            text, used_reports, cited = composed
            return Answer(
                question,
                Route.global_,
                text,
                [_citation(e) for e in cited],
                communities=[r.title for r in used_reports],
                reports_as_of=as_of,
            )
    best = ranked[:3]
    parts = [
        f"{i}. {r.title} (rank {r.rank:g}): {_headline(r.summary)}"
        for i, r in enumerate(best, start=1)
    ]
    return Answer(
        question=question,
        route=Route.global_,
        answer="The room's main threads: " + " ".join(parts),
        citations=citations,
        communities=[r.title for r in best],
        reports_as_of=as_of,
    )


async def _llm_global_answer(
    platform: Platform, retrieval: Retrieval, reports: list[CommunityReport]
) -> tuple[str, list[CommunityReport], list[Evidence]] | None:
    """Map: rated key points from each report; reduce: one answer from the best points and the
    best evidence, citing the evidence it used."""
    llm = platform.llm
    assert llm is not None
    question = retrieval.question
    try:
        mapped = await asyncio.gather(
            *(
                llm.structured(
                    prompts.map_key_points(question, report_text(r)), KeyPoints, kind="map"
                )
                for r in reports
            )
        )
    except LLMError:
        return None
    points = sorted(
        (
            (point.score, i, point.description)
            for i, result in enumerate(mapped)
            for point in result.points
            if point.score > 0
        ),
        key=lambda p: (-p[0], p[1]),
    )[:_MAX_KEY_POINTS]
    used_reports = list({reports[i].community_id: reports[i] for _, i, _ in points}.values())
    budget = platform.settings.llm_context_tokens
    context = build_context(retrieval, budget // 2)
    key_points = fit_to_budget(
        [f"- {text} (from: {reports[i].title})" for _, i, text in points], budget // 2
    )
    try:
        output = await llm.structured(
            prompts.answer(
                question, context.text + "\n\nKey points of the room's themes:\n" + key_points
            ),
            AnswerOutput,
            kind="reduce",
        )
    except LLMError:
        return None
    cited = [context.numbered[n] for n in dict.fromkeys(output.sources) if n in context.numbered]
    return output.answer, used_reports, cited or list(context.numbered.values())[:3]
