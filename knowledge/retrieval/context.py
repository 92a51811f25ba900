"""Context for an answer, and the offline (extractive) answer.

The LLM gets whole messages — numbered, with speaker, time and id, and the turn before and after
each — then the descriptions of the entities involved, their relationships and the summaries
of the relevant community reports, all within ``LLM_CONTEXT_TOKENS``. Only numbered evidence can
be cited, so an answer's citations are always units of the room's evidence.

Offline, the answer is extractive: the sentences of the best evidence that share the most
(IDF-weighted) terms with the question, each with its speaker and date.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from knowledge.graph import CommunityReport
from knowledge.indexing import message_unit_id
from knowledge.lexical import analyze
from knowledge.reports import fit_to_budget
from knowledge.retrieval.pipeline import Evidence, Retrieval
from knowledge.retrieval.units import Unit
from knowledge.text import excerpt
from knowledge.tokens import count_tokens

_NEIGHBOUR_CHARS = 400
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def _when(unit: Unit | Evidence) -> str:
    moment = unit.time
    return f"{moment:%Y-%m-%d %H:%M}" if moment is not None else "undated"


def _evidence_line(number: int, item: Evidence, retrieval: Retrieval) -> str:
    label = f"message {item.id}" if item.kind == "message" else f"artifact {item.id}"
    who = item.speaker or "artifact"
    lines = [f"[{number}] ({_when(item)}, {label}) {who}: {item.text}"]
    unit = retrieval.units.get(item.unit_id)
    if unit is not None:
        for tag, mid in (("before", unit.previous_id), ("after", unit.next_id)):
            neighbour = retrieval.units.get(message_unit_id(mid)) if mid is not None else None
            if neighbour is not None:
                lines.append(
                    f"    ({tag}, {_when(neighbour)}) {neighbour.speaker}: "
                    f"{excerpt(neighbour.text, _NEIGHBOUR_CHARS)}"
                )
    return "\n".join(lines)


@dataclass
class AnswerContext:
    text: str
    #: context number -> the evidence it shows (what a cited number refers to).
    numbered: dict[int, Evidence]
    tokens: int


def build_context(
    retrieval: Retrieval,
    budget_tokens: int,
    reports: Sequence[CommunityReport] = (),
) -> AnswerContext:
    """Evidence first (it is what gets cited), then graph facts, then report summaries; each
    part only as far as the budget allows."""
    numbered: dict[int, Evidence] = {}
    blocks: list[str] = []
    used = 0
    evidence_budget = int(budget_tokens * 0.7)
    for number, item in enumerate(retrieval.evidence):
        block = _evidence_line(number, item, retrieval)
        tokens = count_tokens(block) + 1
        if used + tokens > evidence_budget and numbered:
            break
        blocks.append(block)
        numbered[number] = item
        used += tokens
    facts: list[str] = []
    sub = retrieval.subgraph
    if sub is not None:
        by_name = {e.name: e for e in sub.entities}
        for name in retrieval.focus:
            entity = by_name.get(name)
            if entity is not None and entity.description:
                facts.append(
                    f"- {entity.display_name} ({entity.type.lower()}): "
                    f"{excerpt(entity.description, 300)}"
                )
        focus = set(retrieval.focus)
        for rel in sorted(sub.relationships, key=lambda r: -r.weight):
            if (rel.source in focus or rel.target in focus) and rel.description:
                a = by_name[rel.source].display_name if rel.source in by_name else rel.source
                b = by_name[rel.target].display_name if rel.target in by_name else rel.target
                facts.append(f"- {a} — {b}: {excerpt(rel.description, 240)}")
    for report in reports:
        facts.append(f'- Theme "{report.title}": {excerpt(report.summary, 600)}')
    text = "\n".join(blocks)
    if facts:
        remaining = max(0, budget_tokens - used)
        kept = fit_to_budget(["Background:", *facts], remaining)
        if kept.count("\n") >= 1:
            text += "\n\n" + kept
    return AnswerContext(text=text, numbered=numbered, tokens=count_tokens(text))


def extractive_answer(retrieval: Retrieval, max_sentences: int = 3) -> tuple[str, list[Evidence]]:
    """The sentences of the top evidence that best match the question, with who and when."""
    terms = set(retrieval.plan.terms)
    candidates: list[tuple[float, int, str, Evidence]] = []
    for position, item in enumerate(retrieval.evidence[:5]):
        for sentence in _SENTENCE.split(item.text):
            sentence = sentence.strip()
            if len(sentence) < 3:
                continue
            overlap = len(terms & set(analyze(sentence)))
            # Rank by evidence position first, then by how much of the question it holds.
            candidates.append((overlap - 0.5 * position, position, sentence, item))
    if not candidates:
        return "Nothing in this room answers that yet.", []
    candidates.sort(key=lambda c: (-c[0], c[1]))
    chosen: list[tuple[int, str, Evidence]] = []
    for _, position, sentence, item in candidates:
        if any(item is e for _, _, e in chosen):
            continue
        chosen.append((position, sentence, item))
        if len(chosen) == max_sentences:
            break
    chosen.sort(key=lambda c: c[0])
    parts = []
    for _, sentence, item in chosen:
        who = item.speaker or "an artifact"
        when = f" on {item.time:%Y-%m-%d}" if item.time is not None else ""
        label = f"message {item.id}" if item.kind == "message" else f"artifact {item.id}"
        parts.append(f'{who}{when} [{label}]: "{excerpt(sentence, 280)}"')
    return " ".join(parts), [item for _, _, item in chosen]
