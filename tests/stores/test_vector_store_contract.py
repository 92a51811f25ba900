"""One contract for every VectorStore: same inputs, same expected results.

Implementations: pgvector on the real embedded PostgreSQL (the conftest ``platform`` engine) and
Qdrant: the real server of the run (``COAGENT_TEST_QDRANT_URL``, started by `make test`), each
test under a collection prefix of its own, or qdrant-client's local mode in a temporary folder
where no server is given (outside CI). Vectors come from the offline HashingEmbedder, so
everything is deterministic.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from knowledge.embeddings import HashingEmbedder
from knowledge.lexical import analyze
from knowledge.platform import Platform
from knowledge.stores.base import (
    CHUNKS,
    COMMUNITIES,
    ENTITIES,
    EVIDENCE,
    PointFilter,
    VectorHit,
    VectorRecord,
    VectorStore,
)
from knowledge.stores.pgvector_store import PgVectorStore
from knowledge.stores.qdrant_store import QdrantVectorStore
from tests.conftest import open_qdrant_store

DIM = 256
EMBEDDER = HashingEmbedder(DIM)

# Each text has words no other text has, so the best match of a query is obvious.
CORPUS = {
    "c-senate": "The senators of Rome debate the price of grain in the capitol.",
    "c-fable": "Menenius tells the hungry citizens the fable of the belly and the members.",
    "c-battle": "Marcius storms the gates of Corioli alone and fights the Volscian army.",
    "c-banish": "The tribunes Sicinius and Brutus banish Coriolanus from the city.",
    "c-mother": "Volumnia kneels before her son and begs him to spare Rome from ruin.",
    "c-treaty": "Aufidius signs a peace treaty with the Volsces after the long war.",
}


def records(corpus: dict[str, str], **extra: object) -> list[VectorRecord]:
    return [
        VectorRecord(
            id=pid,
            text=text,
            vector=EMBEDDER.embed_one(text),
            payload={"fingerprint": f"fp-{pid}", "message_ids": [1, 2], **extra},
        )
        for pid, text in corpus.items()
    ]


def new_room() -> str:
    return f"room-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["pgvector", "qdrant"])
async def store(
    request: pytest.FixtureRequest, platform: Platform, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[VectorStore]:
    if request.param == "pgvector":
        yield PgVectorStore(platform.engine)
        return
    # Asked for here only, so that the pgvector half needs no Qdrant server.
    url = request.getfixturevalue("qdrant_url")
    async with open_qdrant_store(url, tmp_path_factory) as qdrant:
        # Small batches and pages, so a few hundred points exercise both loops.
        qdrant.batch_size = qdrant.scroll_page = 100
        yield qdrant


@pytest.fixture
async def room(store: VectorStore) -> str:
    for collection in (CHUNKS, ENTITIES):
        await store.ensure_collection(collection, DIM)
    room_id = new_room()
    await store.upsert(CHUNKS, room_id, records(CORPUS))
    return room_id


# --- writes -------------------------------------------------------------------------------------


async def test_upsert_count_and_fingerprints(store: VectorStore, room: str) -> None:
    assert await store.count(CHUNKS, room) == len(CORPUS)
    assert await store.fingerprints(CHUNKS, room) == {pid: f"fp-{pid}" for pid in CORPUS}
    # Other collections of the same room are separate.
    assert await store.count(ENTITIES, room) == 0


async def test_missing_fingerprint_reads_as_empty(store: VectorStore) -> None:
    await store.ensure_collection(ENTITIES, DIM)
    room = new_room()
    await store.upsert(ENTITIES, room, [VectorRecord("x", "x", EMBEDDER.embed_one("x"))])
    assert await store.fingerprints(ENTITIES, room) == {"x": ""}


async def test_upsert_twice_is_idempotent(store: VectorStore, room: str) -> None:
    await store.upsert(CHUNKS, room, records(CORPUS))
    await store.ensure_collection(CHUNKS, DIM)
    assert await store.count(CHUNKS, room) == len(CORPUS)
    assert await store.fingerprints(CHUNKS, room) == {pid: f"fp-{pid}" for pid in CORPUS}


async def test_upsert_replaces_a_point(store: VectorStore, room: str) -> None:
    text = "Valeria visits Virgilia and talks of sewing and the young boy."
    await store.upsert(
        CHUNKS,
        room,
        [VectorRecord("c-fable", text, EMBEDDER.embed_one(text), {"fingerprint": "new"})],
    )
    assert await store.count(CHUNKS, room) == len(CORPUS)
    assert (await store.fingerprints(CHUNKS, room))["c-fable"] == "new"
    hits = await store.search(CHUNKS, room, "sewing", EMBEDDER.embed_one(text), 3)
    assert hits[0].id == "c-fable"
    assert hits[0].text == text
    assert hits[0].payload == {"fingerprint": "new"}
    # The old text is gone from both the lexical and the dense index.
    hits = await store.search(CHUNKS, room, "belly", EMBEDDER.embed_one("fable belly"), 6)
    assert all("belly" not in h.text for h in hits)


async def test_batched_upsert_and_paged_reads(store: VectorStore) -> None:
    await store.ensure_collection(ENTITIES, DIM)
    room = new_room()
    many = {f"e-{i:04d}": f"entity number {i} of the crowd" for i in range(300)}
    await store.upsert(ENTITIES, room, records(many))
    assert await store.count(ENTITIES, room) == len(many)
    fingerprints = await store.fingerprints(ENTITIES, room)
    assert fingerprints == {pid: f"fp-{pid}" for pid in many}


async def test_delete(store: VectorStore, room: str) -> None:
    await store.delete(CHUNKS, room, ["c-senate", "c-battle", "no-such-point"])
    await store.delete(CHUNKS, room, [])
    assert await store.count(CHUNKS, room) == len(CORPUS) - 2
    assert set(await store.fingerprints(CHUNKS, room)) == set(CORPUS) - {"c-senate", "c-battle"}
    hits = await store.search(CHUNKS, room, "corioli gates", EMBEDDER.embed_one("corioli"), 10)
    assert "c-battle" not in {h.id for h in hits}


# --- search -------------------------------------------------------------------------------------


async def test_lexical_query_finds_the_best_match_first(store: VectorStore, room: str) -> None:
    # The dense vector carries no signal (an unrelated text): the words must do the work.
    noise = EMBEDDER.embed_one("quantum chromodynamics lattice")
    for query, expected in [
        ("belly", "c-fable"),
        ("Who signs the treaty?", "c-treaty"),
        ("tribunes banish", "c-banish"),
    ]:
        hits = await store.search(CHUNKS, room, query, noise, 3)
        assert hits[0].id == expected, (query, [h.id for h in hits])


async def test_dense_query_finds_the_best_match_first(store: VectorStore, room: str) -> None:
    # No query text: only the dense ranking counts.
    for query, expected in [
        ("Volumnia kneels before her son to spare Rome", "c-mother"),
        ("senators debate the price of grain", "c-senate"),
    ]:
        hits = await store.search(CHUNKS, room, "", EMBEDDER.embed_one(query), 3)
        assert hits[0].id == expected, (query, [h.id for h in hits])


async def test_hybrid_hits_carry_text_payload_and_ordered_scores(
    store: VectorStore, room: str
) -> None:
    query = "Marcius fights at Corioli"
    hits = await store.search(CHUNKS, room, query, EMBEDDER.embed_one(query), 4)
    assert len(hits) == 4
    assert len({h.id for h in hits}) == 4
    best = hits[0]
    assert best.id == "c-battle"
    assert best.text == CORPUS["c-battle"]
    # The payload as written, nothing the store adds for itself.
    assert best.payload == {"fingerprint": "fp-c-battle", "message_ids": [1, 2]}
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] > scores[-1]


async def test_search_ties_go_by_text_not_by_id(store: VectorStore) -> None:
    # Three points the query matches equally, by words and by vector, with ids in the opposite
    # order of their texts. Ids of communities and chunks hash the room id, so a tie broken by
    # id would rank the same content differently in another room (the golden-set bench moved
    # between runs so).
    room = new_room()
    await store.ensure_collection(COMMUNITIES, DIM)
    tied = {"p-z": "grain alpha", "p-m": "grain betas", "p-a": "grain gamma"}
    await store.upsert(COMMUNITIES, room, records(tied))
    hits = await store.search(COMMUNITIES, room, "grain", EMBEDDER.embed_one("grain"), 3)
    assert [h.id for h in hits] == ["p-z", "p-m", "p-a"]


async def test_search_limit(store: VectorStore, room: str) -> None:
    vector = EMBEDDER.embed_one("Rome")
    assert len(await store.search(CHUNKS, room, "Rome", vector, 2)) == 2
    assert len(await store.search(CHUNKS, room, "Rome", vector, 50)) == len(CORPUS)


async def test_empty_room_and_unwritten_collection(store: VectorStore) -> None:
    room = new_room()
    await store.ensure_collection(CHUNKS, DIM)
    vector = EMBEDDER.embed_one("Rome")
    assert await store.count(CHUNKS, room) == 0
    assert await store.fingerprints(CHUNKS, room) == {}
    assert await store.search(CHUNKS, room, "Rome", vector, 5) == []
    # A collection nothing was ever written to (room_state reads all three).
    assert await store.count(COMMUNITIES, room) == 0
    assert await store.fingerprints(COMMUNITIES, room) == {}
    assert await store.search(COMMUNITIES, room, "Rome", vector, 5) == []
    await store.delete(COMMUNITIES, room, ["x"])
    await store.wipe_room(room)


# --- rooms --------------------------------------------------------------------------------------


async def test_rooms_are_isolated(store: VectorStore, room: str) -> None:
    other = new_room()
    # The same ids with other texts: entity names, for one, repeat across rooms.
    other_corpus = {
        "c-senate": "Pirates raid the harbour of Tyre at midnight.",
        "c-extra": "The harbour master counts the pirate ships of Tyre.",
    }
    await store.upsert(CHUNKS, other, records(other_corpus))
    assert await store.count(CHUNKS, room) == len(CORPUS)
    assert await store.count(CHUNKS, other) == len(other_corpus)
    assert (await store.fingerprints(CHUNKS, other)).keys() == other_corpus.keys()

    # A query that only matches the other room's texts finds none of them here.
    query = "pirates harbour Tyre"
    hits = await store.search(CHUNKS, room, query, EMBEDDER.embed_one(query), 20)
    assert {h.text for h in hits} <= set(CORPUS.values())
    assert len(hits) == len(CORPUS)
    hits = await store.search(CHUNKS, other, query, EMBEDDER.embed_one(query), 20)
    assert {h.text for h in hits} == set(other_corpus.values())

    # Deleting an id in one room leaves the point with the same id in the other.
    await store.delete(CHUNKS, other, ["c-senate"])
    assert "c-senate" in await store.fingerprints(CHUNKS, room)
    assert await store.count(CHUNKS, other) == 1


async def test_wipe_room_removes_every_collection_of_that_room_only(
    store: VectorStore, room: str
) -> None:
    other = new_room()
    await store.upsert(ENTITIES, room, records({"rome": "Rome (PLACE): the city"}))
    await store.upsert(CHUNKS, other, records(CORPUS))
    await store.upsert(ENTITIES, other, records({"rome": "Rome (PLACE): the city"}))

    removed = await store.wipe_room(room)
    # Points per collection (Qdrant) or in the one points table (pgvector, beside its postings).
    points = {k: v for k, v in removed.items() if k.startswith("qdrant:")}
    points = points or {"postgres:vector_points": removed["postgres:vector_points"]}
    assert sum(points.values()) == len(CORPUS) + 1, removed
    again = await store.wipe_room(room)
    assert again.keys() == removed.keys() and set(again.values()) == {0}

    for collection in (CHUNKS, ENTITIES):
        assert await store.count(collection, room) == 0
        assert await store.fingerprints(collection, room) == {}
    vector = EMBEDDER.embed_one("Rome")
    assert await store.search(CHUNKS, room, "Rome", vector, 5) == []
    assert await store.count(CHUNKS, other) == len(CORPUS)
    assert await store.count(ENTITIES, other) == 1
    assert (await store.search(ENTITIES, other, "Rome", vector, 5))[0].id == "rome"


async def test_dense_search_in_a_small_room_among_many_points(store: VectorStore) -> None:
    """Room filtering must not cost recall: a busy neighbour with near-identical vectors must
    not push a small room's points out of its own dense ranking."""
    await store.ensure_collection(COMMUNITIES, DIM)
    busy, small = new_room(), new_room()
    crowd = {f"n-{i:04d}": f"Volumnia kneels before her son, scene {i}" for i in range(200)}
    await store.upsert(COMMUNITIES, busy, records(crowd))
    await store.upsert(COMMUNITIES, small, records(CORPUS))
    query = "Volumnia kneels before her son"
    hits = await store.search(COMMUNITIES, small, "", EMBEDDER.embed_one(query), 3)
    assert [h.id for h in hits][:1] == ["c-mother"]
    assert len(hits) == 3


