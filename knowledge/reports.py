"""Community reports. Offline: extractive (title from the top entities, summary from the top
relationships and chunks, findings, a rank). The LLM writer plugs in behind ``ReportWriter``."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from knowledge.graph import Community, CommunityReport, Entity, Relationship, RoomGraph
from knowledge.llm import prompts
from knowledge.llm.provider import LLMError, LLMProvider
from knowledge.llm.schemas import ReportOutput
from knowledge.text import excerpt
from knowledge.tokens import count_tokens

log = logging.getLogger(__name__)

_TITLE_ENTITIES = 3
_FINDINGS = 5
_EXCERPT_CHARS = 300

#: A report's context holds at most this many members of its community: the most mentioned
#: (GraphRAG likewise fills a report's context by importance up to its budget; an LLM never
#: saw more than about this many within ``LLM_CONTEXT_TOKENS``). A large community's report
#: is then read, hashed and rewritten for its core, not for each entity a message adds at its
#: edge: at 100k messages a new entity joined a top-level community of thousands, and its
#: report cost a read of all of them.
CONTEXT_MEMBERS = 50


def context_members(community: Community, mentions: Mapping[str, int]) -> list[str]:
    """The members a community's report reads: all of a community of at most
    ``CONTEXT_MEMBERS``, else the ``CONTEXT_MEMBERS`` most mentioned among those in
    ``mentions`` (the members that are entities of the room, with their mentions), by
    :func:`mention_bucket` and then name: one more mention moves a member into or out of the
    context only when its count crosses a power of two (which the graph step logs)."""
    names = community.entity_names
    if len(names) <= CONTEXT_MEMBERS:
        return list(names)
    known = [n for n in names if n in mentions]
    return sorted(known, key=lambda n: (-_weight_bucket(mentions[n]), n))[:CONTEXT_MEMBERS]


def mention_bucket(e: Entity) -> int:
    """What of an entity's mentions a report reads: their power of two (it ranks the members
    of a large community, :func:`context_members`)."""
    return _weight_bucket(e.mentions)


@dataclass
class ReportContext:
    community: Community
    entities: list[Entity]  # the context's members, most connected first
    relationships: list[Relationship]  # among them, heaviest first
    excerpts: list[tuple[str, str]]  # (chunk id, text) of the most shared chunks

    @property
    def size(self) -> int:
        """The community's member count (its context may hold fewer)."""
        return len(self.community.entity_names)

    def content_hash(self) -> str:
        """Changes when the community's content changes materially: its context's members,
        their types and descriptions, their relationships, a relationship's weight crossing a
        power of two, or (for a community larger than its context) its size crossing one. One
        more co-mention of a busy pair does not rewrite the report (reports say how fresh they
        are); which excerpts are quoted follows from the rest."""
        return content_hash(self.community.id, self.entities, self.relationships, self.size)


def entity_report_key(e: Entity) -> tuple[str, str, str]:
    """What of an entity a report's content hash reads (not its mentions or chunks)."""
    return (e.name, e.type, e.description)


def relationship_report_key(r: Relationship) -> tuple[str, str, int, str]:
    """What of a relationship a report's content hash reads: its weight only by power of two."""
    return (r.source, r.target, _weight_bucket(r.weight), r.description)


def content_hash(
    community_id: str,
    entities: Iterable[Entity],
    relationships: Iterable[Relationship],
    size: int = 0,
) -> str:
    """:meth:`ReportContext.content_hash` of a community of ``size`` members with these in its
    context and these relationships among them (any order)."""
    payload: dict[str, object] = {
        "community": community_id,
        "entities": sorted(entity_report_key(e) for e in entities),
        "relationships": sorted(relationship_report_key(r) for r in relationships),
    }
    if size > CONTEXT_MEMBERS:
        payload["size"] = _weight_bucket(size)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _weight_bucket(weight: float) -> int:
    return math.floor(math.log2(max(weight, 1.0)))


