"""Vector store on Qdrant (production), through ``qdrant-client``.

One Qdrant collection per logical collection (``<prefix>chunks``, ``<prefix>entities``,
``<prefix>communities``), each with

- a named dense vector ``dense`` (cosine, dimension from :meth:`ensure_collection`);
- a named sparse vector ``sparse`` with ``modifier=IDF``: BM25 vectors computed here, no
  model download. Token ids are a stable hash of :func:`knowledge.lexical.analyze` terms (the
  same stemmed terms the embedded store's postings hold) into a 2^31 space; a
  document's values are BM25 term-frequency saturation (k1=1.2, b=0.75, a per-collection average
  length constant), a query's are 1.0 per term; Qdrant multiplies in the IDF at query time;
- a ``room_id`` keyword payload index with ``is_tenant=True`` and HNSW built per tenant
  (``payload_m``) instead of globally: every read is filtered by room, so room A never sees
  room B's points.

Qdrant point ids must be UUIDs or integers: ours are strings (chunk ids, entity names, community
ids) and only unique within a room, so the point id is ``uuid5(room_id, id)`` and the original id
is kept in the payload (``pid``) along with ``room_id`` and ``text``. Those three payload keys are
reserved. A hybrid search is one ``query_points`` call: a dense and a sparse ``Prefetch``, both
filtered by room, fused with Qdrant's reciprocal rank fusion.

The same class runs against a server (``http://…`` URL, optional API key) or qdrant-client's local
mode (a folder, or ``":memory:"``), which is pure Python, ignores payload indexes and locks its
folder to one process: fine for tests, not for the API + Dagster processes together.
"""

from __future__ import annotations

import hashlib
import uuid
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

from qdrant_client import AsyncQdrantClient, models

from knowledge.lexical import analyze, bm25_tf
from knowledge.stores.base import (
    CHUNKS,
    COMMUNITIES,
    ENTITIES,
    EVIDENCE,
    PointFilter,
    VectorHit,
    VectorRecord,
    reciprocal_rank_fusion,
)

DENSE = "dense"
SPARSE = "sparse"
# Payload keys the store owns; a record's own payload must not use them.
RESERVED_KEYS = frozenset({"room_id", "pid", "text", "terms"})

_POINT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://coagent.studio/graph/qdrant-point")

# Average document length (in lexical terms) per collection: chunks are a few hundred tokens,
# entity texts a name and a short description, reports a paragraph or two, messages a sentence
# or two. (Qdrant stores the TF part precomputed, so the average is a constant here.)
AVG_TERMS = {CHUNKS: 200.0, ENTITIES: 24.0, COMMUNITIES: 120.0, EVIDENCE: 12.0}
DEFAULT_AVG_TERMS = 100.0