# --- evidence: BM25, filters, term statistics ----------------------------------------------------

DAY = 86_400.0
T0 = 1_700_000_000.0


def message(
    pid: str, text: str, speaker: str | None = "Ann", ts: float | None = T0, kind: str = "message"
) -> VectorRecord:
    """An evidence point as ``knowledge.indexing.sync_evidence`` writes one."""
    return VectorRecord(
        id=pid,
        text=text,
        vector=EMBEDDER.embed_one(text),
        payload={"kind": kind, "ref": pid.removeprefix("m:"), "speaker": speaker, "ts": ts},
    )


async def lexical(
    store: VectorStore,
    room: str,
    query: str,
    limit: int = 10,
    where: PointFilter | None = None,
) -> list[VectorHit]:
    return await store.search_lexical(EVIDENCE, room, analyze(query), limit, where)


def ids(hits: list[VectorHit]) -> list[str]:
    return [h.id for h in hits]


# Five messages share "standup"; "zeppelin" is in one. The texts have the same length (in
# lexical terms) wherever the test compares two of them.
EVIDENCE_POINTS = [
    message("m:1", "zeppelin tickets booked today", ts=T0),
    message("m:2", "standup tickets booked today", ts=T0 + DAY),
    message("m:3", "standup moved to noon", speaker="Bob", ts=T0 + 2 * DAY),
    message("m:4", "standup notes are in the wiki", speaker="Bob", ts=T0 + 3 * DAY),
    message("m:5", "standup skipped", speaker="Cy", ts=T0 + 4 * DAY),
    message("m:6", "standup again tomorrow", ts=T0 + 5 * DAY),
    message("m:7", "we should postpone the launch review", speaker="Cy", ts=T0 + 6 * DAY),
    message("m:8", "the weekly meeting covers the budget", speaker="Bob", ts=T0 + 7 * DAY),
    message(
        "a:chunk-1",
        "Launch checklist: budget sign-off, venue, catering.",
        speaker=None,
        ts=None,
        kind="artifact",
    ),
]


