"""The lexical analyzer and BM25, in one place for every backend.

Retrieval terms are lower-cased words, minus a short English stopword list, stemmed with the
Snowball (Porter 2) English stemmer, so "postponed" finds "postpone". The same terms feed the
PostgreSQL postings (scored by :mod:`knowledge.stores.postings_cache`) and Qdrant's sparse
vectors (BM25 term-frequency part stored, IDF applied by Qdrant), and the in-process
:class:`BM25Index` used by tests and benchmarks; the two backends therefore rank alike.

The stopword list is deliberately short (Lucene's English list, pronouns and question words):
the extraction stoplist also drops names of months, "first", "last"… which matter to questions.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import snowballstemmer

#: Bumped whenever the terms a text yields change (stored fingerprints include it).
ANALYZER = "snowball-en-v1"

BM25_K1 = 1.2
BM25_B = 0.75

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)

RETRIEVAL_STOPWORDS = frozenset(
    """
a an and are as at be but by for if in into is it no not of on or such that the their then
there these they this to was will with i me my we our us you your he him his she her its them
what which who whom whose when where why how do does did done doing am been being have has had
having would could should can may might must shall about any all some so than too very just
also s t d ll re ve m o y ok okay oh yes yeah hi hey please thanks thank
""".split()
)

_stemmer = snowballstemmer.stemmer("english")


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    return str(_stemmer.stemWord(word))


def words(text: str) -> list[str]:
    """Lower-cased words, possessives folded ("cruz's" → "cruz")."""
    lowered = text.lower()
    if "'" not in lowered and "’" not in lowered:
        return _WORD.findall(lowered)  # no apostrophe, nothing to fold (most texts)
    out = []
    for match in _WORD.finditer(lowered):
        word = match.group(0).replace("’", "'")
        if word.endswith("'s"):
            word = word[:-2]
        out.append(word.replace("'", ""))
    return out


def analyze(text: str) -> list[str]:
    """The retrieval terms of a text, in order (duplicates kept: term frequency counts)."""
    return [_stem(w) for w in words(text) if w not in RETRIEVAL_STOPWORDS]


# Query time reads the same messages again and again (a question's candidates and their
# neighbouring turns, the next question's too); analysing them was the larger part of a local
# query's Python time. Bounded: a few thousand messages' terms.
@lru_cache(maxsize=20_000)
def analyzed(text: str) -> tuple[str, ...]:
    """:func:`analyze`, cached (a tuple: the cached value is shared)."""
    return tuple(analyze(text))


@lru_cache(maxsize=20_000)
def text_terms(text: str) -> frozenset[str]:
    """The distinct retrieval terms of a text, cached."""
    return frozenset(analyzed(text))


def term_frequencies(text: str) -> dict[str, int]:
    return dict(Counter(analyze(text)))


def bm25_idf(n_docs: int, doc_freq: int) -> float:
    """Lucene's (and Qdrant's) BM25 IDF: always positive."""
    return math.log(1.0 + (n_docs - doc_freq + 0.5) / (doc_freq + 0.5))


def bm25_tf(tf: float, doc_len: float, avg_len: float) -> float:
    """The saturated, length-normalised term-frequency part of BM25."""
    norm = 1.0 - BM25_B + BM25_B * (doc_len / avg_len if avg_len > 0 else 1.0)
    return tf * (BM25_K1 + 1.0) / (tf + BM25_K1 * norm)


@dataclass(frozen=True)
class ScoredDoc:
    index: int
    score: float


class BM25Index:
    """Okapi BM25 over a fixed list of documents, in memory.

    ``tokenize`` turns a text into terms; the default is :func:`analyze`. The benchmark's
    baseline passes a plain lower-case word splitter instead.
    """

    def __init__(
        self, documents: Sequence[str], tokenize: Callable[[str], list[str]] = analyze
    ) -> None:
        self._tokenize = tokenize
        self.docs = [Counter(self._tokenize(d)) for d in documents]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.avg_len = (sum(self.lengths) / len(self.lengths)) if self.lengths else 0.0
        self.postings: dict[str, list[int]] = {}
        for i, doc in enumerate(self.docs):
            for term in doc:
                self.postings.setdefault(term, []).append(i)

    def search(
        self, query: str, limit: int, allowed: Iterable[int] | None = None
    ) -> list[ScoredDoc]:
        allow = set(allowed) if allowed is not None else None
        scores: dict[int, float] = {}
        n = len(self.docs)
        for term in set(self._tokenize(query)):
            postings = self.postings.get(term)
            if not postings:
                continue
            idf = bm25_idf(n, len(postings))
            for i in postings:
                if allow is not None and i not in allow:
                    continue
                scores[i] = scores.get(i, 0.0) + idf * bm25_tf(
                    self.docs[i][term], self.lengths[i], self.avg_len
                )
        ranked = sorted(scores.items(), key=lambda s: (-s[1], s[0]))[:limit]
        return [ScoredDoc(i, s) for i, s in ranked]
