"""Vector store on pgvector (the embedded default).

One table for every collection; the vector column has no fixed dimension, and each dimension
gets a partial HNSW index on ``embedding::vector(dim)`` (cosine). Lexical retrieval: the hybrid
``search`` uses the generated ``tsvector`` column (pgserver's pgvector 0.6 has no sparse
vectors), fused with the dense ranking by RRF; ``search_lexical`` is Okapi BM25 computed in SQL
from ``lexical_postings`` (one row per term of a point, terms from :mod:`knowledge.lexical`),
with IDF and average length over the room's points of the collection.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from dbschema.models import LexicalPosting, LexicalRoom, LexicalTerm, VectorPoint
from knowledge.lexical import BM25_B, BM25_K1, bm25_idf, term_frequencies
from knowledge.relational import any_text
from knowledge.stores.base import (
    ENTITIES,
    EVIDENCE,
    PointFilter,
    VectorHit,
    VectorRecord,
    reciprocal_rank_fusion,
)

_BATCH = 500
_ANALYZE_AFTER = 200
# Collections whose points get BM25 postings (``search_lexical``); the others are searched with
# the hybrid ``search`` only, and postings of long chunk texts would cost writes for nothing.
LEXICAL_COLLECTIONS = frozenset({EVIDENCE, ENTITIES})


def _vector_literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(f"{v:.7g}" for v in vector) + "]"


class PgVectorStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
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
        changed = sorted(t for t, n in df.items() if n)  # sorted: writers lock rows in one order
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
                "DO UPDATE SET df = lexical_terms.df + excluded.df"
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
            n_docs, avg_len, df = await self._statistics(conn, collection, room_id, wanted)
            params = _bm25_parameters(queries, n_docs, avg_len, df)
            if not params["qns"]:
                return out
            params.update(collection=collection, room_id=room_id, limit=limit)
            condition = _filter_sql(where, params, "v.payload")
            # Pruning only pays when a term is common enough to be probed; otherwise every
            # posting is read anyway, and summing them in one pass is cheaper.
            sql = _pruned_bm25_sql if any(params["qprobe"]) else _summed_bm25_sql
            rows = (await conn.execute(text(sql(condition)), params)).all()
        for qn, *hit in rows:
            out[qn] += _hits([hit])
        return out

    @staticmethod
    async def _statistics(
        conn: Any, collection: str, room_id: str, terms: Sequence[str]
    ) -> tuple[int, float, dict[str, int]]:
        """The room's point count, average length, and each term's document frequency.

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
            return 0, 1.0, {}
        n_docs, total_terms = int(rows[0].n_docs), int(rows[0].total_terms)
        avg_len = max(total_terms / max(n_docs, 1), 1.0)
        return n_docs, avg_len, {r.term: int(r.df) for r in rows if r.term is not None}

    async def term_stats(
        self, collection: str, room_id: str, terms: Sequence[str]
    ) -> tuple[int, dict[str, int]]:
        async with self.engine.connect() as conn:
            n_docs, _, df = await self._statistics(conn, collection, room_id, sorted(set(terms)))
        return n_docs, df

    async def wipe_room(self, room_id: str) -> dict[str, int]:
        removed: dict[str, int] = {}
        async with self.engine.begin() as conn:
            for model in (VectorPoint, LexicalPosting, LexicalRoom, LexicalTerm):
                result = await conn.execute(delete(model).where(model.room_id == room_id))
                removed[f"postgres:{model.__tablename__}"] = result.rowcount
        return removed


_STATISTICS_SQL = text(
    """
    SELECT r.n_docs, r.total_terms, t.term, t.df
    FROM lexical_rooms r
    LEFT JOIN lexical_terms t
      ON t.collection = r.collection AND t.room_id = r.room_id
     AND t.term = ANY(CAST(:terms AS text[]))
    WHERE r.collection = :collection AND r.room_id = :room_id
    """
)


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


#: How many of a query's rarest terms always have their postings read, and how many times more
#: postings than its rarer terms together a term needs to be probed rather than read (see
#: ``_pruned_bm25_sql``): a probe is an index descent, several times a posting read.
_RARE_TERMS = 2
_PROBE_RATIO = 4