@pytest.fixture
async def evidence_room(store: VectorStore) -> str:
    await store.ensure_collection(EVIDENCE, DIM)
    room_id = new_room()
    await store.upsert(EVIDENCE, room_id, EVIDENCE_POINTS)
    return room_id


async def test_lexical_rare_term_beats_common_term(store: VectorStore, evidence_room: str) -> None:
    # m:1 and m:2 have the same length and one query term each: IDF decides.
    hits = await lexical(store, evidence_room, "standup zeppelin")
    assert ids(hits)[0] == "m:1", ids(hits)
    assert ids(hits).index("m:1") < ids(hits).index("m:2")
    assert set(ids(hits)) == {"m:1", "m:2", "m:3", "m:4", "m:5", "m:6"}
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]
    # A hit carries its text and the payload as written (nothing the store keeps for itself).
    assert hits[0].text == "zeppelin tickets booked today"
    assert hits[0].payload == {"kind": "message", "ref": "1", "speaker": "Ann", "ts": T0}


async def test_lexical_shorter_document_wins_a_single_match(store: VectorStore) -> None:
    await store.ensure_collection(EVIDENCE, DIM)
    room = new_room()
    await store.upsert(
        EVIDENCE,
        room,
        [
            message(
                "m:long",
                "invoice attached together with garden photos, lake maps, mountain routes, "
                "river charts and forest notes",
            ),
            message("m:short", "invoice attached"),
            message("m:other", "nothing relevant here"),
        ],
    )
    hits = await lexical(store, room, "invoice")
    assert ids(hits) == ["m:short", "m:long"]
    assert hits[0].score > hits[1].score


