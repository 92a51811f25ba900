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
    assert cache.lookup("evidence", "r", {"alpha": 1})[1] == []  # alpha used last
    put(cache, "r", "gamma", ["m:4", "m:5"])  # over the budget: beta leaves
    assert cache.size == 4
    assert cache.lookup("evidence", "r", {"alpha": 1, "beta": 1, "gamma": 1})[1] == ["beta"]
    # Another version of a cached term is stale, as is another room's.
    assert cache.lookup("evidence", "r", {"alpha": 2})[1] == ["alpha"]
    assert cache.lookup("evidence", "other", {"alpha": 1})[1] == ["alpha"]
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


def test_postings_whose_room_codes_went_meanwhile_still_score_their_own_points() -> None:
    """Queries interleave (the API answers several at once): while one waits for the postings
    it must read, another's reads can evict every cached term of its room, and the room's codes
    with them; a term re-read at a new version can drop its room's last term too. The query
    must still score each posting as the point it was read for."""
    cache = PostingsCache(budget=4)
    put(cache, "r", "alpha", ["m:1", "m:2"])
    found, stale = cache.lookup("evidence", "r", {"alpha": 1, "beta": 1})
    assert list(found) == ["alpha"] and stale == ["beta"]
    put(cache, "other", "x", ["m:8", "m:9", "m:10"])  # evicts alpha: room r's codes go
    ones = np.ones(1, dtype=np.int32)
    found["beta"] = cache.put("evidence", "r", "beta", 1, ["m:3"], ones, ones * 4)
    points, postings = cache.aligned("evidence", "r", found)
    idf = {"alpha": 1.0, "beta": 2.0}
    top = bm25_top([["alpha", "beta"]], postings, idf, 4.0, points, 10)
    assert [pid for pid, _ in top[0]] == ["m:3", "m:1", "m:2"]

    # A new version of a room's only cached term.
    cache = PostingsCache(budget=10)
    put(cache, "r", "alpha", ["m:1", "m:2"], version=1)
    newer = cache.put("evidence", "r", "alpha", 2, ["m:2", "m:5"], ones.repeat(2), ones * 4)
    points, postings = cache.aligned("evidence", "r", {"alpha": newer})
    top = bm25_top([["alpha"]], postings, idf, 4.0, points, 10)
    assert [pid for pid, _ in top[0]] == ["m:2", "m:5"]