def _bm25_parameters(
    queries: Sequence[Sequence[str]], n_docs: int, avg_len: float, df: dict[str, int]
) -> dict[str, Any]:
    """Bound parameters of ``_pruned_bm25_sql``: one row per (query, term) the room has."""
    rows_in: list[tuple[int, str, float, float, bool, bool]] = []
    for qn, terms in enumerate(queries):
        present = sorted({t for t in terms if df.get(t, 0) > 0}, key=lambda t: (df[t], t))
        rarer = 0  # postings of the query's terms rarer than this one
        for rank, term in enumerate(present):
            idf = bm25_idf(n_docs, df[term])
            # ``rare``: the query's rarest terms, whose postings are always read; their
            # scores set the floor below which the other terms may be probed instead.
            # Probing looks a term up once per point the rarer terms found, so it only
            # pays for a term much more common than those together.
            rare = rank < _RARE_TERMS
            probe = not rare and df[term] >= _PROBE_RATIO * rarer
            rows_in.append((qn, term, idf, idf * (BM25_K1 + 1), rare, probe))
            rarer += df[term]
    asked = [{t for t in terms if df.get(t, 0) > 0} for terms in queries if terms]
    return {
        # Terms every query has (``_summed_bm25_sql`` scores them once for all).
        "shared": sorted(set.intersection(*asked)) if asked else [],
        "qns": [r[0] for r in rows_in],
        "qterms": [r[1] for r in rows_in],
        "qidf": [r[2] for r in rows_in],
        "qub": [r[3] for r in rows_in],
        "qrare": [r[4] for r in rows_in],
        "qprobe": [r[5] for r in rows_in],
        "k1": BM25_K1,
        "b": BM25_B,
        "avg_len": avg_len,
    }


def _bm25_weight(idf: str, posting: str) -> str:
    return (
        f"{idf} * {posting}.tf * (:k1 + 1) / ({posting}.tf + :k1 * "
        f"(1 - :b + :b * {posting}.doc_len / :avg_len))"
    )


def _allowed_points(condition: str) -> tuple[str, Callable[[str], str]]:
    """The ``allowed`` CTE of a filtered search, and the join that keeps a CTE to it.

    A filter narrows the candidates to the points it allows, found first through the payload
    indexes (migration 0013) and hash-joined: probing every scored point's row instead cost a
    row read per posting of a common term. Without a filter there is neither.
    """
    if not condition:
        return "", lambda alias: ""
    cte = f""", allowed AS MATERIALIZED (
            SELECT v.point_id FROM vector_points v
            WHERE v.collection = :collection AND v.room_id = :room_id {condition}
        )"""
    return cte, lambda alias: f"JOIN allowed a ON a.point_id = {alias}.point_id"


def _postings_of(terms: str) -> str:
    """Each posting of the ``terms`` rows (term, idf) with its BM25 weight ``w``.

    Driven by the terms, so the plan does not depend on table statistics (fresh bulk loads have
    none): one index-only range scan per distinct term, read once for every query.
    """
    return f"""
            SELECT t.term, p.point_id, {_bm25_weight("t.idf", "p")} AS w
            FROM ({terms}) t CROSS JOIN LATERAL (
                SELECT point_id, tf, doc_len FROM lexical_postings
                WHERE collection = :collection AND room_id = :room_id AND term = t.term
                OFFSET 0  -- an optimisation fence: one index range scan per term
            ) p"""


#: The end of both BM25 statements: each query's best ``limit`` (``ranked``) with their text.
_RANKED_HITS = """
        SELECT r.qn, v.point_id, v.text, v.payload, r.score
        FROM ranked r JOIN vector_points v
          ON v.collection = :collection AND v.room_id = :room_id AND v.point_id = r.point_id
        WHERE r.rn <= :limit
        ORDER BY r.qn, r.rn
"""


def _summed_bm25_sql(condition: str) -> str:
    """BM25 top ``limit`` of each query, summing every posting of its terms.

    A query's score is its shared terms' score plus its own terms' score. A point none of whose
    own terms a query has scores its shared score alone, so among such points only the best
    ``limit`` by shared score can make that query's top ``limit``: exact, and the shared terms'
    postings (the question's own, when the other queries expand it with a name) are summed once
    for all the queries.
    """
    allowed, kept = _allowed_points(condition)
    return f"""
        WITH qt AS MATERIALIZED (
            SELECT DISTINCT qn, term, idf FROM unnest(
                CAST(:qns AS int[]), CAST(:qterms AS text[]), CAST(:qidf AS float8[])
            ) AS x(qn, term, idf)
        ){allowed}, postings AS MATERIALIZED (
            {_postings_of("SELECT DISTINCT term, idf FROM qt")}
        ), shared AS MATERIALIZED (
            SELECT point_id, sum(w) AS score FROM postings
            WHERE term = ANY(CAST(:shared AS text[])) GROUP BY point_id
        ), shared_top AS MATERIALIZED (
            SELECT s.point_id, s.score FROM shared s {kept("s")}
            ORDER BY s.score DESC, s.point_id LIMIT :limit
        ), own AS MATERIALIZED (
            SELECT qt.qn, p.point_id, sum(p.w) AS score
            FROM qt JOIN postings p USING (term)
            WHERE NOT qt.term = ANY(CAST(:shared AS text[]))
            GROUP BY qt.qn, p.point_id
        ), candidates AS MATERIALIZED (
            SELECT o.qn, o.point_id, o.score + coalesce(s.score, 0) AS score
            FROM own o {kept("o")} LEFT JOIN shared s ON s.point_id = o.point_id
            UNION ALL
            SELECT q.qn, t.point_id, t.score
            FROM (SELECT DISTINCT qn FROM qt) q CROSS JOIN shared_top t
            WHERE NOT EXISTS (
                SELECT 1 FROM own o WHERE o.qn = q.qn AND o.point_id = t.point_id
            )
        ), ranked AS MATERIALIZED (
            SELECT qn, point_id, score,
                   row_number() OVER (PARTITION BY qn ORDER BY score DESC, point_id) AS rn
            FROM candidates
        ){_RANKED_HITS}"""