async def test_lexical_stems_terms(store: VectorStore, evidence_room: str) -> None:
    # The index and the query go through the same analyzer: "postponed", "postponing" and
    # "postpone" are one term, "meetings" and "meeting" another.
    assert ids(await lexical(store, evidence_room, "postponed")) == ["m:7"]
    assert ids(await lexical(store, evidence_room, "meetings")) == ["m:8"]
    assert set(ids(await lexical(store, evidence_room, "postponing meetings"))) == {"m:7", "m:8"}
    # Stopwords and unknown words match nothing.
    assert await lexical(store, evidence_room, "the of and") == []
    assert await lexical(store, evidence_room, "xylophone") == []
    assert await store.search_lexical(EVIDENCE, evidence_room, [], 10) == []


async def test_lexical_limit(store: VectorStore, evidence_room: str) -> None:
    assert len(await lexical(store, evidence_room, "standup", limit=2)) == 2
    assert await lexical(store, evidence_room, "standup", limit=0) == []


async def test_lexical_filters_by_speaker_and_time(store: VectorStore, evidence_room: str) -> None:
    assert set(ids(await lexical(store, evidence_room, "standup"))) == {
        "m:2",
        "m:3",
        "m:4",
        "m:5",
        "m:6",
    }
    bob = PointFilter(speakers=("Bob",))
    assert set(ids(await lexical(store, evidence_room, "standup", where=bob))) == {"m:3", "m:4"}
    bob_or_cy = PointFilter(speakers=("Bob", "Cy"))
    assert set(ids(await lexical(store, evidence_room, "standup", where=bob_or_cy))) == {
        "m:3",
        "m:4",
        "m:5",
    }
    assert (
        await lexical(store, evidence_room, "standup", where=PointFilter(speakers=("Zed",))) == []
    )
    # [since, until], both ends inclusive, on the payload's ``ts``.
    window = PointFilter(since=T0 + DAY, until=T0 + 3 * DAY)
    assert set(ids(await lexical(store, evidence_room, "standup", where=window))) == {
        "m:2",
        "m:3",
        "m:4",
    }
    since = PointFilter(since=T0 + 4 * DAY)
    assert set(ids(await lexical(store, evidence_room, "standup", where=since))) == {"m:5", "m:6"}
    until = PointFilter(until=T0 + DAY)
    assert set(ids(await lexical(store, evidence_room, "standup", where=until))) == {"m:2"}
    both = PointFilter(speakers=("Bob",), since=T0 + 3 * DAY)
    assert ids(await lexical(store, evidence_room, "standup", where=both)) == ["m:4"]
    # An artifact passage (no speaker, no time) matches without a filter, never with one.
    assert "a:chunk-1" in ids(await lexical(store, evidence_room, "budget"))
    assert "a:chunk-1" not in ids(
        await lexical(store, evidence_room, "budget", where=PointFilter(since=0.0))
    )
    assert "a:chunk-1" not in ids(await lexical(store, evidence_room, "budget", where=bob))
    # An empty filter is no filter.
    assert set(ids(await lexical(store, evidence_room, "budget", where=PointFilter()))) == {
        "m:8",
        "a:chunk-1",
    }


