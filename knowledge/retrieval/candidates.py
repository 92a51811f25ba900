"""Candidate generators: each proposes ranked units of evidence and says which signal found them.

- ``lexical``: BM25 over every message and artifact passage (the evidence index);
- ``clauses``: BM25 of each clause of a many-clause question on its own (a multi-hop question
  states one hop and asks another), the clauses' rankings interleaved;
- ``dense``: cosine over message embeddings (speaker + text), when the embedder is a real model;
- ``context``: the turns just before and after the best lexical hits (a short reply such as
  "yes, Thursday works" is evidence for the question its neighbour asked);
- ``graph``: entities the question names (by name, alias or vector) and their neighbours → the
  messages that mention them or were said by them, weighted by match, relationship weight and
  how rare the entity is;
- ``speaker``: BM25 within the messages of a speaker the question names;
- ``time``: BM25 within the window of time the question names (or the newest / oldest messages
  on the topic when it asks for the latest or the first);
- ``reports``: community reports that match the question → their entities' messages (global).
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select

from dbschema.models import RoomChunk
from knowledge.chat import CitedMessage, message_ids_between, messages_by_ids
from knowledge.graph import RoomGraph
from knowledge.indexing import message_unit_id, passage_unit_id
from knowledge.lexical import analyze, bm25_idf, text_terms
from knowledge.platform import Platform
from knowledge.relational import any_text
from knowledge.retrieval.query import FormMatcher, QueryPlan
from knowledge.stores.base import COMMUNITIES, ENTITIES, EVIDENCE, PointFilter, VectorHit


@dataclass(frozen=True)
class Candidate:
    unit_id: str
    score: float


@dataclass
class CandidateList:
    """One generator's ranked proposals, best first, and a note of what it did."""

    signal: str
    candidates: list[Candidate] = field(default_factory=list)
    note: str = ""


@dataclass
class SearchContext:
    platform: Platform
    room_id: str
    plan: QueryPlan
    depth: int
    query_vector: list[float] | None = None
    #: Filled by the graph generator: the subgraph around the question's entities.
    subgraph: RoomGraph | None = None
    focus: list[str] = field(default_factory=list)
    #: Filled by the reports generator: community ids of the reports matching the question,
    #: best first (the first four seed it).
    report_ids: list[str] = field(default_factory=list)
    #: The lexical generator's hits (with payloads: speaker, ts), for the time generator.
    lexical_hits: list[VectorHit] = field(default_factory=list)
    #: Terms of the event a time window was anchored on (left out of the window's query).
    event_terms: list[str] = field(default_factory=list)
    idf: dict[str, float] | None = None

    async def term_idf(self) -> dict[str, float]:
        """The room's BM25 IDF of each question term (absent terms left out), fetched once."""
        if self.idf is None:
            n_docs, frequencies = await self.platform.vectors.term_stats(
                EVIDENCE, self.room_id, self.plan.terms
            )
            self.idf = {t: bm25_idf(n_docs, df) for t, df in frequencies.items() if df > 0}
        return self.idf

    async def question_vector(self) -> list[float]:
        """The question's embedding, computed once for every generator that needs it."""
        if self.query_vector is None:
            self.query_vector = (await self.platform.embedder.embed([self.plan.question]))[0]
        return self.query_vector


#: The weight of an entity's message that shares no other term with the question, relative to
#: one that has all of them.
PROVENANCE_FLOOR = 0.25
#: Rank offset when the clauses' rankings are merged: small, so each clause's best hits lead.
CLAUSE_RANK_K = 5


def _from_hits(signal: str, hits: Sequence[VectorHit], note: str = "") -> CandidateList:
    return CandidateList(signal, [Candidate(h.id, h.score) for h in hits], note)


async def lexical(ctx: SearchContext) -> CandidateList:
    hits = await ctx.platform.vectors.search_lexical(
        EVIDENCE, ctx.room_id, ctx.plan.terms, ctx.depth
    )
    ctx.lexical_hits = list(hits)
    return _from_hits("lexical", hits, f"BM25 over {len(set(ctx.plan.terms))} terms")