class GraphIndex:
    """The room graph indexed for reports, in one pass: entities by name, relationships by
    entity. A community's inside relationships then come from its members' adjacency
    (O(sum of member degrees)), and its content hash from per-row JSON fragments computed
    once per row, not once per community."""

    def __init__(self, graph: RoomGraph) -> None:
        self.entities: dict[str, Entity] = {e.name: e for e in graph.entities}
        self.adjacency: dict[str, list[Relationship]] = defaultdict(list)
        for r in graph.relationships:
            self.adjacency[r.source].append(r)
            if r.target != r.source:
                self.adjacency[r.target].append(r)
        self._entity_json: dict[str, tuple[tuple[str, str, str], str]] = {}
        self._relationship_json: dict[int, tuple[tuple[str, str, int, str], str]] = {}

    def inside(self, members: Collection[str]) -> list[Relationship]:
        """The relationships with both ends among ``members``, each once (in no set order)."""
        names = members if isinstance(members, (set, frozenset, dict)) else set(members)
        return [
            r
            for name in names
            for r in self.adjacency.get(name, ())
            if r.source == name and r.target in names
        ]

    def members(self, community: Community) -> list[Entity]:
        """The entities of the community's report context (:func:`context_members`, from the
        mentions of the entities indexed: a partial index must hold the context's members)."""
        if len(community.entity_names) <= CONTEXT_MEMBERS:
            names = community.entity_names
        else:
            mentions = {
                n: self.entities[n].mentions for n in community.entity_names if n in self.entities
            }
            names = context_members(community, mentions)
        return [self.entities[n] for n in names if n in self.entities]

    def content_hash(self, community: Community) -> str:
        """Equal to ``build_context(community, …).content_hash()``, without building the
        context: the same JSON, assembled from cached per-row fragments."""
        members = self.members(community)
        entity_parts = sorted(self._entity_fragment(e) for e in members)
        rel_parts = sorted(
            self._relationship_fragment(r) for r in self.inside({e.name for e in members})
        )
        size = len(community.entity_names)
        text = (
            '{"community": '
            + json.dumps(community.id)
            + ', "entities": ['
            + ", ".join(part for _, part in entity_parts)
            + '], "relationships": ['
            + ", ".join(part for _, part in rel_parts)
            + "]"
            + (f', "size": {_weight_bucket(size)}' if size > CONTEXT_MEMBERS else "")
            + "}"
        )
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def _entity_fragment(self, e: Entity) -> tuple[tuple[str, str, str], str]:
        cached = self._entity_json.get(e.name)
        if cached is None:
            key = entity_report_key(e)
            cached = self._entity_json[e.name] = (key, json.dumps(list(key)))
        return cached

    def _relationship_fragment(self, r: Relationship) -> tuple[tuple[str, str, int, str], str]:
        cached = self._relationship_json.get(id(r))
        if cached is None:
            key = relationship_report_key(r)
            cached = self._relationship_json[id(r)] = (key, json.dumps(list(key)))
        return cached

    def excerpt_chunk_ids(self, community: Community, max_excerpts: int = 3) -> list[str]:
        """The chunks a context quotes: those most shared among the members."""
        votes: dict[str, int] = {}
        for e in self.members(community):
            for cid in e.source_chunk_ids:
                votes[cid] = votes.get(cid, 0) + 1
        return sorted(votes, key=lambda c: (-votes[c], c))[:max_excerpts]

    def context(
        self, community: Community, chunk_texts: Mapping[str, str], max_excerpts: int = 3
    ) -> ReportContext:
        entities = self.members(community)
        inside = self.inside({e.name for e in entities})
        inside.sort(key=lambda r: (-r.weight, r.source, r.target))
        degree: dict[str, float] = {e.name: 0.0 for e in entities}
        for r in inside:
            degree[r.source] += r.weight
            degree[r.target] += r.weight
        ordered = sorted(entities, key=lambda e: (-degree[e.name], -e.mentions, e.name))
        best = self.excerpt_chunk_ids(community, max_excerpts)
        return ReportContext(
            community=community,
            entities=ordered,
            relationships=inside,
            excerpts=[(cid, chunk_texts[cid]) for cid in best if cid in chunk_texts],
        )


class ReportWriter(Protocol):
    name: str

    async def write(self, context: ReportContext) -> CommunityReport: ...


def build_context(
    community: Community,
    entities: dict[str, Entity],
    relationships: Sequence[Relationship],
    chunk_texts: Mapping[str, str],
    max_excerpts: int = 3,
) -> ReportContext:
    """One community's context from the whole graph (indexes it: for many communities, build
    one :class:`GraphIndex` and call :meth:`GraphIndex.context`)."""
    index = GraphIndex(
        RoomGraph(entities=list(entities.values()), relationships=list(relationships))
    )
    return index.context(community, chunk_texts, max_excerpts)


