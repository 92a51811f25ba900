"""The postings cache's bounds: least recently used terms go first, a term larger than the whole
budget is used once and not kept, and a room's point codes go with its last cached term."""

from __future__ import annotations

import numpy as np

from knowledge.stores.postings_cache import PostingsCache, bm25_top


def put(cache: PostingsCache, room: str, term: str, ids: list[str], version: int = 1) -> None:
    ones = np.ones(len(ids), dtype=np.int32)
    cache.put("evidence", room, term, version, ids, ones, ones * 4)


def test_least_recently_used_terms_leave_first_within_the_budget() -> None:
    cache = PostingsCache(budget=5)
    put(cache, "r", "alpha", ["m:1", "m:2"])
    put(cache, "r", "beta", ["m:1", "m:3"])
    assert cache.stale("evidence", "r", {"alpha": 1}) == []  # alpha used last
    put(cache, "r", "gamma", ["m:4", "m:5"])  # over the budget: beta leaves
    assert cache.size == 4
    assert cache.stale("evidence", "r", {"alpha": 1, "beta": 1, "gamma": 1}) == ["beta"]
    # Another version of a cached term is stale, as is another room's.
    assert cache.stale("evidence", "r", {"alpha": 2}) == ["alpha"]
    assert cache.stale("evidence", "other", {"alpha": 1}) == ["alpha"]
    assert cache.postings_read == 6


def test_a_term_larger_than_the_budget_is_scored_but_not_kept() -> None:
    cache = PostingsCache(budget=3)
    ids = [f"m:{i}" for i in range(5)]
    ones = np.ones(5, dtype=np.int32)
    postings = cache.put("evidence", "r", "huge", 7, ids, ones, ones * 4)
    assert cache.size == 0 and cache.get("evidence", "r", "huge") is None
    points = cache.points("evidence", "r")
    top = bm25_top([["huge"]], {"huge": postings}, {"huge": 1.0}, 4.0, points, 2)
    assert top == [[("m:0", 1.0), ("m:1", 1.0)]]  # equal scores: by point id


def test_a_rooms_point_codes_go_with_its_last_cached_term() -> None:
    cache = PostingsCache(budget=4)
    put(cache, "r1", "alpha", ["m:1", "m:2"])
    put(cache, "r2", "beta", ["m:7", "m:8"])
    put(cache, "r2", "gamma", ["m:9", "m:7"])  # r1's only term leaves, and its codes with it
    assert cache.get("evidence", "r1", "alpha") is None
    assert cache.points("evidence", "r1").ids == []
    assert cache.points("evidence", "r2").ids == ["m:7", "m:8", "m:9"]
