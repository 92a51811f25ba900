"""Okapi BM25 over postings kept in memory, for the PostgreSQL vector store's lexical search.

Summing postings in SQL cost about 5 µs a posting (index reads, hash aggregates, sorts): a
question with one common term took 30–90 ms in a room of 100k messages, and the graph
generator's expanded queries 100–350 ms. The store keeps here the postings of the terms it has
scored, as arrays, and reads a term's postings again only when the term's version
(``lexical_terms.version``, new from one sequence with every change of its postings) differs
from the cached one; the statistics row a query reads anyway carries it. So a query reads one
row per term, and a refresh makes the next query read again only the terms it wrote.

Scores are Okapi BM25 (``idf × tf × (k1 + 1) / (tf + k1 × (1 − b + b × len / avg_len))``, per
posting in float64, as the SQL statements this replaced computed them); ties are broken by
point id in code-point order, as their ``ORDER BY score DESC, point_id`` under the database's
``C`` collation did.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from knowledge.lexical import BM25_B, BM25_K1

#: Postings kept per process by default (12 bytes each: point code, tf and length as int32; the
#: point ids' strings once per room besides): a room of 100k messages has about 1.2 million.
DEFAULT_BUDGET = 4_000_000


class RoomPoints:
    """The point ids of one room's collection, each given a small integer code once."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.codes: dict[str, int] = {}
        self.terms = 0  # cached terms using these codes

    def intern(self, ids: Sequence[str]) -> NDArray[np.int32]:
        codes, known = self.codes, self.ids
        out = np.empty(len(ids), dtype=np.int32)
        for i, pid in enumerate(ids):
            code = codes.get(pid)
            if code is None:
                code = codes[pid] = len(known)
                known.append(pid)
            out[i] = code
        return out


@dataclass(frozen=True)
class TermPostings:
    version: int
    #: The point codes these postings are in (the room's when they were read).
    points: RoomPoints
    #: Codes of the points, one per posting; unique within a term.
    codes: NDArray[np.int32]
    tf: NDArray[np.int32]
    doc_len: NDArray[np.int32]

    @property
    def size(self) -> int:
        return int(self.codes.size)


class PostingsCache:
    """LRU of terms' postings by (collection, room, term), bounded by their total count."""

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        self.budget = budget
        self.size = 0
        self._terms: OrderedDict[tuple[str, str, str], TermPostings] = OrderedDict()
        self._rooms: dict[tuple[str, str], RoomPoints] = {}
        #: Postings read from the database so far (what the cache saves is visible in tests).
        self.postings_read = 0

    def lookup(
        self, collection: str, room_id: str, versions: dict[str, int]
    ) -> tuple[dict[str, TermPostings], list[str]]:
        """The cached postings of the terms at these versions (now the most recently used),
        and the other terms, sorted: those to read."""
        found: dict[str, TermPostings] = {}
        stale = []
        for term, version in versions.items():
            key = (collection, room_id, term)
            cached = self._terms.get(key)
            if cached is None or cached.version != version:
                stale.append(term)
            else:
                self._terms.move_to_end(key)
                found[term] = cached
        return found, sorted(stale)

    def get(self, collection: str, room_id: str, term: str) -> TermPostings | None:
        return self._terms.get((collection, room_id, term))

    def points(self, collection: str, room_id: str) -> RoomPoints:
        return self._rooms.setdefault((collection, room_id), RoomPoints())

    def aligned(
        self, collection: str, room_id: str, postings: dict[str, TermPostings]
    ) -> tuple[RoomPoints, dict[str, TermPostings]]:
        """The room's point codes, and ``postings`` all in them: a query's postings can be in
        codes the room no longer has (every term of the room was evicted, by this query's
        reads or another's, while it waited), and are then coded again (a rare copy)."""
        points = self.points(collection, room_id)
        out = {
            term: p
            if p.points is points
            else replace(p, points=points, codes=points.intern([p.points.ids[c] for c in p.codes]))
            for term, p in postings.items()
        }
        return points, out

    def put(
        self,
        collection: str,
        room_id: str,
        term: str,
        version: int,
        point_ids: Sequence[str],
        tf: NDArray[np.int32],
        doc_len: NDArray[np.int32],
    ) -> TermPostings:
        """Cache a term's postings (read in one statement with ``version``); returned even when
        larger than the whole budget, which keeps it for this query only."""
        self.postings_read += len(point_ids)
        key = (collection, room_id, term)
        self._drop(key)  # first: the old version may be its room's last term, codes and all
        points = self.points(collection, room_id)
        postings = TermPostings(version, points, points.intern(point_ids), tf, doc_len)
        if postings.size <= self.budget:
            self._terms[key] = postings
            self.size += postings.size
            points.terms += 1
            while self.size > self.budget:
                self._drop(next(iter(self._terms)))
        return postings

    def _drop(self, key: tuple[str, str, str]) -> None:
        old = self._terms.pop(key, None)
        if old is None:
            return
        self.size -= old.size
        old.points.terms -= 1
        # No cached term uses the room's codes: they go with the last one.
        if old.points.terms <= 0 and self._rooms.get(key[:2]) is old.points:
            del self._rooms[key[:2]]


def bm25_top(
    queries: Sequence[Sequence[str]],
    postings: dict[str, TermPostings],
    idf: dict[str, float],
    avg_len: float,
    points: RoomPoints,
    limit: int,
    allowed: Collection[str] | None = None,
) -> list[list[tuple[str, float]]]:
    """Each query's best ``limit`` points by Okapi BM25 (score, then point id), among the
    ``allowed`` point ids when given; ``postings`` are coded in ``points``
    (:meth:`PostingsCache.aligned`)."""
    n_points = len(points.ids)
    mask: NDArray[np.bool_] | None = None
    if allowed is not None:
        mask = np.zeros(n_points, dtype=bool)
        codes = [c for pid in allowed if (c := points.codes.get(pid)) is not None]
        mask[np.asarray(codes, dtype=np.int64)] = True
    weights: dict[str, NDArray[np.float64]] = {}
    out: list[list[tuple[str, float]]] = []
    for terms in queries:
        present = sorted({t for t in terms if t in postings and t in idf})
        if not present:
            out.append([])
            continue
        scores = np.zeros(n_points, dtype=np.float64)
        touched = np.zeros(n_points, dtype=bool)
        for term in present:
            p = postings[term]
            w = weights.get(term)
            if w is None:
                # Operation by operation as in the docstring (int32 widens to float64 exactly).
                w = weights[term] = (
                    idf[term]
                    * p.tf
                    * (BM25_K1 + 1)
                    / (p.tf + BM25_K1 * (1 - BM25_B + BM25_B * p.doc_len / avg_len))
                )
            scores[p.codes] += w  # codes are unique within a term
            touched[p.codes] = True
        if mask is not None:
            touched &= mask
        candidates = np.flatnonzero(touched)
        if candidates.size > limit:
            # Everything scoring at least the limit-th best (ties at the cut included), then
            # ordered exactly.
            cut = np.partition(scores[candidates], candidates.size - limit)[candidates.size - limit]
            candidates = candidates[scores[candidates] >= cut]
        ranked = sorted(
            ((points.ids[c], float(scores[c])) for c in candidates.tolist()),
            key=lambda hit: (-hit[1], hit[0]),
        )
        out.append(ranked[:limit])
    return out
