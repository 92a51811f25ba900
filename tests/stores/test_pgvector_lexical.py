"""BM25 on pgvector: the statistics the writes keep equal a recount, and the scores are exact.

``lexical_rooms`` and ``lexical_terms`` are kept by ``upsert`` and ``delete`` in the
transaction that changes the postings, so a query reads one row per term instead of counting
(O(room) per query). After every step of a random sequence of inserts, rewrites and deletes,
they must equal a recount from the points and postings, and the scores of ``search_lexical``
must equal an in-memory Okapi BM25 over the room's live texts, for the writer and for a reader
whose cached postings the writes made stale.
"""

from __future__ import annotations

import random
import uuid

import pytest
from sqlalchemy import text

from knowledge.embeddings import HashingEmbedder
from knowledge.lexical import BM25Index, analyze
from knowledge.platform import Platform
from knowledge.stores.base import EVIDENCE, PointFilter, VectorRecord
from knowledge.stores.pgvector_store import PgVectorStore

DIM = 64
EMBEDDER = HashingEmbedder(DIM)
VOCABULARY = (
    "standup launch budget review venue catering zeppelin harbour invoice sprint deploy "
    "rollback outage pager roadmap"
).split()


SPEAKERS = ("Ann", "Bob", "Cy")


def point(pid: str, body: str) -> VectorRecord:
    # The speaker and time follow from the text, so a rewrite may move a point between them.
    speaker = SPEAKERS[len(body) % 3]
    return VectorRecord(
        pid,
        body,
        EMBEDDER.embed_one(body),
        {"kind": "message", "speaker": speaker, "ts": len(body)},
    )


async def stored_statistics(platform: Platform, room: str) -> tuple[object, object]:
    """The statistics the writes kept, and the same counted from the points and postings."""
    async with platform.engine.connect() as conn:

        async def rows(sql: str) -> list[tuple[object, ...]]:
            result = await conn.execute(text(sql), {"c": EVIDENCE, "r": room})
            return [tuple(row) for row in result]

        where = "WHERE collection = :c AND room_id = :r"
        kept_room = await rows(f"SELECT n_docs, total_terms FROM lexical_rooms {where}")
        kept_df = dict(await rows(f"SELECT term, df FROM lexical_terms {where}"))
        counted_room = await rows(
            f"SELECT count(*), coalesce(sum(n_terms), 0) FROM vector_points {where}"
        )
        counted_df = dict(
            await rows(f"SELECT term, count(*) FROM lexical_postings {where} GROUP BY term")
        )
    return (kept_room[0] if kept_room else (0, 0), kept_df), (counted_room[0], counted_df)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_statistics_follow_every_write_and_scores_are_exact(
    platform: Platform, seed: int
) -> None:
    rng = random.Random(seed)
    store, reader = PgVectorStore(platform.engine), PgVectorStore(platform.engine)
    await store.ensure_collection(EVIDENCE, DIM)
    room, neighbour = f"room-{uuid.uuid4().hex[:12]}", f"room-{uuid.uuid4().hex[:12]}"
    # Another room's points share every term: they must count for neither statistic.
    await store.upsert(EVIDENCE, neighbour, [point("m:1", " ".join(VOCABULARY))])
    live: dict[str, str] = {}
    for step in range(12):
        action = rng.random()
        if action < 0.3 and live:
            gone = rng.sample(sorted(live), k=min(len(live), rng.randint(1, 3)))
            await store.delete(EVIDENCE, room, [*gone, "m:never-written"])
            for pid in gone:
                del live[pid]
        else:
            batch = {}
            for _ in range(rng.randint(1, 6)):
                # New ids and rewrites of live ones (their old postings must stop counting).
                pid = rng.choice(sorted(live)) if live and rng.random() < 0.4 else f"m:{step}-{_}"
                words = rng.choices(VOCABULARY, k=rng.randint(1, 9))
                batch[pid] = " ".join(words)
            await store.upsert(EVIDENCE, room, [point(p, b) for p, b in batch.items()])
            live.update(batch)
        kept, counted = await stored_statistics(platform, room)
        assert kept == counted, f"step {step}"

        index = BM25Index(list(live.values()))
        pids = list(live)
        for query in ("standup budget", "zeppelin harbour invoice", "deploy rollback outage"):
            expected = {pids[d.index]: d.score for d in index.search(query, 50)}
            # The writer's own cache, and another process's (the API's) that only reads.
            for searcher in (store, reader):
                hits = await searcher.search_lexical(EVIDENCE, room, analyze(query), 50)
                assert {h.id for h in hits} == set(expected), (step, query)
                for hit in hits:
                    assert hit.score == pytest.approx(expected[hit.id], rel=1e-6), (step, query)
        # Filtered: BM25 of the room, over the points the filter allows.
        texts = list(live.values())
        where = PointFilter(speakers=("Ann", "Cy"), since=20.0)
        allowed = [
            i for i, t in enumerate(texts) if SPEAKERS[len(t) % 3] in ("Ann", "Cy") and len(t) >= 20
        ]
        expected = {pids[d.index]: d.score for d in index.search("standup budget", 50, allowed)}
        hits = await store.search_lexical(EVIDENCE, room, analyze("standup budget"), 50, where)
        assert {h.id: round(h.score, 6) for h in hits} == {
            pid: round(score, 6) for pid, score in expected.items()
        }, step
        # Many queries at once (sharing the question's terms, each with a name of its own, as
        # the graph generator asks them): each exactly as BM25 ranks it alone, to the limit.
        queries = ["standup budget deploy", "standup budget deploy harbour", "standup pager"]
        batch = await store.search_lexical_many(EVIDENCE, room, [analyze(q) for q in queries], 4)
        for query, hits in zip(queries, batch, strict=True):
            expected = [(pids[d.index], d.score) for d in index.search(query, 50)]
            assert [h.score for h in hits] == pytest.approx([s for _, s in expected[:4]])
            cut = expected[min(4, len(expected)) - 1][1] if expected else 0.0
            # Points tied at the cut may be either; every other one is where BM25 puts it.
            above = {pid for pid, score in expected if score > cut + 1e-9}
            assert above <= {h.id for h in hits}, (step, query)
        n, frequencies = await store.term_stats(EVIDENCE, room, analyze("standup zeppelin"))
        assert n == len(live)
        assert frequencies == {
            t: len(index.postings[t]) for t in ("standup", "zeppelin") if t in index.postings
        }

    removed = await store.wipe_room(room)
    assert removed["postgres:lexical_rooms"] == 1
    kept, counted = await stored_statistics(platform, room)
    assert kept == counted == ((0, 0), {})


