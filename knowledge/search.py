"""Question answering over a room's graph, with citations to messages and artifacts.

- global: rank community reports against the question, answer from the best ones;
- local: match entities (by name and by vector), expand up to 2 hops, gather the chunks that
  support them, and cite the messages that best answer;
- a router picks one.
Offline answers are extractive; the LLM path composes them from the same context.
"""

from __future__ import annotations

import asyncio
import enum
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select

from dbschema.models import RoomChunk
from knowledge.embeddings import lexical_terms
from knowledge.errors import InvalidInputError
from knowledge.extraction.stopwords import STOPWORDS
from knowledge.graph import CommunityReport, RoomGraph, normalize_name
from knowledge.llm import prompts
from knowledge.llm.provider import LLMError, LLMProvider
from knowledge.llm.schemas import AnswerOutput, KeyPoints, RouteDecision
from knowledge.platform import Platform
from knowledge.reports import fit_to_budget, report_text
from knowledge.rooms import CitedMessage, get_room, messages_by_ids
from knowledge.stores.base import COMMUNITIES, ENTITIES
from knowledge.text import excerpt

MAX_QUESTION_CHARS = 2_000
_MAX_KEY_POINTS = 12
_CITATION_CHARS = 200
_LOCAL_CONTEXT_TOKENS = 4_000
_GLOBAL_CUES = re.compile(
    r"\b(main|overall|themes?|topics?|summar\w*|overview|in general|whole|everything|"
    r"key points|what (?:is|was|were) (?:discussed|said|talked)|big picture|all the)\b",
    re.IGNORECASE,
)
_MAX_NAME_WORDS = 4


class Route(enum.StrEnum):
    global_ = "global"
    local = "local"


@dataclass
class Citation:
    kind: str  # "message" or "artifact"
    id: str
    speaker: str | None
    excerpt: str


@dataclass
class Answer:
    question: str
    route: Route
    answer: str
    citations: list[Citation]
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
    return question


def mentioned_entities(question: str, names: set[str]) -> list[str]:
    """Entity names the question mentions, longest first.

    Whole-word matches of a full name first; a capitalized question word that is no full name
    ("Zenobia") then picks the shortest entity names containing it ("zenobia of palmyra").
    """
    raw = re.findall(r"[^\W_][\w'’-]*", question)
    words = [w.lower() for w in raw]
    found: list[str] = []
    for size in range(_MAX_NAME_WORDS, 0, -1):
        for i in range(len(words) - size + 1):
            candidate = normalize_name(" ".join(words[i : i + size]))
            if candidate in names and not any(candidate in f.split() for f in found):
                found.append(candidate)
    covered = {w for name in found for w in name.split()}
    for word in raw[1:]:
        lower = word.lower()
        if not word[:1].isupper() or lower in covered or lower in STOPWORDS:
            continue
        containing = sorted((n for n in names if lower in n.split()), key=lambda n: (len(n), n))
        found += containing[:2]
        covered.add(lower)
    return found


def choose_route(question: str, mentioned: list[str]) -> Route:
    if _GLOBAL_CUES.search(question) and len(mentioned) <= 1:
        return Route.global_
    return Route.local if mentioned else Route.global_


async def answer_question(
    platform: Platform, room_id: str, question: str, route: Route | None = None
) -> Answer:
    started = time.perf_counter()
    question = check_question(question)
    async with platform.session() as session:
        await get_room(session, room_id)
    names = set(await platform.graph.entity_names(room_id))
    mentioned = mentioned_entities(question, names)
    if route is None:
        route = await _llm_route(platform, question) if platform.llm else None
    route = route or choose_route(question, mentioned)
    if route == Route.local:
        answer = await local_search(platform, room_id, question, mentioned)
    else:
        answer = await global_search(platform, room_id, question)
    answer.seconds = time.perf_counter() - started
    return answer


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


def _score_message(message: CitedMessage, terms: set[str], names: list[str]) -> float:
    text = message.content.lower()
    term_hits = sum(1 for t in terms if t in text)
    name_hits = sum(2 for n in names if n in text or n == message.speaker.lower())
    return term_hits + name_hits


