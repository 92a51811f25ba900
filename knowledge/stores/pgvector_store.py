"""Vector store on pgvector (the embedded default).

One table for every collection; the vector column has no fixed dimension, and each dimension
gets a partial HNSW index on ``embedding::vector(dim)`` (cosine). Lexical retrieval uses the
generated ``tsvector`` column (pgserver's pgvector 0.6 has no sparse vectors); the two rankings
are fused with RRF.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from dbschema.models import VectorPoint
from knowledge.stores.base import VectorHit, VectorRecord, reciprocal_rank_fusion

_BATCH = 500


def _vector_literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(f"{v:.7g}" for v in vector) + "]"


class PgVectorStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._dims: dict[str, int] = {}
        self._indexed_dims: set[int] = set()

    async def ensure_collection(self, collection: str, dim: int) -> None:
        self._dims[collection] = dim
        if dim in self._indexed_dims:
            return
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    f"CREATE INDEX IF NOT EXISTS ix_vector_points_hnsw_{int(dim)} ON vector_points "
                    f"USING hnsw ((embedding::vector({int(dim)})) vector_cosine_ops) "
                    f"WHERE dim = {int(dim)}"
                )
            )
        self._indexed_dims.add(dim)

    async def upsert(self, collection: str, room_id: str, records: Sequence[VectorRecord]) -> None:
        if not records:
            return
        rows = [
            {
                "collection": collection,
                "room_id": room_id,
                "point_id": r.id,
                "embedding": r.vector,
                "dim": len(r.vector),
                "text": r.text,
                "payload": r.payload,
            }
            for r in records
        ]
        async with self.engine.begin() as conn:
            for start in range(0, len(rows), _BATCH):
                stmt = insert(VectorPoint).values(rows[start : start + _BATCH])
                stmt = stmt.on_conflict_do_update(
                    constraint="uq_vector_points_key",
                    set_={
                        "embedding": stmt.excluded.embedding,
                        "dim": stmt.excluded.dim,
                        "text": stmt.excluded.text,
                        "payload": stmt.excluded.payload,
                    },
                )
                await conn.execute(stmt)

    async def delete(self, collection: str, room_id: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(VectorPoint).where(
                    VectorPoint.collection == collection,
                    VectorPoint.room_id == room_id,
                    VectorPoint.point_id.in_(list(ids)),
                )
            )

    async def fingerprints(self, collection: str, room_id: str) -> dict[str, str]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(VectorPoint.point_id, VectorPoint.payload["fingerprint"].astext).where(
                    VectorPoint.collection == collection, VectorPoint.room_id == room_id
                )
            )
            return {point_id: fingerprint or "" for point_id, fingerprint in rows}

    async def count(self, collection: str, room_id: str) -> int:
        async with self.engine.connect() as conn:
            result = await conn.execute(
                select(func.count())
                .select_from(VectorPoint)
                .where(VectorPoint.collection == collection, VectorPoint.room_id == room_id)
            )
            return int(result.scalar_one())

    async def search(
        self,
        collection: str,
        room_id: str,
        query_text: str,
        vector: list[float],
        limit: int,
    ) -> list[VectorHit]:
        dim = len(vector)
        depth = max(limit * 3, 20)
        params = {
            "collection": collection,
            "room_id": room_id,
            "q": _vector_literal(vector),
            "text": query_text,
            "depth": depth,
        }
        dense_sql = text(
            f"""
            SELECT point_id, text, payload,
                   1 - (embedding::vector({dim}) <=> CAST(:q AS vector({dim}))) AS score
            FROM vector_points
            WHERE collection = :collection AND room_id = :room_id AND dim = {dim}
            ORDER BY embedding::vector({dim}) <=> CAST(:q AS vector({dim}))
            LIMIT :depth
            """
        )
        # plainto_tsquery ANDs the terms; a question should match any of them, so OR them.
        lexical_sql = text(
            """
            WITH q AS (
                SELECT NULLIF(replace(plainto_tsquery('english', :text)::text, '&', '|'), '')
                       AS query
            )
            SELECT point_id, text, payload, ts_rank_cd(tsv, to_tsquery('english', q.query)) AS score
            FROM vector_points, q
            WHERE collection = :collection AND room_id = :room_id
              AND q.query IS NOT NULL AND tsv @@ to_tsquery('english', q.query)
            ORDER BY score DESC, point_id
            LIMIT :depth
            """
        )
        async with self.engine.connect() as conn:
            dense = (await conn.execute(dense_sql, params)).all()
            lexical = (await conn.execute(lexical_sql, params)).all() if query_text.strip() else []

        def hits(rows: Sequence[Any]) -> list[VectorHit]:
            out = []
            for point_id, body, payload, score in rows:
                data = json.loads(payload) if isinstance(payload, str) else payload
                out.append(VectorHit(id=point_id, score=float(score), text=body, payload=data))
            return out

        return reciprocal_rank_fusion([hits(dense), hits(lexical)], limit)

    async def wipe_room(self, room_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(VectorPoint).where(VectorPoint.room_id == room_id))
