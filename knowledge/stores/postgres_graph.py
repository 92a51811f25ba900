"""Graph store on PostgreSQL tables (the embedded default)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dbschema.models import (
    GraphCommunity,
    GraphCommunityReport,
    GraphEntity,
    GraphRelationship,
)
from knowledge.graph import (
    Community,
    CommunityReport,
    Entity,
    Relationship,
    RoomGraph,
    TopologyDigest,
)
from knowledge.relational import any_text, insert_records, text_array
from knowledge.stores.base import COUNT_KINDS, counted_kinds

_BATCH = 1000


def _entity(row: Any) -> Entity:
    return Entity(
        name=row.name,
        display_name=row.display_name,
        type=row.type,
        description=row.description,
        source_chunk_ids=list(getattr(row, "source_chunk_ids", ())),
        mentions=row.mentions,
    )


def _relationship(row: Any) -> Relationship:
    return Relationship(
        source=row.source,
        target=row.target,
        weight=row.weight,
        description=row.description,
        source_chunk_ids=list(getattr(row, "source_chunk_ids", ())),
    )


# The columns of a neighbourhood read without provenance.
_NEIGHBOURHOOD_ENTITY = (
    GraphEntity.name,
    GraphEntity.display_name,
    GraphEntity.type,
    GraphEntity.description,
    GraphEntity.mentions,
)
_NEIGHBOURHOOD_RELATIONSHIP = (
    GraphRelationship.source,
    GraphRelationship.target,
    GraphRelationship.weight,
    GraphRelationship.description,
)

_ENTITY_COLUMNS = ("display_name", "type", "description", "source_chunk_ids", "mentions")
_RELATIONSHIP_COLUMNS = ("description", "weight", "source_chunk_ids")


def _entity_values(room_id: str, e: Entity) -> dict[str, Any]:
    return {
        "room_id": room_id,
        "name": e.name,
        "display_name": e.display_name,
        "type": e.type,
        "description": e.description,
        "source_chunk_ids": list(e.source_chunk_ids),
        "mentions": e.mentions,
    }


def _relationship_values(room_id: str, r: Relationship) -> dict[str, Any]:
    return {
        "room_id": room_id,
        "source": r.source,
        "target": r.target,
        "description": r.description,
        "weight": r.weight,
        "source_chunk_ids": list(r.source_chunk_ids),
    }


def _community_rows(room_id: str, communities: Sequence[Community]) -> list[dict[str, Any]]:
    return [
        {
            "room_id": room_id,
            "id": c.id,
            "level": c.level,
            "parent_id": c.parent_id,
            "entity_names": c.entity_names,
            "graph_fingerprint": c.graph_fingerprint,
            "drift": c.drift,
            "baseline_weight": c.baseline_weight,
        }
        for c in communities
    ]


#: The rows of a changes upsert, as a JSON recordset (``insert_records``).
_ENTITY_RECORD = (
    "room_id text, name text, display_name text, type text, description text, "
    "source_chunk_ids text[], mentions int"
)
_RELATIONSHIP_RECORD = (
    "room_id text, source text, target text, description text, weight float8, "
    "source_chunk_ids text[]"
)


def _upsert(keys: Sequence[str], record: str) -> str:
    """The ``ON CONFLICT`` clause that updates every column of ``record`` but the keys."""
    columns = [c.split()[0] for c in record.split(", ")]
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in keys)
    return f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"


async def _insert_batches(conn: AsyncConnection, model: type, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), _BATCH):
        await conn.execute(insert(model), rows[start : start + _BATCH])


class PostgresGraphStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def ensure_schema(self) -> None:
        """The tables come with the migrations; nothing to do at run time."""

    async def replace_graph(self, room_id: str, graph: RoomGraph) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(GraphRelationship).where(GraphRelationship.room_id == room_id)
            )
            await conn.execute(delete(GraphEntity).where(GraphEntity.room_id == room_id))
            rows = [_entity_values(room_id, e) for e in graph.entities]
            await _insert_batches(conn, GraphEntity, rows)
            rel_rows = [_relationship_values(room_id, r) for r in graph.relationships]
            await _insert_batches(conn, GraphRelationship, rel_rows)

    async def apply_graph_changes(
        self,
        room_id: str,
        entities: Sequence[Entity],
        relationships: Sequence[Relationship],
        deleted_entities: Sequence[str] = (),
        deleted_pairs: Sequence[tuple[str, str]] = (),
    ) -> None:
        async with self.engine.begin() as conn:
            if deleted_pairs:
                sources, targets = zip(*deleted_pairs, strict=True)
                await conn.execute(
                    text(
                        "DELETE FROM graph_relationships r USING unnest("
                        "CAST(:sources AS text[]), CAST(:targets AS text[])) AS d(s, t) "
                        "WHERE r.room_id = :room AND r.source = d.s AND r.target = d.t"
                    ),
                    {"room": room_id, "sources": list(sources), "targets": list(targets)},
                )
            if deleted_entities:
                names = list(deleted_entities)
                await conn.execute(
                    delete(GraphRelationship).where(
                        GraphRelationship.room_id == room_id,
                        or_(
                            GraphRelationship.source.in_(names), GraphRelationship.target.in_(names)
                        ),
                    )
                )
                await conn.execute(
                    delete(GraphEntity).where(
                        GraphEntity.room_id == room_id, GraphEntity.name.in_(names)
                    )
                )
            # As JSON recordsets: a busy entity's thousands of chunk ids, bound as array
            # parameters, were most of writing a one-message change at 100k messages.
            await insert_records(
                conn,
                "graph_entities",
                _ENTITY_RECORD,
                [_entity_values(room_id, e) for e in entities],
                _upsert(("room_id", "name"), _ENTITY_RECORD),
            )
            await insert_records(
                conn,
                "graph_relationships",
                _RELATIONSHIP_RECORD,
                [_relationship_values(room_id, r) for r in relationships],
                _upsert(("room_id", "source", "target"), _RELATIONSHIP_RECORD),
            )

    async def get_relationships(
        self, room_id: str, pairs: Sequence[tuple[str, str]]
    ) -> list[Relationship]:
        if not pairs:
            return []
        sources, targets = zip(*sorted(set(pairs)), strict=True)
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT r.* FROM graph_relationships r JOIN unnest("
                        "CAST(:sources AS text[]), CAST(:targets AS text[])) AS d(s, t) "
                        "ON r.source = d.s AND r.target = d.t WHERE r.room_id = :room "
                        "ORDER BY r.source, r.target"
                    ),
                    {"room": room_id, "sources": list(sources), "targets": list(targets)},
                )
            ).all()
        return [_relationship(r) for r in rows]

    async def get_graph(self, room_id: str, provenance: bool = True) -> RoomGraph:
        entity_columns = [getattr(GraphEntity, c) for c in ("name", *_ENTITY_COLUMNS)]
        rel_columns = [
            getattr(GraphRelationship, c) for c in ("source", "target", *_RELATIONSHIP_COLUMNS)
        ]
        if not provenance:
            entity_columns = [c for c in entity_columns if c.key != "source_chunk_ids"]
            rel_columns = [c for c in rel_columns if c.key != "source_chunk_ids"]
        async with self.engine.connect() as conn:
            entities = (
                await conn.execute(
                    select(*entity_columns)
                    .where(GraphEntity.room_id == room_id)
                    .order_by(GraphEntity.name)
                )
            ).all()
            rels = (
                await conn.execute(
                    select(*rel_columns)
                    .where(GraphRelationship.room_id == room_id)
                    .order_by(GraphRelationship.source, GraphRelationship.target)
                )
            ).all()
        if provenance:
            return RoomGraph(
                entities=[_entity(r) for r in entities],
                relationships=[_relationship(r) for r in rels],
            )
        # Positional, not by attribute: a missing attribute costs a raised KeyError per row
        # (a third of the read at 100k relationships).
        return RoomGraph(
            entities=[
                Entity(name, display, kind, description, [], mentions)
                for name, display, kind, description, mentions in entities
            ],
            relationships=[
                Relationship(source, target, weight, description, [])
                for source, target, description, weight in rels
            ],
        )

    async def get_entities(self, room_id: str, names: Sequence[str]) -> list[Entity]:
        if not names:
            return []
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(GraphEntity)
                    .where(
                        GraphEntity.room_id == room_id,
                        # One array parameter: an IN list of thousands of names costs more to
                        # compile than to run.
                        GraphEntity.name == any_text(sorted(set(names))),
                    )
                    .order_by(GraphEntity.name)
                )
            ).all()
        return [_entity(r) for r in rows]

    async def entity_names(self, room_id: str) -> list[str]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(GraphEntity.name).where(GraphEntity.room_id == room_id)
            )
            return sorted(r[0] for r in rows)

    async def entities_outside_communities(self, room_id: str) -> list[str]:
        sql = text(
            """
            SELECT name FROM graph_entities WHERE room_id = :room_id
            EXCEPT
            SELECT unnest(entity_names) FROM graph_communities
            WHERE room_id = :room_id AND level = 0
            """
        )
        async with self.engine.connect() as conn:
            return sorted(str(r[0]) for r in await conn.execute(sql, {"room_id": room_id}))

    async def entity_names_matching(
        self, room_id: str, names: Collection[str], words: Collection[str] = ()
    ) -> list[str]:
        if not names and not words:
            return []
        # Exact names by the primary key; names with a word through the GIN index of their
        # words (migration 0019).
        sql = text(
            """
            SELECT name FROM graph_entities
            WHERE room_id = :room_id AND name = ANY(CAST(:names AS text[]))
            UNION
            SELECT name FROM graph_entities
            WHERE room_id = :room_id
              AND string_to_array(name, ' ') && CAST(:words AS text[])
            """
        )
        params = {"room_id": room_id, "names": sorted(set(names)), "words": sorted(set(words))}
        async with self.engine.connect() as conn:
            return sorted(str(r[0]) for r in await conn.execute(sql, params))

    async def entity_labels(self, room_id: str) -> list[tuple[str, str]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(GraphEntity.name, GraphEntity.display_name)
                .where(GraphEntity.room_id == room_id)
                .order_by(GraphEntity.name)
            )
            return [(name, display) for name, display in rows]

    async def entity_mentions(self, room_id: str, names: Collection[str]) -> dict[str, int]:
        if not names:
            return {}
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(GraphEntity.name, GraphEntity.mentions).where(
                    GraphEntity.room_id == room_id,
                    GraphEntity.name == any_text(sorted(names)),
                )
            )
            return {name: int(mentions) for name, mentions in rows}

    async def topology(self, room_id: str) -> tuple[list[str], list[tuple[str, str, float]]]:
        async with self.engine.connect() as conn:
            names = await conn.execute(
                select(GraphEntity.name).where(GraphEntity.room_id == room_id)
            )
            edges = await conn.execute(
                select(GraphRelationship.source, GraphRelationship.target, GraphRelationship.weight)
                .where(GraphRelationship.room_id == room_id)
                .order_by(GraphRelationship.source, GraphRelationship.target)
            )
            return sorted(r[0] for r in names), [(a, b, float(w)) for a, b, w in edges]

    async def topology_digest(self, room_id: str) -> TopologyDigest:
        # An order-free digest (count and sum of 64-bit hashes of each node and each weighted
        # edge) aggregated in the server: no edge leaves it, and no sort. At 100k messages
        # (87k relationships) this is ~35 ms, where reading the topology out and hashing it in
        # Python took ~0.4 s. float8's text is its shortest exact form, so any weight change
        # changes the hash.
        sql = text(
            """
            SELECT
              ARRAY(SELECT name FROM graph_entities WHERE room_id = :room) AS names,
              (SELECT count(*) || ':' || coalesce(sum(hashtextextended(name, 0)::numeric), 0)
               FROM graph_entities WHERE room_id = :room) AS node_digest,
              e.n || ':' || e.h AS edge_digest,
              e.w AS total_weight
            FROM (
              SELECT count(*) AS n,
                     coalesce(sum(hashtextextended(
                       least(source, target) || E'\\x1f' || greatest(source, target)
                       || E'\\x1f' || weight::text, 0)::numeric), 0) AS h,
                     coalesce(sum(weight), 0) AS w
              FROM graph_relationships WHERE room_id = :room AND source <> target
            ) e
            """
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(sql, {"room": room_id})).one()
        return TopologyDigest(
            nodes=sorted(row.names),
            total_weight=float(row.total_weight),
            digest=f"pg:{row.node_digest}|{row.edge_digest}",
        )

    async def relationships_touching(
        self, room_id: str, names: Collection[str]
    ) -> list[tuple[str, str, float]]:
        if not names:
            return []
        wanted = any_text(sorted(names))
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(GraphRelationship.source, GraphRelationship.target, GraphRelationship.weight)
                .where(
                    GraphRelationship.room_id == room_id,
                    or_(GraphRelationship.source == wanted, GraphRelationship.target == wanted),
                )
                .order_by(GraphRelationship.source, GraphRelationship.target)
            )
            return [(a, b, float(w)) for a, b, w in rows]

    async def dangling_relationships(self, room_id: str) -> list[tuple[str, str]]:
        sql = text(
            """
            SELECT r.source, r.target FROM graph_relationships r
            LEFT JOIN graph_entities a ON a.room_id = r.room_id AND a.name = r.source
            LEFT JOIN graph_entities b ON b.room_id = r.room_id AND b.name = r.target
            WHERE r.room_id = :room_id AND (a.name IS NULL OR b.name IS NULL)
            """
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sql, {"room_id": room_id})).all()
        return sorted((str(a), str(b)) for a, b in rows)

    async def neighbourhood(
        self, room_id: str, seeds: Sequence[str], hops: int, limit: int, provenance: bool = True
    ) -> RoomGraph:
        found: list[str] = list(dict.fromkeys(seeds))[:limit]
        frontier = set(found)
        seen = set(found)
        async with self.engine.connect() as conn:
            for _ in range(hops):
                if not frontier or len(found) >= limit:
                    break
                ties = (
                    select(GraphRelationship.source, GraphRelationship.target)
                    .where(
                        GraphRelationship.room_id == room_id,
                        or_(
                            GraphRelationship.source == any_text(frontier),
                            GraphRelationship.target == any_text(frontier),
                        ),
                    )
                    .order_by(
                        GraphRelationship.weight.desc(),
                        GraphRelationship.source,
                        GraphRelationship.target,
                    )
                )
                next_frontier: set[str] = set()
                # In pages, strongest first, until the limit is reached: a hub of a large room
                # has thousands of ties, and only the first few add entities.
                page, offset = max(64, 4 * limit), 0
                while len(found) < limit:
                    rows = (await conn.execute(ties.limit(page).offset(offset))).all()
                    for source, target in rows:
                        for name in (source, target):
                            if name not in seen and len(found) < limit:
                                seen.add(name)
                                found.append(name)
                                next_frontier.add(name)
                    if len(rows) < page:
                        break
                    offset += page
                frontier = next_frontier
            # One array parameter: an IN list of thousands of names (the reports step reads
            # whole communities this way) costs more to compile than to run.
            among = any_text(found)
            entity_columns = (GraphEntity,) if provenance else _NEIGHBOURHOOD_ENTITY
            relationship_columns = (
                (GraphRelationship,) if provenance else _NEIGHBOURHOOD_RELATIONSHIP
            )
            entities = (
                await conn.execute(
                    select(*entity_columns).where(
                        GraphEntity.room_id == room_id, GraphEntity.name == among
                    )
                )
            ).all()
            rels = (
                await conn.execute(
                    select(*relationship_columns)
                    .where(
                        GraphRelationship.room_id == room_id,
                        GraphRelationship.source == among,
                        GraphRelationship.target == among,
                    )
                    .order_by(GraphRelationship.weight.desc())
                )
            ).all()
        order = {name: i for i, name in enumerate(found)}
        return RoomGraph(
            entities=sorted((_entity(r) for r in entities), key=lambda e: order[e.name]),
            relationships=[_relationship(r) for r in rels],
        )

    async def top_source_chunks(
        self, room_id: str, weights: Sequence[tuple[str, float]], limit: int
    ) -> list[tuple[str, float]]:
        if not weights or limit <= 0:
            return []
        sql = text(
            """
            -- Summed in rank order, as the generator adds them: a float sum in another order
            -- can differ in its last bit and break a tie the other way.
            SELECT c.chunk_id, sum(w.weight ORDER BY w.rank) AS votes
            FROM unnest(CAST(:names AS text[]), CAST(:weights AS float8[]))
                 WITH ORDINALITY AS w(name, weight, rank)
            JOIN graph_entities e ON e.room_id = :room_id AND e.name = w.name
            CROSS JOIN LATERAL unnest(e.source_chunk_ids) WITH ORDINALITY AS c(chunk_id, place)
            GROUP BY c.chunk_id
            ORDER BY votes DESC, min(ARRAY[w.rank, c.place])
            LIMIT :limit
            """
        )
        params = {
            "room_id": room_id,
            "names": [name for name, _ in weights],
            "weights": [float(weight) for _, weight in weights],
            "limit": limit,
        }
        async with self.engine.connect() as conn:
            return [(str(cid), float(votes)) for cid, votes in await conn.execute(sql, params)]

    async def replace_communities(self, room_id: str, communities: Sequence[Community]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(GraphCommunity).where(GraphCommunity.room_id == room_id))
            await _insert_batches(conn, GraphCommunity, _community_rows(room_id, communities))

    async def apply_community_changes(
        self,
        room_id: str,
        upserts: Sequence[Community],
        deletes: Sequence[str],
        fingerprint: str | None,
        drift: int,
        baseline_weight: float,
    ) -> None:
        gone = sorted({*deletes, *(c.id for c in upserts)})
        async with self.engine.begin() as conn:
            if gone:
                await conn.execute(
                    delete(GraphCommunity).where(
                        GraphCommunity.room_id == room_id,
                        GraphCommunity.id == any_text(gone),
                    )
                )
            await _insert_batches(conn, GraphCommunity, _community_rows(room_id, upserts))
            await conn.execute(
                update(GraphCommunity)
                .where(GraphCommunity.room_id == room_id)
                .values(graph_fingerprint=fingerprint, drift=drift, baseline_weight=baseline_weight)
            )

    async def get_communities(
        self,
        room_id: str,
        ids: Collection[str] | None = None,
        containing: Collection[str] | None = None,
    ) -> list[Community]:
        query = select(GraphCommunity).where(GraphCommunity.room_id == room_id)
        if ids is not None or containing is not None:
            # One array parameter each; ``&&`` (overlap) is served by the GIN index on the
            # members (migration 0016).
            wanted = []
            if ids:
                wanted.append(GraphCommunity.id == any_text(sorted(ids)))
            if containing:
                wanted.append(GraphCommunity.entity_names.overlap(text_array(sorted(containing))))
            if not wanted:
                return []
            query = query.where(or_(*wanted))
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(query.order_by(GraphCommunity.level, GraphCommunity.id))
            ).all()
        return [
            Community(
                id=r.id,
                level=r.level,
                parent_id=r.parent_id,
                entity_names=list(r.entity_names),
                graph_fingerprint=r.graph_fingerprint,
                drift=r.drift,
                baseline_weight=r.baseline_weight,
            )
            for r in rows
        ]

    async def upsert_reports(self, room_id: str, reports: Sequence[CommunityReport]) -> None:
        if not reports:
            return
        async with self.engine.begin() as conn:
            for report in reports:
                values = {
                    "room_id": room_id,
                    "community_id": report.community_id,
                    "level": report.level,
                    "title": report.title,
                    "summary": report.summary,
                    "findings": report.findings,
                    "rank": report.rank,
                    "content_hash": report.content_hash,
                    "source_chunk_ids": report.source_chunk_ids,
                }
                stmt = insert(GraphCommunityReport).values(**values)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["room_id", "community_id"],
                    set_={
                        k: stmt.excluded[k] for k in values if k not in ("room_id", "community_id")
                    }
                    | {"generated_at": func.now()},
                )
                await conn.execute(stmt)

    async def delete_reports(self, room_id: str, community_ids: Sequence[str]) -> None:
        if not community_ids:
            return
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(GraphCommunityReport).where(
                    GraphCommunityReport.room_id == room_id,
                    GraphCommunityReport.community_id.in_(list(community_ids)),
                )
            )

    async def get_reports(
        self, room_id: str, community_ids: Sequence[str] | None = None
    ) -> list[CommunityReport]:
        query = select(GraphCommunityReport).where(GraphCommunityReport.room_id == room_id)
        if community_ids is not None:
            wanted = sorted(set(community_ids))
            query = query.where(GraphCommunityReport.community_id == any_text(wanted))
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    query.order_by(
                        GraphCommunityReport.rank.desc(), GraphCommunityReport.community_id
                    )
                )
            ).all()
        return [
            CommunityReport(
                community_id=r.community_id,
                level=r.level,
                title=r.title,
                summary=r.summary,
                findings=list(r.findings),
                rank=r.rank,
                content_hash=r.content_hash,
                source_chunk_ids=list(r.source_chunk_ids),
                generated_at=r.generated_at,
            )
            for r in rows
        ]

    async def counts(self, room_id: str, kinds: Collection[str] = COUNT_KINDS) -> dict[str, int]:
        models: dict[str, Any] = {
            "entities": GraphEntity,
            "relationships": GraphRelationship,
            "communities": GraphCommunity,
            "reports": GraphCommunityReport,
        }
        asked = counted_kinds(kinds)
        if not asked:
            return {}
        # One statement (one round trip), each count an index-only scan of the room's rows.
        query = select(
            *(
                select(func.count())
                .select_from(models[key])
                .where(models[key].room_id == room_id)
                .scalar_subquery()
                .label(key)
                for key in asked
            )
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one()
        return {key: int(row[i]) for i, key in enumerate(asked)}

    async def wipe_room(self, room_id: str) -> dict[str, int]:
        removed: dict[str, int] = {}
        async with self.engine.begin() as conn:
            for model in (GraphCommunityReport, GraphCommunity, GraphRelationship, GraphEntity):
                result = await conn.execute(delete(model).where(model.room_id == room_id))
                removed[f"postgres:{model.__tablename__}"] = result.rowcount
        return removed