async def _cite_messages(
    platform: Platform,
    room_id: str,
    chunk_ids: list[str],
    question: str,
    names: list[str],
    limit: int,
) -> list[Citation]:
    """The messages of the given chunks that best match the question and entities."""
    if not chunk_ids:
        return []
    async with platform.session() as session:
        rows = (
            await session.execute(
                select(
                    RoomChunk.id, RoomChunk.message_ids, RoomChunk.artifact_id, RoomChunk.text
                ).where(RoomChunk.room_id == room_id, RoomChunk.id.in_(chunk_ids))
            )
        ).all()
        by_chunk = {r[0]: r for r in rows}
        message_ids = sorted({mid for r in rows for mid in (r[1] or [])})
        messages = await messages_by_ids(session, room_id, message_ids)
    terms = set(lexical_terms(question))
    scored = sorted(
        ((_score_message(m, terms, names), m) for m in messages), key=lambda s: (-s[0], s[1].id)
    )
    citations = [
        Citation(
            kind="message",
            id=str(m.id),
            speaker=m.speaker,
            excerpt=excerpt(m.content, _CITATION_CHARS),
        )
        for score, m in scored[:limit]
        if score > 0
    ]
    for cid in chunk_ids:
        row = by_chunk.get(cid)
        if row is not None and row[2] and len(citations) < limit + 2:
            citations.append(
                Citation(
                    kind="artifact",
                    id=row[2],
                    speaker=None,
                    excerpt=excerpt(row[3], _CITATION_CHARS),
                )
            )
    if not citations and messages:
        citations = [
            Citation(
                kind="message",
                id=str(m.id),
                speaker=m.speaker,
                excerpt=excerpt(m.content, _CITATION_CHARS),
            )
            for m in messages[:limit]
        ]
    return citations


def _headline(summary: str) -> str:
    """A report summary without its example excerpt."""
    return summary.split(' For example: "')[0]


async def local_search(
    platform: Platform,
    room_id: str,
    question: str,
    mentioned: list[str] | None = None,
    hops: int = 2,
    max_entities: int = 40,
    max_citations: int = 5,
) -> Answer:
    mentioned = list(mentioned or [])
    query_vector = (await platform.embedder.embed([question]))[0]
    hits = await platform.vectors.search(ENTITIES, room_id, question, query_vector, limit=5)
    seeds = list(dict.fromkeys(mentioned + [h.id for h in hits]))[:8]
    if not seeds:
        return Answer(question, Route.local, "Nothing in this room matches the question yet.", [])
    sub = await platform.graph.neighbourhood(room_id, seeds, hops=hops, limit=max_entities)
    by_name = {e.name: e for e in sub.entities}
    focus = [s for s in seeds if s in by_name][:3]

    # Chunks that support the focus entities and their strongest relationships, most shared first.
    votes: Counter[str] = Counter()
    for name in focus:
        votes.update(by_name[name].source_chunk_ids)
    for rel in sub.relationships:
        if rel.source in focus or rel.target in focus:
            votes.update({cid: 2 for cid in rel.source_chunk_ids})
    chunk_ids = [cid for cid, _ in votes.most_common(6)]
    citations = await _cite_messages(platform, room_id, chunk_ids, question, focus, max_citations)

    if platform.llm is not None:
        composed = await _llm_local_answer(platform.llm, question, focus, sub, citations)
        if composed is not None:
            text, used = composed
            return Answer(
                question=question,
                route=Route.local,
                answer=text,
                citations=used,
                entities=[by_name[n].display_name for n in focus],
            )
    lines = []
    for name in focus:
        entity = by_name[name]
        ties = [
            (r.weight, by_name[r.target if r.source == name else r.source].display_name)
            for r in sub.relationships
            if name in (r.source, r.target)
            and (r.target if r.source == name else r.source) in by_name
        ]
        ties.sort(key=lambda t: (-t[0], t[1]))
        tie_text = ", ".join(f"{n} ({w:g})" for w, n in ties[:6])
        lines.append(
            f"{entity.display_name} ({entity.type.lower()}, mentioned {entity.mentions}×)"
            + (f" is most connected to {tie_text}." if tie_text else ".")
        )
    if citations:
        lines.append(
            "What was said: "
            + " ".join(
                f'[{c.kind} {c.id}] {c.speaker + ": " if c.speaker else ""}"{c.excerpt}"'
                for c in citations[:3]
            )
        )
    return Answer(
        question=question,
        route=Route.local,
        answer=" ".join(lines),
        citations=citations,
        entities=[by_name[n].display_name for n in focus],
    )