async def clauses(ctx: SearchContext) -> CandidateList:
    """BM25 of each clause of a many-clause question on its own, interleaved by rank.

    A multi-hop question states its first hop and asks its second ("Marcius names two
    tribunes. What do those two later plan to tell the people?"); over the whole question the
    longer clause's terms drown the other's, so the message that answers one clause ranks
    below messages that match a few terms of both.
    """
    parts = ctx.plan.clauses
    if not parts:
        return CandidateList("clauses", note="one clause")
    results = await ctx.platform.vectors.search_lexical_many(
        EVIDENCE, ctx.room_id, parts, ctx.depth
    )
    scores: dict[str, float] = {}
    for hits in results:
        for rank, hit in enumerate(hits, start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + 1.0 / (CLAUSE_RANK_K + rank)
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[: ctx.depth]
    return CandidateList(
        "clauses",
        [Candidate(u, s) for u, s in ranked],
        f"{len(parts)} clauses: " + " | ".join(" ".join(p[:4]) for p in parts),
    )


async def dense(ctx: SearchContext) -> CandidateList:
    hits = await ctx.platform.vectors.search_dense(
        EVIDENCE, ctx.room_id, await ctx.question_vector(), ctx.depth
    )
    return _from_hits("dense", hits, ctx.platform.embedder.name)


async def context_turns(
    ctx: SearchContext,
    lexical_hits: CandidateList,
    neighbours: Mapping[str, tuple[int | None, ...]],
) -> CandidateList:
    """The neighbours of the top lexical hits, in the hits' order, half their score."""
    out: dict[str, float] = {}
    for candidate in lexical_hits.candidates[:20]:
        for mid in neighbours.get(candidate.unit_id, ()):
            if mid is None:
                continue
            uid = message_unit_id(mid)
            if uid not in out:
                out[uid] = candidate.score * 0.5
    ranked = sorted(out.items(), key=lambda s: -s[1])
    return CandidateList("context", [Candidate(u, s) for u, s in ranked], "turns around hits")


async def speaker(ctx: SearchContext) -> CandidateList:
    if not ctx.plan.speakers:
        return CandidateList("speaker", note="no speaker named")
    where = PointFilter(speakers=tuple(ctx.plan.speakers))
    # The speaker's own name says little about what they said: leave it out of the terms.
    name_terms = {t for s in ctx.plan.speakers for t in analyze(s)}
    terms = [t for t in ctx.plan.terms if t not in name_terms] or ctx.plan.terms
    hits = await ctx.platform.vectors.search_lexical(EVIDENCE, ctx.room_id, terms, ctx.depth, where)
    return _from_hits("speaker", hits, "messages of " + ", ".join(ctx.plan.speakers))


async def time_window(ctx: SearchContext) -> CandidateList:
    """Messages of the window the question names: BM25 within it, then (for a window of a few
    days) every other message of it in time order. Without a window, a question that asks for
    the latest or the first gets the topic's lexical hits ordered by time."""
    intent = ctx.plan.time
    if not intent.has_window:
        if intent.direction == 0 or not ctx.lexical_hits:
            return CandidateList("time", note="no time window")
        best = ctx.lexical_hits[0].score or 1.0
        topical = [
            h
            for h in ctx.lexical_hits[:30]
            if h.score >= 0.4 * best and h.payload.get("ts") is not None
        ]
        if len({float(h.payload["ts"]) for h in topical}) < 2:
            # An undated transcript's messages all carry the time of their import: sorted by
            # it, the hits would be the lexical list again, counted twice in the fusion.
            return CandidateList("time", note="the topical hits have no time order")
        topical.sort(key=lambda h: float(h.payload["ts"]) * intent.direction, reverse=True)
        word = "newest" if intent.direction > 0 else "oldest"
        return _from_hits("time", topical, f"{word} of {len(topical)} topical hits first")
    assert intent.since is not None and intent.until is not None
    where = PointFilter(since=intent.since.timestamp(), until=intent.until.timestamp() - 1e-3)
    terms = [t for t in ctx.plan.terms if t not in set(ctx.event_terms)] or ctx.plan.terms
    hits = await ctx.platform.vectors.search_lexical(EVIDENCE, ctx.room_id, terms, ctx.depth, where)
    found = _from_hits("time", hits)
    # The window's other messages follow in time order: "what did we agree that week?" has
    # few topic words, and the window itself is the strongest clue.
    if len(found.candidates) < ctx.depth:
        seen = {c.unit_id for c in found.candidates}
        async with ctx.platform.session() as session:
            ids = await message_ids_between(
                session, ctx.room_id, intent.since, intent.until, limit=ctx.depth
            )
        found.candidates += [
            Candidate(uid, 0.0) for mid in ids if (uid := message_unit_id(mid)) not in seen
        ]
    label = intent.phrase or (intent.event.event if intent.event else "")
    found.note = f"{intent.since.date()} … {intent.until.date()} ({label!r})"
    return found


def _text_grams(text: str, max_words: int = 4) -> list[str]:
    """The word n-grams of a text that could be entity names (longest first, each once)."""
    tokens = [t for t in re.findall(r"[^\W_][\w'’-]*", text.lower())]
    tokens = [t[:-2] if t.endswith(("'s", "’s")) else t for t in tokens]
    grams = (
        " ".join(tokens[i : i + size])
        for size in range(max_words, 0, -1)
        for i in range(len(tokens) - size + 1)
    )
    return list(dict.fromkeys(grams))


async def graph(
    ctx: SearchContext,
    aliases_of: dict[str, list[str]],
    bridge_texts: Sequence[str] = (),
    seed_weights: dict[str, float] | None = None,
    signal: str = "graph",
    max_chunks: int = 30,
) -> CandidateList:
    """Messages reached through entities.

    Seeds: the entities the question names (through their aliases too), the entities named in
    the best lexical hits (bridges to a second hop), and the closest entity vectors. Two
    rankings are merged: BM25 of the question expanded with every surface form of the seeds
    (an alias question finds messages that use another name; a multi-hop question finds the
    message about the bridge), and the seeds' provenance (messages of their chunks that name
    them or were said by them, weighted by seed weight × rarity, neighbours by relationship
    weight).
    """
    platform, room_id, plan = ctx.platform, ctx.room_id, ctx.plan
    seeds = dict(seed_weights or {})
    # bridge entity -> the hit text that named it (its hop-1 evidence)
    bridges: dict[str, str] = {}
    if seed_weights is None:
        for name in plan.entities:
            seeds[name] = 1.0
        # The names the hits can hold, looked up (a large room has tens of thousands).
        grams_of = {text: _text_grams(text) for text in bridge_texts}
        wanted = {gram for grams in grams_of.values() for gram in grams}
        names = (
            set(await platform.graph.entity_names_matching(room_id, wanted)) if wanted else set()
        )
        for text in bridge_texts:
            for name in [gram for gram in grams_of[text] if gram in names][:4]:
                if name not in seeds:
                    seeds[name] = 0.5
                    bridges.setdefault(name, text)
        if platform.embedder.semantic:
            hits = await platform.vectors.search_dense(
                ENTITIES, room_id, await ctx.question_vector(), limit=3
            )
            for rank, hit in enumerate(hits):
                seeds.setdefault(hit.id, 0.4 / (1 + rank))
    if not seeds:
        return CandidateList(signal, note="no entity matched")
    sub = await platform.graph.neighbourhood(
        room_id, list(seeds), hops=1, limit=40, provenance=False
    )
    by_name = {e.name: e for e in sub.entities}
    weights = {name: w for name, w in seeds.items() if name in by_name}
    # Neighbours weigh by their relationship to the seeds, relative to the strongest one.
    strongest = max((r.weight for r in sub.relationships), default=1.0) or 1.0
    for rel in sub.relationships:
        for a, b in ((rel.source, rel.target), (rel.target, rel.source)):
            if seeds.get(a, 0.0) >= 1.0 and b in by_name and b not in seeds:
                w = 0.3 * math.sqrt(rel.weight / strongest)
                weights[b] = max(weights.get(b, 0.0), w)
    top = sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))[:15]
    ctx.subgraph, ctx.focus = sub, [n for n, _ in top if n in seeds][:5]

    # 1. The question expanded with the seeds' surface forms (names and aliases).
    def forms(name: str) -> list[str]:
        display = by_name[name].display_name if name in by_name else name
        return [name, display, *aliases_of.get(name, [])]

    question_terms = set(plan.terms)
    expanded: dict[str, float] = {}

    queries: list[tuple[list[str], float]] = []

    def ranked_by(terms: list[str], weight: float) -> None:
        queries.append((terms, weight))

    # 1a. Aliases: the question with the name it uses replaced by each other name of the same
    # entity (one query per name, best score kept: an OR over the names, so a much-named
    # entity does not outweigh the rest of the question).
    alias_terms: list[str] = []
    for name, w in top:
        if w < 1.0:
            continue
        used = {t for form in plan.entity_forms.get(name, []) for t in analyze(form)}
        rest = [t for t in plan.terms if t not in used]
        asked: set[tuple[str, ...]] = set()
        for form in dict.fromkeys(forms(name)):
            terms = [t for t in analyze(form) if t not in question_terms]
            # "Taylor Cruz" and "taylor cruz" are one query.
            if terms and tuple(terms) not in asked and len(alias_terms) < 12:
                asked.add(tuple(terms))
                alias_terms += terms
                ranked_by([*rest, *dict.fromkeys(terms)], 1.0)
    # 1b. Second hop: a bridge entity with the question terms its hop-1 message lacks ("who
    # owns the service that caused the outage": the outage message names the service; the
    # owner is found by the service's name and "own").
    for name in list(bridges)[:3]:
        hop1 = set(analyze(bridges[name]))
        residual = [t for t in plan.terms if t not in hop1]
        bridge_terms = [t for form in forms(name) for t in analyze(form)]
        if residual and bridge_terms:
            ranked_by([*dict.fromkeys(bridge_terms), *residual], 0.8)

    # 2. Provenance: the chunks supporting the most (and strongest) entities (chosen in the
    # store: a busy entity has thousands), and their messages.
    async def provenance_messages() -> tuple[
        dict[str, float], list[tuple[str, list[int] | None, str | None]], list[CitedMessage]
    ]:
        votes = dict(await platform.graph.top_source_chunks(room_id, top, max_chunks))
        rows, messages = await _chunk_messages(platform, room_id, list(votes))
        return votes, rows, messages

    # The expanded queries (one round trip for all of them), the provenance and the question
    # terms' IDF are independent reads: together.
    results, (chunk_votes, rows, messages), idf = await asyncio.gather(
        platform.vectors.search_lexical_many(
            EVIDENCE, room_id, [terms for terms, _ in queries], ctx.depth
        ),
        provenance_messages(),
        ctx.term_idf(),
    )
    for (_, weight), hits in zip(queries, results, strict=True):
        best = max((h.score for h in hits), default=1.0) or 1.0
        for h in hits:
            expanded[h.id] = max(expanded.get(h.id, 0.0), weight * h.score / best)
    expansion = alias_terms

    matchers = {name: FormMatcher(forms(name)) for name, _ in top}
    hits_of: dict[str, list[str]] = {name: [] for name, _ in top}
    for m in messages:
        speaker_key = " ".join(m.speaker.lower().split())
        lowered = m.content.lower()
        for name, matcher in matchers.items():
            if speaker_key == name or matcher.names(m.content, lowered):
                hits_of[name].append(message_unit_id(m.id))
    # A message reached through an entity weighs by how much of the rest of the question it
    # answers: among the many lines that name a protagonist, the ones on the question's topic.
    named = {t for name, _ in top for form in forms(name) for t in analyze(form)}
    topic = {t: v for t, v in idf.items() if t not in named}
    topic_total = sum(topic.values())
    relevance: dict[str, float] = {}
    for m in messages:
        present = text_terms(m.content)
        share = sum(v for t, v in topic.items() if t in present) / topic_total if topic else 0.0
        relevance[message_unit_id(m.id)] = PROVENANCE_FLOOR + (1 - PROVENANCE_FLOOR) * share
    provenance: dict[str, float] = {}
    n = max(1, len(messages))
    for name, w in top:
        units = hits_of[name]
        if not units:
            continue
        rarity = math.log(1.0 + n / len(units))
        for uid in units:
            provenance[uid] = provenance.get(uid, 0.0) + w * rarity * relevance[uid]
    for cid, _, artifact_id in rows:
        if artifact_id:
            uid = passage_unit_id(cid)
            provenance[uid] = max(provenance.get(uid, 0.0), chunk_votes.get(cid, 0.0))
    best_provenance = max(provenance.values(), default=1.0) or 1.0
    scores = {u: s for u, s in expanded.items()}
    for uid, value in provenance.items():
        scores[uid] = scores.get(uid, 0.0) + 0.5 * value / best_provenance
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[: ctx.depth]
    return CandidateList(
        signal,
        [Candidate(u, s) for u, s in ranked],
        f"{len(seeds)} seeds ({', '.join(list(seeds)[:6])}), {len(top)} entities, "
        f"{len(set(expansion))} expansion terms, {len(chunk_votes)} chunks",
    )