async def test_lexical_search_never_crosses_rooms(store: VectorStore, evidence_room: str) -> None:
    other = new_room()
    # Same ids, other texts; a term only the other room has; a shared term.
    await store.upsert(
        EVIDENCE,
        other,
        [
            message("m:1", "pirates raid the harbour of Tyre", speaker="Bob"),
            message("m:9", "standup with the pirates", speaker="Bob"),
        ],
    )
    assert await lexical(store, evidence_room, "pirates harbour") == []
    mine = await lexical(store, evidence_room, "standup zeppelin", where=PointFilter(("Ann",)))
    assert ids(mine)[0] == "m:1" and set(ids(mine)) == {"m:1", "m:2", "m:6"}
    assert mine[0].text == "zeppelin tickets booked today"
    theirs = await lexical(store, other, "standup zeppelin pirates")
    assert set(ids(theirs)) == {"m:1", "m:9"}
    assert {h.text for h in theirs} == {
        "pirates raid the harbour of Tyre",
        "standup with the pirates",
    }
    # Deleting an id in one room leaves the point with the same id in the other.
    await store.delete(EVIDENCE, other, ["m:1"])
    assert ids(await lexical(store, evidence_room, "zeppelin")) == ["m:1"]
    assert await lexical(store, other, "harbour") == []