def _pruned_bm25_sql(condition: str) -> str:
    """Exact BM25 top ``limit`` of each query, reading common terms' postings only when needed.

    MaxScore-style: a term contributes at most ``ub = idf * (k1 + 1)`` to a point. Each query's
    two rarest terms are read in full; the ``limit``-th best score over them is a floor the
    final ``limit``-th score cannot fall below. The query's other terms whose bounds, summed
    from the smallest, stay below that floor are *probed*: a point containing only such terms
    cannot reach the top, so their postings are looked up (by primary key) only for the points
    the read terms found, and only for those whose score plus the probed bounds can still
    reach the floor. Every other term is read in full. The result is the same ranking as
    summing every posting; what is saved is the postings of the common terms ("project" in a
    room where a third of the messages say it).
    """
    allowed, kept = _allowed_points(condition)
    # Terms read in full besides the rare ones (a term rare for one query is read once).
    read_terms = (
        "SELECT DISTINCT term, idf FROM roles WHERE NOT probed "
        "AND term NOT IN (SELECT term FROM qt WHERE rare)"
    )

    def limit_th(source: str) -> str:
        return f"""coalesce((
            SELECT s.score FROM {source} s WHERE s.qn = q.qn
            ORDER BY s.score DESC OFFSET :limit - 1 LIMIT 1
        ), 0)"""

    return f"""
        WITH qt AS MATERIALIZED (
            SELECT * FROM unnest(
                CAST(:qns AS int[]), CAST(:qterms AS text[]), CAST(:qidf AS float8[]),
                CAST(:qub AS float8[]), CAST(:qrare AS boolean[]), CAST(:qprobe AS boolean[])
            ) AS x(qn, term, idf, ub, rare, probe)
        ){allowed}, queries AS MATERIALIZED (
            SELECT DISTINCT qn FROM qt
        ), rare_postings AS MATERIALIZED (
            {_postings_of("SELECT DISTINCT term, idf FROM qt WHERE rare")}
        ), rare_scores AS MATERIALIZED (
            SELECT qt.qn, r.point_id, sum(r.w) AS score
            FROM qt JOIN rare_postings r USING (term) {kept("r")}
            WHERE qt.rare GROUP BY qt.qn, r.point_id
        ), roles AS MATERIALIZED (
            SELECT r.qn, r.term, r.idf, r.ub, r.probe AND r.running < f.floor AS probed
            FROM (
                SELECT qn, term, idf, ub, probe,
                       sum(ub) OVER (PARTITION BY qn ORDER BY ub, term) AS running
                FROM qt WHERE NOT rare
            ) r JOIN (SELECT q.qn, {limit_th("rare_scores")} AS floor FROM queries q) f
              USING (qn)
        ), read_postings AS MATERIALIZED (
            SELECT * FROM rare_postings
            UNION ALL
            {_postings_of(read_terms)}
        ), partial AS MATERIALIZED (
            SELECT qn, point_id, sum(score) AS score FROM (
                SELECT qn, point_id, score FROM rare_scores
                UNION ALL
                SELECT r.qn, s.point_id, s.w
                FROM roles r JOIN read_postings s USING (term) {kept("s")}
                WHERE NOT r.probed
            ) x GROUP BY qn, point_id
        ), bounds AS MATERIALIZED (
            SELECT q.qn, {limit_th("partial")} AS floor,
                   coalesce((SELECT sum(ub) FROM roles r WHERE r.qn = q.qn AND r.probed), 0)
                       AS probed_ub
            FROM queries q
        ), scored AS MATERIALIZED (
            SELECT p.qn, p.point_id, p.score + x.extra AS score
            FROM partial p JOIN bounds b USING (qn) CROSS JOIN LATERAL (
                SELECT coalesce(sum({_bm25_weight("r.idf", "lp")}), 0) AS extra
                FROM roles r JOIN lexical_postings lp
                  ON lp.collection = :collection AND lp.room_id = :room_id
                 AND lp.term = r.term AND lp.point_id = p.point_id
                WHERE r.qn = p.qn AND r.probed
            ) x
            WHERE p.score + b.probed_ub >= b.floor
        ), ranked AS MATERIALIZED (
            SELECT qn, point_id, score,
                   row_number() OVER (PARTITION BY qn ORDER BY score DESC, point_id) AS rn
            FROM scored
        ){_RANKED_HITS}"""