@pytest.mark.parametrize("seed", [4, 5])
async def test_common_terms_rank_exactly_with_and_without_a_filter(
    platform: Platform, seed: int
) -> None:
    """Zipf-like terms (one in most points, others rarer and rarer): the ranking must be Okapi
    BM25's, exactly, with and without a filter, for limits below and above the rare terms'
    postings."""
    rng = random.Random(seed)
    store = PgVectorStore(platform.engine)
    await store.ensure_collection(EVIDENCE, DIM)
    room = f"room-{uuid.uuid4().hex[:12]}"
    shares = {"project": 0.95, "status": 0.5, "review": 0.2, "budget": 0.05, "zeppelin": 0.03}
    filler = "alpha beta gamma delta epsilon".split()
    texts = {}
    for i in range(400):
        body = [w for w, share in shares.items() if rng.random() < share]
        body += rng.choices(filler, k=rng.randint(0, 12))
        rng.shuffle(body)
        texts[f"m:{i}"] = " ".join(body)
    await store.upsert(EVIDENCE, room, [point(p, b) for p, b in texts.items()])
    index = BM25Index(list(texts.values()))
    pids = list(texts)
    queries = [
        "zeppelin budget project",
        "zeppelin budget status project",
        "zeppelin review project alpha",
        "budget project",
        "zeppelin project status",
    ]
    allowed_rows = [i for i, t in enumerate(texts.values()) if SPEAKERS[len(t) % 3] != "Bob"]
    for limit in (1, 3, 10, 40):
        for where, allowed in ((None, None), (PointFilter(speakers=("Ann", "Cy")), allowed_rows)):
            batch = await store.search_lexical_many(
                EVIDENCE, room, [analyze(q) for q in queries], limit, where
            )
            for query, hits in zip(queries, batch, strict=True):
                ranked = index.search(query, len(texts), allowed)
                expected = [(pids[d.index], d.score) for d in ranked]
                assert [h.score for h in hits] == pytest.approx(
                    [s for _, s in expected[:limit]], rel=1e-9
                ), (limit, query, where)
                cut = expected[min(limit, len(expected)) - 1][1]
                above = {pid for pid, score in expected if score > cut + 1e-9}
                assert above <= {h.id for h in hits}, (limit, query, where)


async def test_a_search_reads_again_only_the_postings_a_write_changed(platform: Platform) -> None:
    """A reader keeps the postings it scored and reads a term's again only when a write gave the
    term a new version: a new point, a rewrite that keeps the term with another frequency (its
    count unchanged), a delete. Counted reads, and the scores stay BM25's."""
    writer, reader = PgVectorStore(platform.engine), PgVectorStore(platform.engine)
    await writer.ensure_collection(EVIDENCE, DIM)
    room = f"room-{uuid.uuid4().hex[:12]}"
    texts = {f"m:{i}": "project " + ("budget " if i < 10 else "") for i in range(50)}
    texts |= {"m:0": "project budget zeppelin", "m:1": "project budget zeppelin outage"}
    await writer.upsert(EVIDENCE, room, [point(p, b) for p, b in texts.items()])
    query = analyze("project budget zeppelin")

    async def search_and_count() -> int:
        before = reader._cache.postings_read
        hits = await reader.search_lexical(EVIDENCE, room, query, 60)
        index = BM25Index(list(texts.values()))
        pids = list(texts)
        expected = {pids[d.index]: d.score for d in index.search("project budget zeppelin", 60)}
        assert {h.id: round(h.score, 9) for h in hits} == {
            pid: round(score, 9) for pid, score in expected.items()
        }
        return reader._cache.postings_read - before

    assert await search_and_count() == 50 + 10 + 2  # every posting of the three terms, once
    assert await search_and_count() == 0
    # A new point with one of the terms: that term's postings only.
    texts["m:new"] = "zeppelin launch"
    await writer.upsert(EVIDENCE, room, [point("m:new", texts["m:new"])])
    assert await search_and_count() == 3
    # A rewrite that keeps "budget" (and its count) with another frequency and length.
    texts["m:5"] = "project budget budget"
    await writer.upsert(EVIDENCE, room, [point("m:5", texts["m:5"])])
    assert await search_and_count() == 50 + 10
    del texts["m:1"]
    await writer.delete(EVIDENCE, room, ["m:1"])
    assert await search_and_count() == 49 + 9 + 2
    # Another room with the same terms shares nothing with this one's cache.
    other = f"room-{uuid.uuid4().hex[:12]}"
    await writer.upsert(EVIDENCE, other, [point("m:0", "project budget zeppelin")])
    hits = await reader.search_lexical(EVIDENCE, other, query, 60)
    assert [h.id for h in hits] == ["m:0"]
