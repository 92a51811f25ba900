"""One contract for every VectorStore: same inputs, same expected results.

Implementations: pgvector on the real embedded PostgreSQL (the conftest ``platform`` engine) and
Qdrant through qdrant-client's local mode in a temporary folder (one process). Vectors come from
the offline HashingEmbedder, so everything is deterministic.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from knowledge.embeddings import HashingEmbedder
from knowledge.platform import Platform
from knowledge.stores.base import CHUNKS, COMMUNITIES, ENTITIES, VectorRecord, VectorStore
from knowledge.stores.pgvector_store import PgVectorStore
from knowledge.stores.qdrant_store import QdrantVectorStore

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
    qdrant = QdrantVectorStore(str(tmp_path_factory.mktemp("qdrant")))
    # Small batches and pages, so a few hundred points exercise both loops (local mode persists
    # every write to SQLite: big test rooms would be slow).
    qdrant.batch_size = qdrant.scroll_page = 100
    try:
        yield qdrant
    finally:
        await qdrant.close()


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

    await store.wipe_room(room)

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