def term_id(term: str) -> int:
    """A stable token id for a term in [0, 2^31) (sparse indices are uint32 in Qdrant)."""
    digest = hashlib.blake2b(term.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def _sparse(weights: dict[int, float]) -> models.SparseVector:
    indices = sorted(weights)
    return models.SparseVector(indices=indices, values=[weights[i] for i in indices])


def sparse_document(text: str, avg_terms: float = DEFAULT_AVG_TERMS) -> models.SparseVector:
    """BM25 term-frequency part of a document's terms (IDF is applied by Qdrant)."""
    terms = analyze(text)
    weights: dict[int, float] = {}
    for term, tf in Counter(terms).items():
        tid = term_id(term)
        # Two terms hashing to one id (rare) add up, like a shared token would.
        weights[tid] = weights.get(tid, 0.0) + bm25_tf(tf, len(terms), avg_terms)
    return _sparse(weights)


def sparse_query(text: str) -> models.SparseVector:
    return sparse_terms(analyze(text))


def sparse_terms(terms: Sequence[str]) -> models.SparseVector:
    """A query of terms, each weighing 1 (BM25 sums over the query's distinct terms)."""
    return _sparse({term_id(term): 1.0 for term in terms})


def _point_filter(room_id: str, where: PointFilter | None) -> models.Filter:
    must: list[Any] = [models.FieldCondition(key="room_id", match=models.MatchValue(value=room_id))]
    if where is not None and where.speakers:
        must.append(
            models.FieldCondition(key="speaker", match=models.MatchAny(any=list(where.speakers)))
        )
    if where is not None and (where.since is not None or where.until is not None):
        must.append(
            models.FieldCondition(key="ts", range=models.Range(gte=where.since, lte=where.until))
        )
    return models.Filter(must=must)


def point_id(room_id: str, pid: str) -> str:
    """Our ids are unique per room only (entity names), so the room is part of the point id."""
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{room_id}\x1f{pid}"))


def _room_filter(room_id: str) -> models.Filter:
    return models.Filter(
        must=[models.FieldCondition(key="room_id", match=models.MatchValue(value=room_id))]
    )


class QdrantVectorStore:
    """``location``: a server URL (``http://qdrant:6333``), a local folder, or ``":memory:"``."""

    # Points per upsert request and per scroll page.
    batch_size = 256
    scroll_page = 1024

    def __init__(
        self,
        location: str,
        api_key: str | None = None,
        prefix: str = "coagent_",
        timeout: int = 30,
    ) -> None:
        self.prefix = prefix
        if location.startswith(("http://", "https://")):
            self.client = AsyncQdrantClient(url=location, api_key=api_key, timeout=timeout)
            self.local = False
        elif location == ":memory:":
            self.client = AsyncQdrantClient(location=":memory:")
            self.local = True
        else:
            self.client = AsyncQdrantClient(path=location)
            self.local = True
        # Qdrant collection name -> dense dimension, for collections known to exist.
        self._ready: dict[str, int] = {}

    def name(self, collection: str) -> str:
        return self.prefix + collection

    async def close(self) -> None:
        await self.client.close()

    # --- collections ----------------------------------------------------------------------------

    async def ensure_collection(self, collection: str, dim: int) -> None:
        name = self.name(collection)
        if self._ready.get(name) == dim:
            return
        if not await self.client.collection_exists(name):
            try:
                await self.client.create_collection(
                    name,
                    vectors_config={
                        DENSE: models.VectorParams(size=dim, distance=models.Distance.COSINE)
                    },
                    sparse_vectors_config={
                        SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)
                    },
                    # Multitenancy: every search is filtered by room, so build HNSW links per
                    # room (payload_m) rather than one global graph (m=0).
                    hnsw_config=models.HnswConfigDiff(m=0, payload_m=16),
                )
            except Exception:
                # Another process may have created it in the meantime.
                if not await self.client.collection_exists(name):
                    raise
        info = await self.client.get_collection(name)
        vectors = info.config.params.vectors
        dense = vectors.get(DENSE) if isinstance(vectors, dict) else None
        if dense is None or dense.size != dim:
            have = "no dense vector" if dense is None else f"dense vectors of size {dense.size}"
            raise ValueError(
                f"Qdrant collection {name!r} has {have}, but the embedder makes {dim}: "
                "delete the collection and rebuild the rooms to change embedders"
            )
        if "room_id" not in (info.payload_schema or {}):
            with warnings.catch_warnings():
                # Local mode warns that it ignores payload indexes; we know.
                if self.local:
                    warnings.simplefilter("ignore", UserWarning)
                await self.client.create_payload_index(
                    name,
                    "room_id",
                    field_schema=models.KeywordIndexParams(
                        type=models.KeywordIndexType.KEYWORD, is_tenant=True
                    ),
                )
        if collection == EVIDENCE:
            schema = info.payload_schema or {}
            with warnings.catch_warnings():
                if self.local:
                    warnings.simplefilter("ignore", UserWarning)
                if "ts" not in schema:
                    await self.client.create_payload_index(
                        name, "ts", field_schema=models.PayloadSchemaType.FLOAT
                    )
                if "terms" not in schema:
                    await self.client.create_payload_index(
                        name, "terms", field_schema=models.PayloadSchemaType.KEYWORD
                    )
                if "speaker" not in schema:
                    await self.client.create_payload_index(
                        name, "speaker", field_schema=models.PayloadSchemaType.KEYWORD
                    )
        self._ready[name] = dim

    async def _exists(self, collection: str) -> bool:
        name = self.name(collection)
        if name in self._ready:
            return True
        return await self.client.collection_exists(name)

    # --- writes ---------------------------------------------------------------------------------

    async def upsert(self, collection: str, room_id: str, records: Sequence[VectorRecord]) -> None:
        if not records:
            return
        name = self.name(collection)
        avg_terms = AVG_TERMS.get(collection, DEFAULT_AVG_TERMS)
        points = []
        for r in records:
            clash = RESERVED_KEYS & r.payload.keys()
            if clash:
                raise ValueError(f"payload keys {sorted(clash)} are reserved by the vector store")
            payload = {**r.payload, "room_id": room_id, "pid": r.id, "text": r.text}
            if collection == EVIDENCE:
                # Distinct terms, so that document frequencies can be counted (term_stats).
                payload["terms"] = sorted(set(analyze(r.text)))
            vector: dict[str, Any] = {SPARSE: sparse_document(r.text, avg_terms)}
            if r.vector:  # a lexical-only point has no dense vector (named vectors are optional)
                vector[DENSE] = list(r.vector)
            points.append(
                models.PointStruct(id=point_id(room_id, r.id), vector=vector, payload=payload)
            )
        for start in range(0, len(points), self.batch_size):
            await self.client.upsert(
                name, points=points[start : start + self.batch_size], wait=True
            )

    async def delete(self, collection: str, room_id: str, ids: Sequence[str]) -> None:
        if not ids or not await self._exists(collection):
            return
        await self.client.delete(
            self.name(collection),
            points_selector=models.PointIdsList(points=[point_id(room_id, i) for i in ids]),
            wait=True,
        )

    async def wipe_room(self, room_id: str) -> dict[str, int]:
        """Every collection under the prefix, not only the known ones: a collection written by
        another version of the code still holds the room's points."""
        removed: dict[str, int] = {}
        response = await self.client.get_collections()
        for name in sorted(d.name for d in response.collections if d.name.startswith(self.prefix)):
            room = _room_filter(room_id)
            # A filtered delete reports no count: count first (the room's writes are expected
            # to have stopped, so the two agree; the delete runs regardless).
            counted = await self.client.count(name, count_filter=room, exact=True)
            await self.client.delete(
                name, points_selector=models.FilterSelector(filter=room), wait=True
            )
            removed[f"qdrant:{name}"] = counted.count
        return removed

    # --- reads ----------------------------------------------------------------------------------

    async def fingerprints(
        self,
        collection: str,
        room_id: str,
        ids: Sequence[str] | None = None,
        kind: str | None = None,
    ) -> dict[str, str]:
        if not await self._exists(collection):
            return {}
        result: dict[str, str] = {}
        if ids is not None:
            wanted = sorted(set(ids))
            for start in range(0, len(wanted), self.scroll_page):
                # Point ids hash (room, id): another room's point can never be among them.
                found = await self.client.retrieve(
                    self.name(collection),
                    ids=[point_id(room_id, i) for i in wanted[start : start + self.scroll_page]],
                    with_payload=["pid", "fingerprint", "room_id", "kind"],
                    with_vectors=False,
                )
                for point in found:
                    payload = point.payload or {}
                    if payload.get("room_id") != room_id:
                        continue
                    if kind is not None and payload.get("kind") != kind:
                        continue
                    result[payload["pid"]] = payload.get("fingerprint") or ""
            return result
        room = _room_filter(room_id)
        if kind is not None:
            room.must.append(  # type: ignore[union-attr]
                models.FieldCondition(key="kind", match=models.MatchValue(value=kind))
            )
        offset: Any = None
        while True:
            points, offset = await self.client.scroll(
                self.name(collection),
                scroll_filter=room,
                limit=self.scroll_page,
                offset=offset,
                with_payload=["pid", "fingerprint"],
                with_vectors=False,
            )
            for point in points:
                payload = point.payload or {}
                result[payload["pid"]] = payload.get("fingerprint") or ""
            if offset is None:
                return result

    async def count(self, collection: str, room_id: str) -> int:
        if not await self._exists(collection):
            return 0
        response = await self.client.count(
            self.name(collection), count_filter=_room_filter(room_id), exact=True
        )
        return response.count

    async def search_dense(
        self,
        collection: str,
        room_id: str,
        vector: list[float],
        limit: int,
        where: PointFilter | None = None,
    ) -> list[VectorHit]:
        if limit <= 0 or not await self._exists(collection):
            return []
        response = await self.client.query_points(
            self.name(collection),
            query=list(vector),
            using=DENSE,
            query_filter=_point_filter(room_id, where),
            limit=limit,
            with_payload=True,
        )
        return _hits(response.points)

    async def search_lexical(
        self,
        collection: str,
        room_id: str,
        terms: Sequence[str],
        limit: int,
        where: PointFilter | None = None,
    ) -> list[VectorHit]:
        return (await self.search_lexical_many(collection, room_id, [terms], limit, where))[0]

    async def search_lexical_many(
        self,
        collection: str,
        room_id: str,
        queries: Sequence[Sequence[str]],
        limit: int,
        where: PointFilter | None = None,
    ) -> list[list[VectorHit]]:
        out: list[list[VectorHit]] = [[] for _ in queries]
        wanted = [(n, sparse_terms(sorted(set(q)))) for n, q in enumerate(queries)]
        wanted = [(n, q) for n, q in wanted if q.indices]
        if limit <= 0 or not wanted or not await self._exists(collection):
            return out
        room = _point_filter(room_id, where)
        responses = await self.client.query_batch_points(
            self.name(collection),
            requests=[
                models.QueryRequest(
                    query=q, using=SPARSE, filter=room, limit=limit, with_payload=True
                )
                for _, q in wanted
            ],
        )
        for (n, _), response in zip(wanted, responses, strict=True):
            out[n] = _hits(response.points)
        return out

    async def term_stats(
        self, collection: str, room_id: str, terms: Sequence[str]
    ) -> tuple[int, dict[str, int]]:
        if not await self._exists(collection):
            return 0, {}
        name = self.name(collection)
        n = await self.count(collection, room_id)
        frequencies: dict[str, int] = {}
        for term in sorted(set(terms)):
            must = [
                *_room_filter(room_id).must,  # type: ignore[misc]
                models.FieldCondition(key="terms", match=models.MatchValue(value=term)),
            ]
            response = await self.client.count(name, count_filter=models.Filter(must=must))
            if response.count:
                frequencies[term] = response.count
        return n, frequencies

    async def search(
        self,
        collection: str,
        room_id: str,
        query_text: str,
        vector: list[float],
        limit: int,
    ) -> list[VectorHit]:
        if limit <= 0 or not await self._exists(collection):
            return []
        name = self.name(collection)
        dim = self._ready.get(name)
        if dim is not None and len(vector) != dim:
            raise ValueError(
                f"query vector has {len(vector)} dimensions, collection {name!r} has {dim}"
            )
        room = _room_filter(room_id)
        depth = max(limit * 3, 20)
        requests = [
            models.QueryRequest(
                query=list(vector), using=DENSE, filter=room, limit=depth, with_payload=True
            )
        ]
        sparse = sparse_query(query_text)
        if sparse.indices:
            requests.append(
                models.QueryRequest(
                    query=sparse, using=SPARSE, filter=room, limit=depth, with_payload=True
                )
            )
        responses = await self.client.query_batch_points(name, requests=requests)
        # Fused here with the PostgreSQL store's RRF, each list's ties by text: Qdrant breaks
        # them by point id, and ids hash the room id, so the same content in another room would
        # rank differently.
        rankings = [
            sorted(_hits(r.points), key=lambda h: (-h.score, h.text, h.id)) for r in responses
        ]
        return reciprocal_rank_fusion(rankings, limit)


def _hits(points: Sequence[Any]) -> list[VectorHit]:
    hits = []
    for point in points:
        payload = dict(point.payload or {})
        pid = payload.pop("pid")
        body = payload.pop("text", "")
        payload.pop("room_id", None)
        payload.pop("terms", None)
        hits.append(VectorHit(id=pid, score=float(point.score), text=body, payload=payload))
    return hits