async def global_search(
    platform: Platform,
    room_id: str,
    question: str,
    max_reports: int = 3,
    max_citations: int = 5,
) -> Answer:
    query_vector = (await platform.embedder.embed([question]))[0]
    hits = await platform.vectors.search(COMMUNITIES, room_id, question, query_vector, limit=10)
    reports = {r.community_id: r for r in await platform.graph.get_reports(room_id)}
    if not reports:
        return Answer(question, Route.global_, "This room has no community reports yet.", [])
    # Order of relevance to the question (store-agnostic: positions, not scores), then the
    # reports' own rank for the rest.
    relevant = [reports[h.id] for h in hits if h.id in reports]
    seen = {r.community_id for r in relevant}
    ranked = relevant + sorted(
        (r for r in reports.values() if r.community_id not in seen),
        key=lambda r: (-r.rank, r.community_id),
    )
    as_of = max((r.generated_at for r in reports.values() if r.generated_at), default=None)
    if platform.llm is not None:
        composed = await _llm_global_answer(platform, room_id, question, ranked[:8], max_citations)
        if composed is not None:
            composed.reports_as_of = as_of
            return composed
    best = ranked[:max_reports]
    names = [n for r in best for n in normalize_name(r.title).replace(" and ", ", ").split(", ")]
    chunk_ids: list[str] = []
    for report in best:
        chunk_ids += report.source_chunk_ids[:3]
    citations = await _cite_messages(
        platform, room_id, list(dict.fromkeys(chunk_ids)), question, names, max_citations
    )
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
    platform: Platform,
    room_id: str,
    question: str,
    reports: list[CommunityReport],
    max_citations: int,
) -> Answer | None:
    """Map: rated key points from each report; reduce: one answer from the best points."""
    llm = platform.llm
    assert llm is not None
    try:
        mapped = await asyncio.gather(
            *(
                llm.structured(
                    prompts.map_key_points(question, report_text(r)), KeyPoints, kind="map"
                )
                for r in reports
            )
        )
        points = sorted(
            (
                (point.score, i, point.description)
                for i, result in enumerate(mapped)
                for point in result.points
                if point.score > 0
            ),
            key=lambda p: (-p[0], p[1]),
        )[:_MAX_KEY_POINTS]
        if not points:
            return None
        context = fit_to_budget(
            [f"[{n}] {text} (from: {reports[i].title})" for n, (_, i, text) in enumerate(points)],
            platform.settings.llm_context_tokens,
        )
        output = await llm.structured(
            prompts.answer(question, context), AnswerOutput, kind="reduce"
        )
    except LLMError:
        return None
    used_reports = [reports[points[n][1]] for n in output.sources if 0 <= n < len(points)]
    used_reports = list({r.community_id: r for r in used_reports}.values()) or [
        reports[i] for _, i, _ in points[:3]
    ]
    chunk_ids = list(dict.fromkeys(c for r in used_reports for c in r.source_chunk_ids[:3]))
    names = [n for r in used_reports for n in normalize_name(r.title).split()]
    citations = await _cite_messages(platform, room_id, chunk_ids, question, names, max_citations)
    return Answer(
        question=question,
        route=Route.global_,
        answer=output.answer,
        citations=citations,
        communities=[r.title for r in used_reports],
    )


async def _llm_local_answer(
    llm: LLMProvider,
    question: str,
    focus: list[str],
    sub: RoomGraph,
    candidates: list[Citation],
) -> tuple[str, list[Citation]] | None:
    """An answer from the entities, relationships and supporting messages; cites the
    messages it used."""
    by_name = {e.name: e for e in sub.entities}
    lines = [f"[{n}] {c.speaker or c.kind}: {c.excerpt}" for n, c in enumerate(candidates)]
    lines += [
        f"- {by_name[n].display_name} ({by_name[n].type}): {by_name[n].description}"
        for n in focus
        if n in by_name
    ]
    lines += [
        f"- {by_name[r.source].display_name} -- {by_name[r.target].display_name}: {r.description}"
        for r in sub.relationships[:30]
        if r.source in by_name and r.target in by_name
    ]
    context = fit_to_budget(lines, _LOCAL_CONTEXT_TOKENS)
    try:
        output = await llm.structured(prompts.answer(question, context), AnswerOutput, kind="local")
    except LLMError:
        return None
    used = [candidates[n] for n in dict.fromkeys(output.sources) if 0 <= n < len(candidates)]
    return output.answer, used or candidates
