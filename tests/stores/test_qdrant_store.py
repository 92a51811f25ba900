"""Qdrant-specific behaviour the contract suite cannot state for every store.

On the Qdrant server of the run (``qdrant_store``: ``COAGENT_TEST_QDRANT_URL``, each test under
a prefix of its own) or, outside CI without one, qdrant-client's local mode; the folder test is
about local mode itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from qdrant_client.models import KeywordIndexParams, Modifier, PayloadSchemaType

from knowledge.embeddings import HashingEmbedder
from knowledge.lexical import analyze
from knowledge.stores.base import CHUNKS, ENTITIES, EVIDENCE, VectorRecord
from knowledge.stores.qdrant_store import (
    DENSE,
    SPARSE,
    QdrantVectorStore,
    point_id,
    sparse_document,
    sparse_query,
    term_id,
)

EMBEDDER = HashingEmbedder(64)


def record(pid: str, text: str, **payload: object) -> VectorRecord:
    return VectorRecord(pid, text, EMBEDDER.embed_one(text), dict(payload))


def test_sparse_vectors_are_bm25_style_and_stable() -> None:
    assert term_id("rome") == term_id("rome")
    assert 0 <= term_id("rome") < 2**31
    assert term_id("rome") != term_id("corioli")

    doc = sparse_document("Rome, rome and ROME: the city of Rome.")
    weights = dict(zip(doc.indices, doc.values, strict=True))
    # Terms are the analyzer's (stemmed: "city" is "citi"), shared with the embedded store.
    city, rome = analyze("city")[0], analyze("rome")[0]
    assert (
        set(weights)
        == {term_id(t) for t in analyze("rome city")}
        == {
            term_id(city),
            term_id(rome),
        }
    )
    # Term frequency saturates: four mentions weigh more than one, far less than four times.
    assert weights[term_id(city)] < weights[term_id(rome)] < 2.2 * weights[term_id(city)]
    assert weights[term_id(rome)] < 1.2 + 1.0  # k1 + 1 bounds a BM25 tf weight
    # Longer documents weigh the same count less.
    long = sparse_document("city " + " ".join(f"word{i}" for i in range(200)))
    assert dict(zip(long.indices, long.values, strict=True))[term_id(city)] < weights[term_id(city)]

    query = sparse_query("What did the city of Rome do to Rome?")
    assert query.indices == sorted({term_id(city), term_id(rome)})
    assert query.values == [1.0, 1.0]
    assert sparse_query("the of and").indices == []


def test_point_ids_are_uuids_per_room() -> None:
    assert point_id("room-a", "rome") == point_id("room-a", "rome")
    assert point_id("room-a", "rome") != point_id("room-b", "rome")
    assert len(point_id("room-a", "rome")) == 36


async def test_collection_schema(qdrant_store: QdrantVectorStore) -> None:
    store = qdrant_store
    await store.ensure_collection(CHUNKS, 64)
    await store.ensure_collection(CHUNKS, 64)
    name = store.name(CHUNKS)
    info = await store.client.get_collection(name)
    vectors = info.config.params.vectors
    assert isinstance(vectors, dict)
    assert vectors[DENSE].size == 64
    assert str(vectors[DENSE].distance.value) == "Cosine"
    sparse = info.config.params.sparse_vectors
    assert sparse is not None
    assert sparse[SPARSE].modifier == Modifier.IDF
    # The stored payload: the record's own keys plus room, original id and text.
    await store.upsert(CHUNKS, "room-a", [record("k1", "Hello Rome", fingerprint="f")])
    points, _ = await store.client.scroll(name, with_payload=True)
    assert points[0].payload == {
        "fingerprint": "f",
        "room_id": "room-a",
        "pid": "k1",
        "text": "Hello Rome",
    }
    assert str(points[0].id) == point_id("room-a", "k1")


async def test_server_keeps_the_tenant_index_and_per_room_hnsw(
    qdrant_url: str | None, qdrant_store: QdrantVectorStore
) -> None:
    """What local mode ignores: the ``room_id`` tenant index, the evidence payload indexes and
    HNSW built per room (``payload_m``) instead of one global graph (``m=0``)."""
    if qdrant_url is None:
        pytest.skip("qdrant-client's local mode keeps no payload indexes or HNSW settings")
    store = qdrant_store
    await store.ensure_collection(EVIDENCE, 64)
    await store.ensure_collection(CHUNKS, 64)
    evidence = await store.client.get_collection(store.name(EVIDENCE))
    assert (evidence.config.hnsw_config.m, evidence.config.hnsw_config.payload_m) == (0, 16)
    schema = evidence.payload_schema
    assert set(schema) == {"room_id", "ts", "terms", "speaker"}
    tenant = schema["room_id"].params
    assert isinstance(tenant, KeywordIndexParams) and tenant.is_tenant
    assert schema["ts"].data_type == PayloadSchemaType.FLOAT
    assert schema["terms"].data_type == schema["speaker"].data_type == PayloadSchemaType.KEYWORD
    chunks = await store.client.get_collection(store.name(CHUNKS))
    assert set(chunks.payload_schema) == {"room_id"}
    # A second process opening the same collections finds the indexes and adds none.
    again = QdrantVectorStore(qdrant_url, prefix=store.prefix)
    await again.ensure_collection(EVIDENCE, 64)
    assert (await again.client.get_collection(store.name(EVIDENCE))).payload_schema == schema
    await again.close()


async def test_dimension_change_is_refused(qdrant_store: QdrantVectorStore) -> None:
    store = qdrant_store
    await store.ensure_collection(ENTITIES, 64)
    with pytest.raises(ValueError, match="size 64"):
        await store.ensure_collection(ENTITIES, 128)
    with pytest.raises(ValueError, match="dimensions"):
        await store.search(ENTITIES, "room-a", "x", [0.1] * 128, 5)


async def test_reserved_payload_keys_are_refused(qdrant_store: QdrantVectorStore) -> None:
    store = qdrant_store
    await store.ensure_collection(CHUNKS, 64)
    with pytest.raises(ValueError, match="reserved"):
        await store.upsert(CHUNKS, "room-a", [record("k1", "text", room_id="room-b")])
    assert await store.count(CHUNKS, "room-b") == 0


async def test_local_folder_persists_across_reopen(tmp_path: Path) -> None:
    store = QdrantVectorStore(str(tmp_path))
    await store.ensure_collection(CHUNKS, 64)
    await store.upsert(CHUNKS, "room-a", [record("k1", "Menenius and the belly", fingerprint="f")])
    await store.close()

    reopened = QdrantVectorStore(str(tmp_path))
    assert await reopened.count(CHUNKS, "room-a") == 1
    assert await reopened.fingerprints(CHUNKS, "room-a") == {"k1": "f"}
    await reopened.ensure_collection(CHUNKS, 64)
    hits = await reopened.search(CHUNKS, "room-a", "belly", EMBEDDER.embed_one("belly"), 1)
    assert [h.id for h in hits] == ["k1"]
    await reopened.close()