async def test_term_stats_counts_points_and_document_frequencies(
    store: VectorStore, evidence_room: str
) -> None:
    terms = analyze("standup zeppelin budget xylophone")
    n, frequencies = await store.term_stats(EVIDENCE, evidence_room, terms)
    assert n == len(EVIDENCE_POINTS)
    assert {t: frequencies.get(t, 0) for t in terms} == {
        "standup": 5,
        "zeppelin": 1,
        "budget": 2,
        "xylophon": 0,
    }
    # A document counts once, however often it repeats a term; other rooms do not count.
    other = new_room()
    await store.upsert(
        EVIDENCE, other, [message("m:1", "standup standup standup"), message("m:2", "zeppelin")]
    )
    n, frequencies = await store.term_stats(EVIDENCE, other, ["standup", "zeppelin"])
    assert (n, frequencies) == (2, {"standup": 1, "zeppelin": 1})
    n, frequencies = await store.term_stats(EVIDENCE, evidence_room, ["standup"])
    assert (n, frequencies) == (len(EVIDENCE_POINTS), {"standup": 5})
    assert await store.term_stats(EVIDENCE, new_room(), ["standup"]) == (0, {})


async def test_deleted_and_replaced_points_leave_the_lexical_index(
    store: VectorStore, evidence_room: str
) -> None:
    await store.delete(EVIDENCE, evidence_room, ["m:1", "m:3"])
    assert await lexical(store, evidence_room, "zeppelin") == []
    assert "m:3" not in ids(await lexical(store, evidence_room, "standup noon"))
    n, frequencies = await store.term_stats(EVIDENCE, evidence_room, ["zeppelin", "standup"])
    assert n == len(EVIDENCE_POINTS) - 2
    assert frequencies.get("zeppelin", 0) == 0 and frequencies["standup"] == 4
    # A point written again with another text is found by its new words only.
    await store.upsert(EVIDENCE, evidence_room, [message("m:7", "the launch review stays")])
    assert await lexical(store, evidence_room, "postponed") == []
    assert ids(await lexical(store, evidence_room, "stays")) == ["m:7"]


async def test_lexical_search_of_an_unwritten_room(store: VectorStore) -> None:
    await store.ensure_collection(EVIDENCE, DIM)
    room = new_room()
    assert await lexical(store, room, "standup") == []
    assert await store.search_dense(EVIDENCE, room, EMBEDDER.embed_one("standup"), 5) == []


async def test_dense_search_finds_the_exact_vector_first_and_respects_filters(
    store: VectorStore, evidence_room: str
) -> None:
    target = EVIDENCE_POINTS[2]  # m:3, Bob, T0 + 2 days
    hits = await store.search_dense(EVIDENCE, evidence_room, target.vector, 4)
    assert ids(hits)[0] == "m:3" and len(hits) == 4
    assert hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert hits[0].text == target.text and hits[0].payload == target.payload
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    # Filters apply before the limit: the nearest points that pass them.
    not_bob = await store.search_dense(
        EVIDENCE, evidence_room, target.vector, 3, PointFilter(speakers=("Ann", "Cy"))
    )
    assert len(not_bob) == 3
    assert "m:3" not in ids(not_bob)
    assert {h.payload["speaker"] for h in not_bob} <= {"Ann", "Cy"}
    window = await store.search_dense(
        EVIDENCE, evidence_room, target.vector, 10, PointFilter(since=T0 + 3 * DAY)
    )
    assert set(ids(window)) == {"m:4", "m:5", "m:6", "m:7", "m:8"}
    assert await store.search_dense(EVIDENCE, evidence_room, target.vector, 0) == []
    # Another room with the very same vector is not seen from this one.
    other = new_room()
    await store.upsert(EVIDENCE, other, [message("m:3", target.text, speaker="Bob")])
    hits = await store.search_dense(EVIDENCE, evidence_room, target.vector, 20)
    assert len(hits) == len(EVIDENCE_POINTS)
    assert ids(await store.search_dense(EVIDENCE, other, target.vector, 20)) == ["m:3"]


