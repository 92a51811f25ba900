"""Reading a question: its terms, the entities and speakers it names, its time intent.

Everything later stages need to know about the question is computed here, once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from knowledge.extraction.stopwords import STOPWORDS
from knowledge.graph import normalize_name
from knowledge.lexical import RETRIEVAL_STOPWORDS, analyze, words
from knowledge.retrieval.timeparse import TimeIntent, parse_time_intent

_MAX_NAME_WORDS = 4
_SPEECH_CUES = re.compile(
    r"\b(say|says|said|tell|tells|told|ask|asks|asked|suggest\w*|propos\w*|think|thinks|thought|"
    r"mention\w*|repl\w*|answer\w*|promis\w*|complain\w*|argu\w*|claim\w*|want\w*|"
    r"recommend\w*|offer\w*|warn\w*|report\w*|share\w*|announc\w*|according to|"
    r"(?:his|her|their) (?:view|opinion|take)|\w+'s (?:view|opinion|take|answer|reply))\b",
    re.IGNORECASE,
)


class FormMatcher:
    """Whether a text names an entity by any of its surface forms: whole words, any case.

    A substring test on the lower-cased text comes first: most texts name none of the forms,
    and it is far cheaper than the regex (the graph generator tests a few hundred messages
    against fifteen entities per question).
    """

    def __init__(self, forms: Iterable[str]) -> None:
        distinct = {f for f in forms if f}
        self._lowered = tuple({f.lower() for f in distinct})
        alternatives = sorted((re.escape(f) for f in distinct), key=len, reverse=True)
        self._pattern = re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", re.I)

    def names(self, text: str, lowered: str | None = None) -> bool:
        """``lowered``: ``text.lower()``, when the caller tests one text against many."""
        lowered = text.lower() if lowered is None else lowered
        if not any(f in lowered for f in self._lowered):
            return False
        return self._pattern.search(text) is not None


@dataclass(frozen=True)
class QueryPlan:
    question: str
    #: Analyzed terms of the question (stemmed, stopwords removed), minus the time phrase.
    terms: list[str]
    #: Entity names (canonical, lower-case) the question names, directly or by an alias.
    entities: list[str]
    #: The surface forms that matched each entity (for highlighting and reranking).
    entity_forms: dict[str, list[str]]
    #: Display names of room speakers the question names (by full name, part or alias).
    speakers: list[str]
    #: Whether the question asks what someone said (speaker names then weigh more).
    speech: bool
    time: TimeIntent = field(default_factory=TimeIntent)
    #: Analyzed terms of each clause, when the question has two or more (a multi-hop question
    #: states its first hop and asks its second: "X did Y. What did X's partner say?").
    clauses: list[list[str]] = field(default_factory=list)


def _question_words(question: str) -> list[str]:
    return [
        w[:-2] if w.endswith(("'s", "’s")) else w.rstrip("'’")
        for w in re.findall(r"[^\W_][\w'’-]*", question)
    ]


def _grams(lowered: list[str]) -> list[str]:
    """The word n-grams (longest first, up to four words) a name could be."""
    return [
        normalize_name(" ".join(lowered[i : i + size]))
        for size in range(_MAX_NAME_WORDS, 0, -1)
        for i in range(len(lowered) - size + 1)
    ]


def _capitalized(raw: list[str]) -> list[str]:
    """Capitalized words after the first: each may be part of a longer name."""
    return [w.lower() for w in raw[1:] if w[:1].isupper() and w.lower() not in STOPWORDS]


def name_lookup(question: str) -> tuple[list[str], list[str]]:
    """What the question's words can name, for ``GraphStore.entity_names_matching``: its
    n-grams and its capitalized words. Every name :func:`mentioned_entities` can return is
    among the names matching them, so it needs no other name of the room."""
    raw = _question_words(question)
    return _grams([w.lower() for w in raw]), _capitalized(raw)


def mentioned_entities(question: str, names: set[str]) -> list[str]:
    """Entity names the question mentions, longest first.

    Whole-word matches of a full name first; a capitalized question word that is no full name
    ("Zenobia") then picks the shortest entity names containing it ("zenobia of palmyra").
    """
    raw = _question_words(question)
    found: list[str] = []
    for candidate in _grams([w.lower() for w in raw]):
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


#: Where a question's clauses meet: the end of a sentence, a dash, a colon or semicolon, and a
#: comma or "and" that opens a new question ("…, and what…", "…, who…").
_CLAUSE_BREAK = re.compile(
    r"(?<=[.?!;:])\s+|\s+[-–—]+\s+|,?\s+and\s+(?=(?:what|who|whom|whose|which|where|when|why|how)\b)"
    r"|,\s+(?=(?:what|who|whom|whose|which|where|when|why|how|did|does|do|is|was|were)\b)",
    re.IGNORECASE,
)
_MIN_CLAUSE_TERMS = 2


def split_clauses(topic: str) -> list[list[str]]:
    """The analyzed terms of each clause of a question with two or more (each of at least two
    terms); an empty list for a one-clause question."""
    clauses = [analyze(part) for part in _CLAUSE_BREAK.split(topic)]
    clauses = [c for c in clauses if len(set(c)) >= _MIN_CLAUSE_TERMS]
    return clauses if len(clauses) > 1 else []


def _speaker_forms(speaker: str) -> set[str]:
    """How a question may name a speaker: the full name, and each part that is a name."""
    parts = [w for w in words(speaker) if len(w) >= 3 and w not in RETRIEVAL_STOPWORDS]
    forms = {" ".join(words(speaker))}
    if len(parts) > 1:
        forms |= {p for p in parts if p not in STOPWORDS}
    return {f for f in forms if f}


def _asks_speech(question: str, speakers: list[str], forms: dict[str, list[str]]) -> bool:
    """Whether the question asks what a speaker it names said: a speech cue in a clause that
    names them ("What did Taylor say about…"), not a cue in another clause ("Marcius names two
    tribunes. What do those two plan to tell the people?"). Without a named speaker, any cue."""
    if not _SPEECH_CUES.search(question):
        return False
    if not speakers:
        return True
    for clause in _CLAUSE_BREAK.split(question):
        if not _SPEECH_CUES.search(clause):
            continue
        clause_words = " " + " ".join(words(clause)) + " "
        for speaker in speakers:
            names = _speaker_forms(speaker) | {
                " ".join(words(f)) for f in forms.get(normalize_name(speaker), [])
            }
            if any(f" {name} " in clause_words for name in names if name):
                return True
    return False


def plan_query(
    question: str,
    entity_names: set[str],
    aliases: dict[str, str],
    speakers: list[str],
    timeline_end: datetime | None,
) -> QueryPlan:
    """``aliases`` maps an alias (lower-case) to its canonical entity name."""
    intent = parse_time_intent(question, timeline_end)
    topic = question.replace(intent.phrase, " ") if intent.phrase else question
    known = entity_names | set(aliases)
    forms: dict[str, list[str]] = {}
    for name in mentioned_entities(question, known):
        canonical = aliases.get(name, name)
        forms.setdefault(canonical, []).append(name)
    question_words = " " + " ".join(words(question)) + " "
    named_speakers = []
    for speaker in speakers:
        key = normalize_name(speaker)
        if any(f" {form} " in question_words for form in _speaker_forms(speaker)) or (key in forms):
            named_speakers.append(speaker)
    return QueryPlan(
        question=question,
        terms=analyze(topic),
        entities=list(forms),
        entity_forms=forms,
        speakers=named_speakers,
        speech=_asks_speech(question, named_speakers, forms),
        time=intent,
        clauses=split_clauses(topic),
    )
