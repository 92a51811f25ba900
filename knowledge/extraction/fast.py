"""The offline "fast" extractor: proper-name and noun-phrase heuristics, no model download.

Entities: runs of capitalized words (optionally joined by "of"/"the"; at most four words, never
across punctuation, so a list "Alex Mercer, Jordan Hayes" gives two names, not one), acronyms,
lower-case technical names ("notifications-svc", TECHNOLOGY) and repeated lower-case two-word
noun phrases (CONCEPT). Relationships: entities mentioned in
the same sentence, weighted by count.

Speakers are not topics: who said a message is a fact of the message (its author, kept with the
evidence), not a co-occurrence with everything they mention, which would make every speaker a
hub of every community. A speaker is an entity only where the text names them.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from itertools import combinations, pairwise

from knowledge.extraction.base import (
    ExtractedEntity,
    ExtractedRelationship,
    Extraction,
    ExtractionFailure,
)
from knowledge.extraction.stopwords import STOPWORDS
from knowledge.text import excerpt

_LINE = re.compile(r"^(?P<speaker>[^:\n]{1,80}): (?P<content>.*)$")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?;])\s+|\s+--\s*|\n+")
_WORD = re.compile(r"[^\W\d_][\w'’-]*", re.UNICODE)
# "and" is no connector: "Alex Mercer and Jordan Hayes" are two people.
_CONNECTORS = {"of", "the", "de", "la", "von", "van"}
_PERSON_TITLES = {
    "mr",
    "mrs",
    "ms",
    "miss",
    "dr",
    "lady",
    "lord",
    "sir",
    "king",
    "queen",
    "prince",
    "princess",
    "captain",
    "general",
    "professor",
    "prof",
    "madam",
    "saint",
    "st",
    "duke",
    "count",
}
_ORG_WORDS = {
    "inc",
    "corp",
    "company",
    "university",
    "senate",
    "bank",
    "council",
    "team",
    "committee",
    "ministry",
    "department",
    "group",
    "foundation",
    "institute",
    "school",
    "college",
}
_PLACE_PREPOSITIONS = {"in", "at", "to", "from", "into", "near", "toward", "towards", "through"}
_DESCRIPTION_CHARS = 200
_MAX_NAME_WORDS = 4
_ARTIFACT_SPEAKER = "Artifact"


def _clean_token(word: str) -> str:
    for suffix in ("'s", "’s", "'", "’"):
        if word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _is_capitalized(word: str) -> bool:
    return word[:1].isupper() and not (len(word) > 1 and word.isupper())


def _is_acronym(word: str) -> bool:
    return 2 <= len(word) <= 6 and word.isupper() and word.isalpha()


class _Mention:
    __slots__ = ("name", "type")

    def __init__(self, name: str, type_: str) -> None:
        self.name = name
        self.type = type_


def _sentence_mentions(sentence: str, mid_sentence_names: set[str]) -> list[_Mention]:
    words = [(m.group(0), m.start()) for m in _WORD.finditer(sentence)]
    mentions: list[_Mention] = []
    i = 0
    while i < len(words):
        word = _clean_token(words[i][0])
        lower = word.lower()
        if _is_acronym(word) and lower not in STOPWORDS:
            mentions.append(_Mention(word, "ENTITY"))
            i += 1
            continue
        if not _is_capitalized(word) or lower in STOPWORDS:
            i += 1
            continue
        # Grow a run of capitalized words, allowing connectors between them; a name never
        # spans punctuation ("Alex Mercer, Jordan Hayes") and has at most four words.
        run = [word]
        j = i + 1
        while j < len(words) and len(run) < _MAX_NAME_WORDS:
            gap = sentence[words[j - 1][1] + len(words[j - 1][0]) : words[j][1]]
            if gap.strip():
                break
            nxt = _clean_token(words[j][0])
            if (_is_capitalized(nxt) and nxt.lower() not in STOPWORDS) or (
                nxt.lower() in _CONNECTORS
                and j + 1 < len(words)
                and _is_capitalized(words[j + 1][0])
                and words[j + 1][0].lower() not in STOPWORDS
            ):
                run.append(nxt)
                j += 1
            else:
                break
            if words[j - 1][0] != nxt:  # the token carried a possessive: the name ends here
                break
        while len(run) > 1 and run[-1].lower() in _CONNECTORS:
            run.pop()
            j -= 1
        name = " ".join(run)
        previous = words[i - 1][0].lower().rstrip(".") if i > 0 else ""
        sentence_initial = i == 0
        if sentence_initial and len(run) == 1 and name not in mid_sentence_names:
            i = j
            continue
        if previous in _PERSON_TITLES:
            type_ = "PERSON"
        elif any(part.lower() in _ORG_WORDS for part in run):
            type_ = "ORGANIZATION"
        elif previous in _PLACE_PREPOSITIONS:
            type_ = "LOCATION"
        else:
            type_ = "ENTITY"
        if len(name) >= 2:
            mentions.append(_Mention(name, type_))
        i = j
    return mentions


def _mid_sentence_names(sentences: list[str]) -> set[str]:
    names = set()
    for sentence in sentences:
        words = [_clean_token(m.group(0)) for m in _WORD.finditer(sentence)]
        for word in words[1:]:
            if _is_capitalized(word):
                names.add(word)
    return names


_IDENTIFIER = re.compile(r"(?<![\w.-])([a-z][a-z0-9]*(?:[-_][a-z0-9]+)+|`[^`\s]{2,40}`)(?![\w-])")
_SERVICE_SUFFIXES = (
    "svc",
    "service",
    "api",
    "db",
    "worker",
    "bot",
    "app",
    "cli",
    "sdk",
    "v2",
    "v3",
)


def _identifiers(sentence: str, counts: Counter[str]) -> list[str]:
    """Lower-case technical names ("notifications-svc", "eta-v3", `tile_cache`): hyphenated or
    underscored tokens with a digit, a service-like suffix, or a repeat in the chunk; backticked
    code always. Ordinary hyphenations ("follow-up") are not repeated names."""
    out = []
    for match in _IDENTIFIER.finditer(sentence):
        token = match.group(1).strip("`")
        if match.group(1).startswith("`") or (
            any(c.isdigit() for c in token)
            or token.rsplit("-", 1)[-1].rsplit("_", 1)[-1] in _SERVICE_SUFFIXES
            or counts[token] >= 2
        ):
            out.append(token)
    return out


def _noun_phrases(sentences: list[str]) -> Counter[str]:
    """Repeated lower-case two-word phrases of content words: a cheap noun-phrase proxy."""
    counts: Counter[str] = Counter()
    for sentence in sentences:
        words = [m.group(0) for m in _WORD.finditer(sentence)]
        for a, b in pairwise(words):
            if (
                a.islower()
                and b.islower()
                and len(a) >= 4
                and len(b) >= 4
                and a not in STOPWORDS
                and b not in STOPWORDS
            ):
                counts[f"{a} {b}"] += 1
    return counts


class FastExtractor:
    # v2: no speaker entities or speaker relationships; names stop at punctuation.
    # v3: technical identifiers; speakers' short names.
    name = "fast-v3"

    async def extract(self, texts: Sequence[str]) -> list[Extraction | ExtractionFailure]:
        # CPU-bound: keep the event loop free.
        return list(await asyncio.to_thread(lambda: [self.extract_one(t) for t in texts]))

    def extract_one(self, text: str) -> Extraction:
        lines: list[tuple[str | None, str]] = []
        for raw in text.splitlines():
            match = _LINE.match(raw)
            if match and match.group("speaker") != _ARTIFACT_SPEAKER:
                lines.append((match.group("speaker").strip(), match.group("content")))
            elif match:
                lines.append((None, match.group("content")))
            else:
                lines.append((None, raw))

        all_sentences = [
            s for _, content in lines for s in _SENTENCE_SPLIT.split(content) if s.strip()
        ]
        mid_names = _mid_sentence_names(all_sentences)
        lower_words = {
            m.group(0) for s in all_sentences for m in _WORD.finditer(s) if m.group(0).islower()
        }
        phrases = {p for p, n in _noun_phrases(all_sentences).items() if n >= 2}
        identifier_counts: Counter[str] = Counter(
            m.group(1) for sentence in all_sentences for m in _IDENTIFIER.finditer(sentence)
        )
        # A lone name that is (a short form of) a speaker's name is a name: "Sam", "Mik".
        speaker_prefixes = {
            w.lower()[:3] for speaker, _ in lines if speaker for w in speaker.split() if len(w) > 2
        }
        name_counts: Counter[str] = Counter(
            m.name for s in all_sentences for m in _sentence_mentions(s, mid_names)
        )

        types: dict[str, Counter[str]] = defaultdict(Counter)
        display: dict[str, str] = {}
        descriptions: dict[str, str] = {}
        weights: Counter[tuple[str, str]] = Counter()
        rel_examples: dict[tuple[str, str], str] = {}

        # A name that is a speaker of the chunk is a person (they speak), wherever it is named.
        speaker_keys = {" ".join(speaker.lower().split()) for speaker, _ in lines if speaker}

        def note(name: str, type_: str, sentence: str) -> str:
            key = " ".join(name.lower().split())
            if key in speaker_keys:
                type_ = "PERSON"
            display.setdefault(key, name)
            types[key][type_] += 1
            descriptions.setdefault(key, excerpt(sentence, _DESCRIPTION_CHARS))
            return key

        def relate(a: str, b: str, example: str) -> None:
            if a == b:
                return
            pair = (a, b) if a < b else (b, a)
            weights[pair] += 1
            rel_examples.setdefault(pair, excerpt(example, _DESCRIPTION_CHARS))

        for _speaker, content in lines:
            for sentence in _SENTENCE_SPLIT.split(content):
                if not sentence.strip():
                    continue
                keys = {
                    note(m.name, m.type, sentence)
                    for m in (
                        _trimmed(m, lower_words) for m in _sentence_mentions(sentence, mid_names)
                    )
                    if m is not None
                    and (
                        _plausible(m, lower_words, name_counts)
                        or (" " not in m.name and m.name.lower()[:3] in speaker_prefixes)
                    )
                }
                lowered = sentence.lower()
                keys |= {note(p, "CONCEPT", sentence) for p in phrases if p in lowered}
                keys |= {
                    note(token, "TECHNOLOGY", sentence)
                    for token in _identifiers(sentence, identifier_counts)
                }
                for a, b in combinations(sorted(keys), 2):
                    relate(a, b, sentence)

        entities = [
            ExtractedEntity(
                name=display[key],
                type=_best_type(types[key]),
                description=descriptions[key],
            )
            for key in sorted(display)
        ]
        relationships = [
            ExtractedRelationship(
                source=display[a],
                target=display[b],
                description=f"{display[a]} and {display[b]} are mentioned together: "
                f"{rel_examples[(a, b)]}",
                weight=float(count),
            )
            for (a, b), count in sorted(weights.items())
        ]
        return Extraction(entities=entities, relationships=relationships)


def _trimmed(mention: _Mention, lower_words: set[str]) -> _Mention | None:
    """A run without its ordinary words at either end: verse and headings capitalize the first
    word of a line ("Tell Valeria", "Volsces held"), so a word the chunk also uses in lower
    case is not part of a name there."""
    words = mention.name.split()
    while len(words) > 1 and words[0].lower() in lower_words:
        words.pop(0)
    while len(words) > 1 and (words[-1].lower() in lower_words or words[-1].lower() in _CONNECTORS):
        words.pop()
    if len(words) == 1 and words[0].lower() in _CONNECTORS:
        return None
    if len(words) == len(mention.name.split()):
        return mention
    return _Mention(" ".join(words), mention.type)


def _plausible(mention: _Mention, lower_words: set[str], counts: Counter[str]) -> bool:
    """A lone capitalized word is a name only with support: a title or place cue, a repeat,
    and no lower-case use in the same chunk (verse and headings capitalize ordinary words)."""
    if " " in mention.name or mention.type != "ENTITY" or mention.name.isupper():
        return True
    if mention.name.lower() in lower_words:
        return False
    return counts[mention.name] >= 2


def _best_type(counts: Counter[str]) -> str:
    specific = {t: n for t, n in counts.items() if t != "ENTITY"}
    if specific:
        return max(sorted(specific), key=lambda t: specific[t])
    return "ENTITY"