async def _chunk_messages(
    platform: Platform, room_id: str, chunk_ids: Sequence[str]
) -> tuple[list[tuple[str, list[int] | None, str | None]], list[CitedMessage]]:
    """The chunks' (id, message ids, artifact id) rows and their live messages."""
    async with platform.session() as session:
        rows = (
            await session.execute(
                select(RoomChunk.id, RoomChunk.message_ids, RoomChunk.artifact_id).where(
                    RoomChunk.room_id == room_id, RoomChunk.id == any_text(chunk_ids)
                )
            )
        ).all()
        message_ids = sorted({mid for r in rows for mid in (r[1] or [])})
        messages = await messages_by_ids(session, room_id, message_ids)
    return [(cid, mids, artifact) for cid, mids, artifact in rows], messages


async def reports(ctx: SearchContext, aliases_of: dict[str, list[str]]) -> CandidateList:
    """Community reports that match the question → messages of their member entities."""
    platform = ctx.platform
    hits = await platform.vectors.search(
        COMMUNITIES, ctx.room_id, ctx.plan.question, await ctx.question_vector(), limit=10
    )
    # The ranking is kept for the global answer (it orders the reports it reads by it).
    ctx.report_ids = [h.id for h in hits]
    if not hits:
        return CandidateList("reports", note="no community report matched")
    best = [h.id for h in hits[:4]]
    communities = {c.id: c for c in await platform.graph.get_communities(ctx.room_id, ids=best)}
    seeds: dict[str, float] = {}
    used = []
    for rank, hit in enumerate(hits[:4]):
        community = communities.get(hit.id)
        if community is None:
            continue
        used.append(hit.id)
        for name in community.entity_names[:12]:
            seeds[name] = max(seeds.get(name, 0.0), 1.0 / (1 + rank))
    # The question's own subgraph, when the graph generator found one, stays the context's.
    question_graph = (ctx.subgraph, ctx.focus)
    found = await graph(ctx, aliases_of, seed_weights=seeds, signal="reports")
    if question_graph[0] is not None:
        ctx.subgraph, ctx.focus = question_graph
    found.note = f"{len(used)} reports; " + found.note
    return found
