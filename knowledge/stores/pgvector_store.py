"""Vector store on pgvector (the embedded default).

One table for every collection; the vector column has no fixed dimension, and each dimension
gets a partial HNSW index on ``embedding::vector(dim)`` (cosine). Lexical retrieval: the hybrid
``search`` uses the generated ``tsvector`` column (pgserver's pgvector 0.6 has no sparse
vectors), fused with the dense ranking by RRF; ``search_lexical`` is Okapi BM25 over
``lexical_postings`` (one row per term of a point, terms from :mod:`knowledge.lexical`), with
IDF and average length over the room's points of the collection, kept by every write
(``lexical_rooms``, ``lexical_terms``); the postings are scored in memory, read again only
when a term's version moved (:mod:`knowledge.stores.postings_cache`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from dbschema.models import LexicalPosting, LexicalRoom, LexicalTerm, VectorPoint
from knowledge.lexical import bm25_idf, term_frequencies
from knowledge.relational import any_text
from knowledge.stores.base import (
    ENTITIES,
    EVIDENCE,
    PointFilter,
    VectorHit,
    VectorRecord,
    reciprocal_rank_fusion,
)
from knowledge.stores.postings_cache import DEFAULT_BUDGET, PostingsCache, TermPostings, bm25_top

_BATCH = 500
_ANALYZE_AFTER = 200
# Collections whose points get BM25 postings (``search_lexical``); the others are searched with
# the hybrid ``search`` only, and postings of long chunk texts would cost writes for nothing.
LEXICAL_COLLECTIONS = frozenset({EVIDENCE, ENTITIES})


def _vector_literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(f"{v:.7g}" for v in vector) + "]"


class PgVectorStore:
    def __init__(self, engine: AsyncEngine, postings_budget: int = DEFAULT_BUDGET) -> None:
        self.engine = engine
        #: The postings of the terms searched lately (see ``search_lexical_many``).
        self._cache = PostingsCache(postings_budget)
        self._dims: dict[str, int] = {}
        self._indexed_dims: set[int] = set()
        self._written_since_analyze = 0
        self._analyzed_rows = 0

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
        terms = {r.id: term_frequencies(r.text) for r in records}
        lengths = {pid: sum(tfs.values()) for pid, tfs in terms.items()}
        rows = [
            {
                "collection": collection,
                "room_id": room_id,
                "point_id": r.id,
                "embedding": r.vector or None,  # lexical-only: in no HNSW index
                "dim": len(r.vector),
                "text": r.text,
                "payload": r.payload,
                "n_terms": lengths[r.id],
            }
            for r in records
        ]
        postings = [
            {
                "collection": collection,
                "room_id": room_id,
                "term": term,
                "point_id": pid,
                "tf": tf,
                "doc_len": lengths[pid],
            }
            for pid, tfs in terms.items()
            for term, tf in tfs.items()
            if collection in LEXICAL_COLLECTIONS
        ]
        # One statement executed for many parameter sets: SQLAlchemy compiles it once and
        # psycopg sends the rows in pipelined batches ("insertmanyvalues"); a multi-row
        # VALUES clause of 500 rows was compiled anew for every batch (most of a bulk load).
        upsert = insert(VectorPoint)
        upsert = upsert.on_conflict_do_update(
            constraint="uq_vector_points_key",
            set_={
                "embedding": upsert.excluded.embedding,
                "dim": upsert.excluded.dim,
                "text": upsert.excluded.text,
                "payload": upsert.excluded.payload,
                "n_terms": upsert.excluded.n_terms,
            },
        )
        lexical = collection in LEXICAL_COLLECTIONS
        async with self.engine.begin() as conn:
            if lexical:
                # What the rewritten points counted before (their postings are replaced).
                before = (
                    await conn.execute(
                        text(
                            "SELECT count(*), coalesce(sum(n_terms), 0) FROM vector_points "
                            "WHERE collection = :c AND room_id = :r AND point_id = ANY(:ids)"
                        ),
                        {"c": collection, "r": room_id, "ids": list(terms)},
                    )
                ).one()
            await conn.execute(upsert, rows)
            removed = await self._delete_postings(conn, collection, room_id, list(terms))
            await self._copy_postings(conn, postings)
            if lexical:
                await self._add_statistics(
                    conn,
                    collection,
                    room_id,
                    len(terms) - int(before[0]),
                    sum(lengths.values()) - int(before[1]),
                    added=Counter(str(p["term"]) for p in postings),
                    removed=removed,
                )
        self._written_since_analyze += len(records)
        if self._written_since_analyze >= max(_ANALYZE_AFTER, self._analyzed_rows):
            # A bulk load leaves the planner with stale statistics until autovacuum comes by;
            # BM25 queries then scan a room's postings instead of one range per term. Only
            # when the rows written since the last ANALYZE match those before it (a bulk load
            # in batches analyzes O(log n) times, not once per batch).
            async with self.engine.connect() as conn:
                # VACUUM too: it sets the visibility map, without which the postings' reads
                # are not index-only (autovacuum sets it late after a bulk insert).
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("ANALYZE vector_points"))
                await conn.execute(text("VACUUM (ANALYZE) lexical_postings"))
            self._analyzed_rows += self._written_since_analyze
            self._written_since_analyze = 0

    @staticmethod
    async def _copy_postings(conn: Any, postings: list[dict[str, Any]]) -> None:
        """Write postings with ``COPY`` on the transaction's own connection: a bulk load
        writes about ten per message, and row-by-row inserts were most of its time."""
        if not postings:
            return
        raw = await conn.get_raw_connection()
        columns = ("collection", "room_id", "term", "point_id", "tf", "doc_len")
        async with (
            raw.driver_connection.cursor() as cursor,
            cursor.copy(f"COPY lexical_postings ({', '.join(columns)}) FROM STDIN") as copy,
        ):
            for posting in postings:
                await copy.write_row(tuple(posting[c] for c in columns))

    @staticmethod
    async def _delete_postings(
        conn: Any, collection: str, room_id: str, ids: list[str]
    ) -> Counter[str]:
        """Delete the points' postings; how many postings of each term went."""
        removed: Counter[str] = Counter()
        for start in range(0, len(ids), _BATCH * 4):
            result = await conn.execute(
                delete(LexicalPosting)
                .where(
                    LexicalPosting.collection == collection,
                    LexicalPosting.room_id == room_id,
                    # One array parameter: an IN list of this size is parsed anew each time.
                    LexicalPosting.point_id == any_text(ids[start : start + _BATCH * 4]),
                )
                .returning(LexicalPosting.term)
            )
            removed.update(result.scalars())
        return removed

    @staticmethod
    async def _add_statistics(
        conn: Any,
        collection: str,
        room_id: str,
        docs: int,
        length: int,
        added: Counter[str],
        removed: Counter[str],
    ) -> None:
        """Add to the room's BM25 statistics (``lexical_rooms``, ``lexical_terms``), in the
        transaction that changed its postings: a query reads them instead of counting.
        ``docs`` and ``length`` are the changes of the point count and total length; ``added``
        and ``removed`` count the postings written and deleted, by term."""
        df = Counter(added)
        df.subtract(removed)
        if docs or length:
            room = insert(LexicalRoom).values(
                collection=collection, room_id=room_id, n_docs=docs, total_terms=length
            )
            await conn.execute(
                room.on_conflict_do_update(
                    index_elements=["collection", "room_id"],
                    set_={
                        "n_docs": LexicalRoom.n_docs + room.excluded.n_docs,
                        "total_terms": LexicalRoom.total_terms + room.excluded.total_terms,
                    },
                )
            )
        # Every term with a posting written or deleted gets a new version, its count changed
        # or not (a rewritten point keeps a term with another tf or length): the readers'
        # cached postings of it are stale. Sorted: writers lock rows in one order.
        changed = sorted(df)
        if not changed:
            return
        # One statement over two arrays: a bulk load changes thousands of terms per batch,
        # and a row per term (executemany) was most of its time.
        await conn.execute(
            text(
                "INSERT INTO lexical_terms (collection, room_id, term, df) "
                "SELECT :c, :r, term, df FROM unnest(CAST(:terms AS text[]), "
                "CAST(:dfs AS integer[])) AS t(term, df) "
                "ON CONFLICT (collection, room_id, term) "
                "DO UPDATE SET df = lexical_terms.df + excluded.df, "
                "version = nextval('lexical_term_version')"
            ),
            {"c": collection, "r": room_id, "terms": changed, "dfs": [df[t] for t in changed]},
        )
        # Only a term that lost postings can have dropped to zero.
        shrunk = [t for t in changed if df[t] < 0]
        if shrunk:
            await conn.execute(
                delete(LexicalTerm).where(
                    LexicalTerm.collection == collection,
                    LexicalTerm.room_id == room_id,
                    LexicalTerm.term == any_text(shrunk),
                    LexicalTerm.df <= 0,
                )
            )

    async def delete(self, collection: str, room_id: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(VectorPoint)
                .where(
                    VectorPoint.collection == collection,
                    VectorPoint.room_id == room_id,
                    VectorPoint.point_id.in_(list(ids)),
                )
                .returning(VectorPoint.n_terms)
            )
            lengths = list(result.scalars())
            removed = await self._delete_postings(conn, collection, room_id, list(ids))
            if collection in LEXICAL_COLLECTIONS:
                await self._add_statistics(
                    conn,
                    collection,
                    room_id,
                    -len(lengths),
                    -sum(lengths),
                    added=Counter(),
                    removed=removed,
                )

    async def fingerprints(
        self,
        collection: str,
        room_id: str,
        ids: Sequence[str] | None = None,
        kind: str | None = None,
    ) -> dict[str, str]:
        query = select(VectorPoint.point_id, VectorPoint.payload["fingerprint"].astext).where(
            VectorPoint.collection == collection, VectorPoint.room_id == room_id
        )
        if kind is not None:
            query = query.where(VectorPoint.payload["kind"].astext == kind)
        if ids is None:
            batches: list[Any] = [query]
        else:
            wanted = sorted(set(ids))
            batches = [
                query.where(VectorPoint.point_id == any_text(wanted[i : i + _BATCH * 4]))
                for i in range(0, len(wanted), _BATCH * 4)
            ]
        result: dict[str, str] = {}
        async with self.engine.connect() as conn:
            for batch in batches:
                for point_id, fingerprint in await conn.execute(batch):
                    result[point_id] = fingerprint or ""
        return result

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
            ORDER BY embedding::vector({dim}) <=> CAST(:q AS vector({dim})), text, point_id
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
            ORDER BY score DESC, text, point_id
            LIMIT :depth
            """
        )
        async with self.engine.connect() as conn:
            dense = (await conn.execute(dense_sql, params)).all()
            lexical = (await conn.execute(lexical_sql, params)).all() if query_text.strip() else []

        return reciprocal_rank_fusion([_hits(dense), _hits(lexical)], limit)

    async def search_dense(
        self,
        collection: str,
        room_id: str,
        vector: list[float],
        limit: int,
        where: PointFilter | None = None,
    ) -> list[VectorHit]:
        if limit <= 0:
            return []
        dim = len(vector)
        params: dict[str, Any] = {
            "collection": collection,
            "room_id": room_id,
            "q": _vector_literal(vector),
            "limit": limit,
        }
        condition = _filter_sql(where, params, "payload")
        sql = text(
            f"""
            SELECT point_id, text, payload,
                   1 - (embedding::vector({dim}) <=> CAST(:q AS vector({dim}))) AS score
            FROM vector_points
            WHERE collection = :collection AND room_id = :room_id AND dim = {dim} {condition}
            ORDER BY embedding::vector({dim}) <=> CAST(:q AS vector({dim})), point_id
            LIMIT :limit
            """
        )
        async with self.engine.connect() as conn:
            return _hits((await conn.execute(sql, params)).all())

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
        wanted = sorted({t for terms in queries for t in terms})
        if limit <= 0 or not wanted:
            return out
        async with self.engine.connect() as conn:
            stats = await self._statistics(conn, collection, room_id, wanted)
            if not stats.df:
                return out
            postings = await self._postings(conn, collection, room_id, stats.versions)
            allowed = None
            if where is not None and not where.empty:
                params: dict[str, Any] = {"c": collection, "r": room_id}
                condition = _filter_sql(where, params, "payload")
                allowed = set(
                    (
                        await conn.execute(
                            text(
                                "SELECT point_id FROM vector_points "
                                f"WHERE collection = :c AND room_id = :r {condition}"
                            ),
                            params,
                        )
                    ).scalars()
                )
            idf = {t: bm25_idf(stats.n_docs, df) for t, df in stats.df.items()}
            points, postings = self._cache.aligned(collection, room_id, postings)
            ranked = bm25_top(queries, postings, idf, stats.avg_len, points, limit, allowed)
            ids = sorted({pid for hits in ranked for pid, _ in hits})
            rows = (
                await conn.execute(
                    select(VectorPoint.point_id, VectorPoint.text, VectorPoint.payload).where(
                        VectorPoint.collection == collection,
                        VectorPoint.room_id == room_id,
                        VectorPoint.point_id == any_text(ids),
                    )
                )
            ).all()
        # A point deleted since its postings were read is no hit (nor was it in the SQL join).
        found = {pid: (body, payload) for pid, body, payload in rows}
        for qn, hits in enumerate(ranked):
            out[qn] = _hits([(pid, *found[pid], score) for pid, score in hits if pid in found])
        return out

    async def _postings(
        self, conn: Any, collection: str, room_id: str, versions: dict[str, int]
    ) -> dict[str, TermPostings]:
        """The terms' postings: from the cache when of the version the statistics gave, else
        read (each stale term's postings and version in one statement: one snapshot)."""
        cache = self._cache
        out, stale = cache.lookup(collection, room_id, versions)
        if stale:
            # Space-separated text lists: parsing three strings per term is several times
            # cheaper than a row (or array element) per posting through the driver.
            rows = await conn.execute(
                text(
                    """
                    SELECT t.term, t.version, string_agg(p.point_id, ' '),
                           string_agg(p.tf::text, ' '), string_agg(p.doc_len::text, ' ')
                    FROM lexical_terms t JOIN lexical_postings p
                      ON p.collection = t.collection AND p.room_id = t.room_id
                     AND p.term = t.term
                    WHERE t.collection = :c AND t.room_id = :r
                      AND t.term = ANY(CAST(:terms AS text[]))
                    GROUP BY t.term, t.version
                    """
                ),
                {"c": collection, "r": room_id, "terms": stale},
            )
            for term, version, ids, tfs, lengths in rows:
                out[term] = cache.put(
                    collection,
                    room_id,
                    term,
                    int(version),
                    ids.split(" "),
                    np.array(tfs.split(" "), dtype=np.int32),
                    np.array(lengths.split(" "), dtype=np.int32),
                )
        return out

    @staticmethod
    async def _statistics(
        conn: Any, collection: str, room_id: str, terms: Sequence[str]
    ) -> _Statistics:
        """The room's point count, average length, and each term's document frequency and
        postings version.

        One statement (a search pays for it on every query): the room's row, with the terms
        it has joined on (a room without the terms still gives its row).
        """
        rows = (
            await conn.execute(
                _STATISTICS_SQL,
                {"collection": collection, "room_id": room_id, "terms": list(terms)},
            )
        ).all()
        if not rows or not rows[0].n_docs:
            return _Statistics(0, 1.0, {}, {})
        n_docs, total_terms = int(rows[0].n_docs), int(rows[0].total_terms)
        avg_len = max(total_terms / max(n_docs, 1), 1.0)
        present = [r for r in rows if r.term is not None and r.df > 0]
        return _Statistics(
            n_docs,
            avg_len,
            {r.term: int(r.df) for r in present},
            {r.term: int(r.version) for r in present},
        )

    async def term_stats(
        self, collection: str, room_id: str, terms: Sequence[str]
    ) -> tuple[int, dict[str, int]]:
        async with self.engine.connect() as conn:
            stats = await self._statistics(conn, collection, room_id, sorted(set(terms)))
        return stats.n_docs, stats.df

    async def wipe_room(self, room_id: str) -> dict[str, int]:
        removed: dict[str, int] = {}
        async with self.engine.begin() as conn:
            for model in (VectorPoint, LexicalPosting, LexicalRoom, LexicalTerm):
                result = await conn.execute(delete(model).where(model.room_id == room_id))
                removed[f"postgres:{model.__tablename__}"] = result.rowcount
        return removed


_STATISTICS_SQL = text(
    """
    SELECT r.n_docs, r.total_terms, t.term, t.df, t.version
    FROM lexical_rooms r
    LEFT JOIN lexical_terms t
      ON t.collection = r.collection AND t.room_id = r.room_id
     AND t.term = ANY(CAST(:terms AS text[]))
    WHERE r.collection = :collection AND r.room_id = :room_id
    """
)


@dataclass(frozen=True)
class _Statistics:
    n_docs: int
    avg_len: float
    #: term -> document frequency and postings version, for the terms the room has.
    df: dict[str, int]
    versions: dict[str, int]


def _filter_sql(where: PointFilter | None, params: dict[str, Any], payload: str) -> str:
    """SQL conditions (with their bound parameters added to ``params``) for a PointFilter."""
    if where is None or where.empty:
        return ""
    parts = []
    if where.speakers:
        params["f_speakers"] = list(where.speakers)
        parts.append(f"({payload}->>'speaker') = ANY(:f_speakers)")
    if where.since is not None:
        params["f_since"] = where.since
        parts.append(f"({payload}->>'ts')::float >= :f_since")
    if where.until is not None:
        params["f_until"] = where.until
        parts.append(f"({payload}->>'ts')::float <= :f_until")
    return "".join(f" AND {p}" for p in parts)


def _hits(rows: Sequence[Any]) -> list[VectorHit]:
    out = []
    for point_id, body, payload, score in rows:
        data = json.loads(payload) if isinstance(payload, str) else payload
        out.append(VectorHit(id=point_id, score=float(score), text=body, payload=data))
    return out