async def test_a_lexical_only_point_is_found_by_bm25_and_never_by_vector(
    store: VectorStore, evidence_room: str
) -> None:
    # What sync_evidence writes with the offline embedder: no dense vector at all.
    bare = VectorRecord(
        id="m:9",
        text="zeppelin hangar inspection",
        vector=[],
        payload={"kind": "message", "ref": "9", "speaker": "Dee", "ts": T0 + 8 * DAY},
    )
    await store.upsert(EVIDENCE, evidence_room, [bare])
    assert await store.count(EVIDENCE, evidence_room) == len(EVIDENCE_POINTS) + 1
    hits = await lexical(store, evidence_room, "hangar inspection")
    assert ids(hits) == ["m:9"] and hits[0].payload["speaker"] == "Dee"
    filtered = await lexical(store, evidence_room, "zeppelin", where=PointFilter(speakers=("Dee",)))
    assert ids(filtered) == ["m:9"]
    assert (await store.term_stats(EVIDENCE, evidence_room, ["hangar"]))[1] == {"hangar": 1}
    # Dense search sees only the points that have a vector, even with the exact query.
    dense = await store.search_dense(
        EVIDENCE, evidence_room, EMBEDDER.embed_one(bare.text), len(EVIDENCE_POINTS) + 5
    )
    assert "m:9" not in ids(dense) and len(dense) == len(EVIDENCE_POINTS)
    # Given a vector later, the same point is a dense hit too (and still one point).
    await store.upsert(EVIDENCE, evidence_room, [message("m:9", bare.text, speaker="Dee")])
    dense = await store.search_dense(EVIDENCE, evidence_room, EMBEDDER.embed_one(bare.text), 1)
    assert ids(dense) == ["m:9"]
    assert await store.count(EVIDENCE, evidence_room) == len(EVIDENCE_POINTS) + 1


async def test_lexical_idf_is_the_rooms_own(
    store: VectorStore, request: pytest.FixtureRequest
) -> None:
    """A term common in a busy neighbouring room is still rare here (IDF over the room's
    points, as the protocol says): one room's vocabulary neither changes another's rankings
    nor can be read from them."""
    if isinstance(store, QdrantVectorStore):
        # Qdrant's IDF modifier counts the whole collection (every room), on the 1.18.3 server as
        # in local mode (both rank m:2 first here). A per-tenant IDF corpus (a filter on the
        # query) arrived in Qdrant 1.19; compose and the test server run 1.18.3. Strict: this
        # fails loudly once the store scopes IDF to the room.
        request.applymarker(
            pytest.mark.xfail(strict=True, reason="Qdrant IDF is collection-wide, not per room")
        )
    await store.ensure_collection(EVIDENCE, DIM)
    busy, small = new_room(), new_room()
    await store.upsert(
        EVIDENCE, busy, [message(f"m:{i}", f"quartz item {i} listed") for i in range(40)]
    )
    await store.upsert(
        EVIDENCE,
        small,
        [
            message("m:1", "quartz tickets booked"),
            message("m:2", "ledger tickets booked"),
            message("m:3", "ledger notes filed"),
            message("m:4", "nothing else here"),
        ],
    )
    # Here "quartz" is in one point and "ledger" in two: the quartz message ranks first.
    hits = await lexical(store, small, "quartz ledger tickets")
    assert ids(hits)[0] == "m:1", [(h.id, h.score) for h in hits]


async def test_lexical_many_is_each_query_on_its_own(
    store: VectorStore, evidence_room: str
) -> None:
    queries = [
        analyze("standup zeppelin"),
        analyze("postponed launch budget"),
        [],  # an empty query finds nothing
        analyze("nothing matches this"),
        analyze("standup"),
    ]
    batch = await store.search_lexical_many(EVIDENCE, evidence_room, queries, 3)
    assert len(batch) == len(queries)
    for terms, hits in zip(queries, batch, strict=True):
        alone = await store.search_lexical(EVIDENCE, evidence_room, terms, 3)
        assert ids(hits) == ids(alone)
        assert [round(h.score, 4) for h in hits] == [round(h.score, 4) for h in alone]
    assert ids(batch[0])[0] == "m:1" and batch[2] == [] and len(batch[4]) == 3
    other = new_room()
    assert await store.search_lexical_many(EVIDENCE, other, queries, 3) == [[]] * len(queries)