def _join_names(names: Sequence[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


class ExtractiveReportWriter:
    name = "extractive-v1"

    async def write(self, context: ReportContext) -> CommunityReport:
        return self.write_now(context)

    def write_now(self, context: ReportContext) -> CommunityReport:
        entities = context.entities
        by_name = {e.name: e for e in entities}
        top = [e.display_name for e in entities[:_TITLE_ENTITIES]]
        title = _join_names(top) if top else "Empty community"
        rels = context.relationships

        size = context.size or len(entities)
        if size > len(entities):
            # The size is hashed by power of two only: say no more than that.
            scale = f"A large community (over {2 ** math.floor(math.log2(size)):,} entities)"
        else:
            scale = f"A community of {size} {'entity' if size == 1 else 'entities'}"
        summary_parts = [f"{scale} centred on {title}."]
        if rels:
            strongest = ", ".join(
                f"{by_name[r.source].display_name} and {by_name[r.target].display_name} "
                f"({r.weight:g} co-mentions)"
                for r in rels[:3]
                if r.source in by_name and r.target in by_name
            )
            summary_parts.append(f"Its strongest ties are between {strongest}.")
        if context.excerpts:
            summary_parts.append(
                f'For example: "{excerpt(context.excerpts[0][1], _EXCERPT_CHARS)}"'
            )

        findings = []
        for entity in entities[:_FINDINGS]:
            ties = [
                by_name[r.target if r.source == entity.name else r.source].display_name
                for r in rels
                if entity.name in (r.source, r.target)
            ][:4]
            summary = f"{entity.display_name} ({entity.type.lower()})" + (
                f" is linked to {_join_names(ties)}." if ties else " stands on its own."
            )
            findings.append({"summary": summary, "explanation": entity.description})

        weight = sum(r.weight for r in rels) + sum(e.mentions for e in entities)
        rank = round(min(10.0, 1.25 * math.log2(1.0 + weight)), 2)
        chunk_ids = sorted({cid for e in entities for cid in e.source_chunk_ids})
        return CommunityReport(
            community_id=context.community.id,
            level=context.community.level,
            title=title,
            summary=" ".join(summary_parts),
            findings=findings,
            rank=rank,
            content_hash=context.content_hash(),
            source_chunk_ids=chunk_ids,
        )


def report_text(report: CommunityReport) -> str:
    """What is embedded and searched for a report."""
    findings = " ".join(f["summary"] for f in report.findings)
    return f"{report.title}. {report.summary} {findings}"


def render_context(context: ReportContext, budget_tokens: int) -> str:
    """The community as text for an LLM, cut to a token budget (entities, then ties, then
    excerpts, most important first)."""
    lines = ["Entities:"]
    lines += [f"- {e.display_name} ({e.type}): {e.description}" for e in context.entities]
    lines.append("Relationships:")
    names = {e.name: e.display_name for e in context.entities}
    lines += [
        f"- {names.get(r.source, r.source)} -- {names.get(r.target, r.target)} "
        f"(weight {r.weight:g}): {r.description}"
        for r in context.relationships
    ]
    lines.append("Excerpts:")
    lines += [f"- {excerpt(text, _EXCERPT_CHARS)}" for _, text in context.excerpts]
    return fit_to_budget(lines, budget_tokens)


def fit_to_budget(lines: Sequence[str], budget_tokens: int) -> str:
    kept: list[str] = []
    used = 0
    for line in lines:
        tokens = count_tokens(line) + 1
        if used + tokens > budget_tokens:
            break
        kept.append(line)
        used += tokens
    return "\n".join(kept)


class LLMReportWriter:
    """Reports written by the LLM from the community's data within a token budget."""

    def __init__(self, provider: LLMProvider, budget_tokens: int) -> None:
        self.provider = provider
        self.budget_tokens = budget_tokens
        self.name = f"llm:{provider.chat_model}:{prompts.PROMPT_VERSION}"

    async def write(self, context: ReportContext) -> CommunityReport:
        fallback = ExtractiveReportWriter().write_now(context)
        try:
            output = await self.provider.structured(
                prompts.community_report(render_context(context, self.budget_tokens)),
                ReportOutput,
                kind="report",
            )
        except LLMError as error:
            # A report that cannot be written by the LLM falls back to the extractive one
            # (marked), so the room still has every report and nothing is lost.
            log.warning("community %s: %s; extractive report used", context.community.id, error)
            fallback.findings.append(
                {"summary": "LLM report unavailable", "explanation": str(error)}
            )
            fallback.content_hash = "unwritten"  # never matches: the next run tries again
            return fallback
        findings = [{"summary": f.summary, "explanation": f.explanation} for f in output.findings]
        findings.append({"summary": "Rating", "explanation": output.rating_explanation})
        return CommunityReport(
            community_id=context.community.id,
            level=context.community.level,
            title=output.title,
            summary=output.summary,
            findings=findings,
            rank=round(output.rating, 2),
            content_hash=context.content_hash(),
            source_chunk_ids=fallback.source_chunk_ids,
        )
