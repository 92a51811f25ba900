"""Graph store on Neo4j 5 (production): APOC for neighbourhoods, GDS for Leiden.

Same results as :class:`~knowledge.stores.postgres_graph.PostgresGraphStore` for every
``GraphStore`` call (one contract suite runs on both). The model and its constraints live in
``dbschema/neo4j/schema.cypher``:

- ``(:Entity {room_id, name, display_name, type, description, source_chunk_ids, mentions, fp})``,
  unique on ``(room_id, name)``; ``name`` is the case-normalized key, ``display_name`` the
  first-seen casing, ``fp`` a fingerprint of the other properties.
- ``(:Entity)-[:RELATED {room_id, weight, description, source_chunk_ids, fp}]->(:Entity)``, one
  per pair, stored from ``source`` to ``target`` (``source < target`` by the graph invariants).
  Unlike the PostgreSQL table, a relationship needs both its entities: one whose endpoint is
  not in the graph is not stored.
- ``(:Community {room_id, id, level, parent_id, entity_names})`` and
  ``(:Report {room_id, community_id, …, findings (JSON text), generated_at (datetime)})``.

Writes run in one managed (retried) transaction per call, in ``UNWIND`` batches.
:meth:`Neo4jGraphStore.replace_graph` reads the room's keys and fingerprints once and writes
only the difference: stale rows deleted, entities not stored yet ``CREATE``\\ d (the uniqueness
constraint guards them; a concurrent duplicate makes it redo the batch with ``MERGE``), changed
entities and new or changed relationships ``MERGE``\\ d, unchanged rows skipped.
:meth:`Neo4jGraphStore.neighbourhood` expands with ``apoc.path.expandConfig`` (BFS, node-global
uniqueness, ``maxLevel`` = hops) and cuts at ``limit`` in Cypher: seeds first, then level by
level, stronger ties first. :meth:`Neo4jGraphStore.detect_communities` runs ``gds.leiden`` on a
per-room Cypher projection (undirected, weighted, seeded, one thread, intermediate communities
kept for the hierarchy) that is dropped in ``finally``.

Drivers: the async driver is bound to the event loop it was created in, so the module keeps one
driver per ``(uri, user)`` and running event loop, shared by every store of that loop and closed
when the last of them closes. In the API process that is one driver for the process; a Dagster
step (one ``asyncio.run`` each) opens and closes its own. Every query names the database.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neo4j import AsyncDriver, AsyncGraphDatabase, AsyncManagedTransaction
from neo4j.exceptions import ClientError, ConstraintError

import dbschema
from knowledge.communities import (
    community_id,
    previous_assignment,
    starting_communities,
    topology_digest,
)
from knowledge.graph import (
    Community,
    CommunityReport,
    Entity,
    Relationship,
    RoomGraph,
    TopologyDigest,
)
from knowledge.settings import Settings
from knowledge.stores.base import COUNT_KINDS, counted_kinds

SCHEMA_FILE = Path(dbschema.__file__).resolve().parent / "neo4j" / "schema.cypher"

#: Rows per ``UNWIND`` statement.
BATCH = 10_000
#: Entities or relationships deleted per inner transaction by :meth:`Neo4jGraphStore.wipe_room`.
WIPE_BATCH = 10_000


def schema_statements(path: Path = SCHEMA_FILE) -> list[str]:
    """The statements of a ``.cypher`` file: ``//`` comments dropped, split at ``;``."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("//")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


# --- one driver per (uri, user) and event loop --------------------------------------------------


@dataclass
class _SharedDriver:
    driver: AsyncDriver
    loop: asyncio.AbstractEventLoop
    users: int = 0


_DRIVERS: dict[tuple[str, str, int], _SharedDriver] = {}
_SCHEMA_APPLIED: set[tuple[str, str]] = set()


def _acquire(uri: str, user: str, password: str) -> _SharedDriver:
    loop = asyncio.get_running_loop()
    # Drivers of event loops that ended without closing them cannot be closed any more.
    for key in [k for k, shared in _DRIVERS.items() if shared.loop.is_closed()]:
        del _DRIVERS[key]
    key = (uri, user, id(loop))
    shared = _DRIVERS.get(key)
    if shared is None or shared.loop is not loop:
        shared = _SharedDriver(AsyncGraphDatabase.driver(uri, auth=(user, password)), loop)
        _DRIVERS[key] = shared
    shared.users += 1
    return shared


async def _release(uri: str, user: str, shared: _SharedDriver) -> None:
    shared.users -= 1
    if shared.users > 0:
        return
    key = (uri, user, id(shared.loop))
    if _DRIVERS.get(key) is shared:
        del _DRIVERS[key]
    await shared.driver.close()


# --- row conversions ----------------------------------------------------------------------------


def _entity(props: dict[str, Any]) -> Entity:
    return Entity(
        name=props["name"],
        display_name=props["display_name"],
        type=props["type"],
        description=props.get("description") or "",
        source_chunk_ids=list(props.get("source_chunk_ids") or []),
        mentions=int(props.get("mentions") or 0),
    )


def _relationship(row: dict[str, Any]) -> Relationship:
    return Relationship(
        source=row["source"],
        target=row["target"],
        weight=float(row["weight"]),
        description=row.get("description") or "",
        source_chunk_ids=list(row.get("source_chunk_ids") or []),
    )


def _report(props: dict[str, Any]) -> CommunityReport:
    generated = props.get("generated_at")
    return CommunityReport(
        community_id=props["community_id"],
        level=int(props["level"]),
        title=props["title"],
        summary=props["summary"],
        findings=json.loads(props.get("findings") or "[]"),
        rank=float(props["rank"]),
        content_hash=props["content_hash"],
        source_chunk_ids=list(props.get("source_chunk_ids") or []),
        generated_at=generated.to_native() if generated is not None else None,
    )


def _fingerprint(row: dict[str, Any]) -> str:
    payload = json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(payload.encode(), digest_size=12).hexdigest()


def _entity_row(e: Entity) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": e.name,
        "display_name": e.display_name,
        "type": e.type,
        "description": e.description,
        "source_chunk_ids": list(e.source_chunk_ids),
        "mentions": int(e.mentions),
    }
    row["fp"] = _fingerprint(row)
    return row


def _relationship_row(r: Relationship) -> dict[str, Any]:
    row: dict[str, Any] = {
        "source": r.source,
        "target": r.target,
        "weight": float(r.weight),
        "description": r.description,
        "source_chunk_ids": list(r.source_chunk_ids),
    }
    row["fp"] = _fingerprint(row)
    return row


async def _tx_rows(runner: Any, query: str, **params: Any) -> list[Any]:
    """The ``rows`` list of a one-record query run in a transaction or session."""
    record = await (await runner.run(query, params)).single()
    return list(record["rows"]) if record is not None else []


def _batches(rows: Sequence[Any], size: int = BATCH) -> Iterable[Sequence[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


# --- Cypher -------------------------------------------------------------------------------------

# Entity rows: name, display_name, type, description, source_chunk_ids, mentions and ``fp``, a
# fingerprint of the others (so an unchanged entity is not written again).
MERGE_ENTITIES = """
UNWIND $rows AS row
MERGE (e:Entity {room_id: $room_id, name: row.name})
SET e += row
"""

# Rows the transaction just read as absent: CREATE skips MERGE's locking index seek; the
# (room_id, name) uniqueness constraint still rejects a concurrent duplicate at commit.
CREATE_ENTITIES = """
UNWIND $rows AS row
CREATE (e:Entity {room_id: $room_id})
SET e += row
"""

MERGE_ENTITY = """
MERGE (e:Entity {room_id: $room_id, name: $row.name})
SET e += $row
"""

MERGE_RELATIONSHIPS = """
UNWIND $rows AS row
MATCH (a:Entity {room_id: $room_id, name: row.source})
MATCH (b:Entity {room_id: $room_id, name: row.target})
MERGE (a)-[r:RELATED]->(b)
SET r.room_id = $room_id, r.weight = row.weight, r.description = row.description,
    r.source_chunk_ids = row.source_chunk_ids, r.fp = row.fp
"""

STORED_KEYS = """
MATCH (e:Entity {room_id: $room_id})
OPTIONAL MATCH (e)-[r:RELATED]->(t:Entity)
WITH e, collect(CASE WHEN t IS NULL THEN null ELSE [t.name, r.fp] END) AS targets
RETURN collect([e.name, e.fp, targets]) AS rows
"""

DELETE_RELATIONSHIPS = """
UNWIND $pairs AS pair
MATCH (:Entity {room_id: $room_id, name: pair[0]})-[r:RELATED]->
      (:Entity {room_id: $room_id, name: pair[1]})
DELETE r
"""

DELETE_ENTITIES = """
UNWIND $names AS name
MATCH (e:Entity {room_id: $room_id, name: name})
DETACH DELETE e
"""

READ_ENTITIES = "MATCH (e:Entity {room_id: $room_id}) RETURN collect(properties(e)) AS rows"

READ_RELATIONSHIPS = """
MATCH (a:Entity {room_id: $room_id})-[r:RELATED]->(b:Entity)
RETURN collect(r {source: a.name, target: b.name, .weight, .description, .source_chunk_ids})
       AS rows
"""

READ_PAIRS = """
UNWIND $pairs AS pair
MATCH (a:Entity {room_id: $room_id, name: pair[0]})-[r:RELATED]->
      (b:Entity {room_id: $room_id, name: pair[1]})
RETURN collect(r {source: a.name, target: b.name, .weight, .description, .source_chunk_ids})
       AS rows
"""

READ_NAMED_ENTITIES = """
UNWIND $names AS name
MATCH (e:Entity {room_id: $room_id, name: name})
RETURN collect(properties(e)) AS rows
"""

# Breadth-first from the seeds with APOC: node-global uniqueness gives each entity its hop
# distance. An entity found at hop h ranks by its strongest tie to an entity at hop h - 1
# (weight descending, then that tie's source name, then whether it is the source, then its own
# name): the order in which the PostgreSQL store's level-by-level walk adds entities.
EXPAND = """
MATCH (s:Entity {room_id: $room_id}) WHERE s.name IN $seeds
WITH collect(s) AS starts
CALL apoc.path.expandConfig(starts, {
    relationshipFilter: 'RELATED', labelFilter: '+Entity', uniqueness: 'NODE_GLOBAL',
    bfs: true, minLevel: 1, maxLevel: $hops
}) YIELD path
WITH starts, last(nodes(path)) AS n, length(path) AS level
WITH starts, collect([n, level]) AS reached
WITH reached, apoc.map.fromPairs(
    [s IN starts | [s.name, 0]] + [x IN reached | [x[0].name, x[1]]]
) AS levels
UNWIND reached AS x
WITH x[0] AS n, x[1] AS level, levels
MATCH (n)-[r:RELATED]-(p:Entity)
WHERE levels[p.name] = level - 1
WITH n, level, r.weight AS weight, startNode(r).name AS source
ORDER BY weight DESC, source
WITH n.name AS name, level, head(collect([weight, source])) AS tie
ORDER BY level, tie[0] DESC, tie[1], CASE WHEN tie[1] = name THEN 0 ELSE 1 END, name
LIMIT $budget
RETURN collect(name) AS rows
"""

# The chunks supporting the weighted entities most (see GraphStore.top_source_chunks): each
# chunk's votes, and its first (entity rank, place in that entity's list) for ties.
TOP_SOURCE_CHUNKS = """
UNWIND range(0, size($names) - 1) AS rank
MATCH (e:Entity {room_id: $room_id, name: $names[rank]})
WITH rank, $weights[rank] AS weight, coalesce(e.source_chunk_ids, []) AS chunks
UNWIND range(0, size(chunks) - 1) AS place
WITH chunks[place] AS chunk_id, weight, rank, place
ORDER BY rank, place
WITH chunk_id, sum(weight) AS votes, min(rank * 1000000000 + place) AS first
ORDER BY votes DESC, first
LIMIT $limit
RETURN collect([chunk_id, votes]) AS rows
"""

READ_AMONG = """
UNWIND $names AS name
MATCH (a:Entity {room_id: $room_id, name: name})-[r:RELATED]->(b:Entity)
WHERE b.name IN $names
RETURN collect(r {source: a.name, target: b.name, .weight, .description, .source_chunk_ids})
       AS rows
"""

# Per-room projection: node ids are the ranks of the entity names (sorted), and rows reach the
# aggregation in a canonical order (every node first, then the edges by (source, target)), so
# GDS assigns the same internal ids whatever the storage order; with a fixed seed on one thread
# Leiden's result then depends on the graph alone.
PROJECT = """
WITH apoc.map.fromLists($names, range(0, size($names) - 1)) AS idx
UNWIND range(0, size($names) - 1) AS i
MATCH (:Entity {room_id: $room_id, name: $names[i]})-[r:RELATED]->(t:Entity)
WITH idx, i, idx[t.name] AS j, toFloat(r.weight) AS weight
WHERE j IS NOT NULL
ORDER BY i, j
WITH collect([i, j, weight]) AS edges
UNWIND [k IN range(0, size($names) - 1) | [k, null, null]] + edges AS row
WITH gds.graph.project(
    $graph, row[0], row[1],
    {relationshipProperties: CASE WHEN row[1] IS NULL THEN null ELSE {weight: row[2]} END},
    {undirectedRelationshipTypes: ['*'], readConcurrency: 1}
) AS g
RETURN g.nodeCount AS nodes, g.relationshipCount AS relationships
"""

LEIDEN = """
CALL gds.leiden.stream($graph, {
    relationshipWeightProperty: 'weight', randomSeed: $seed, concurrency: 1, gamma: $gamma,
    includeIntermediateCommunities: true
}) YIELD nodeId, intermediateCommunityIds
RETURN collect([nodeId, intermediateCommunityIds]) AS rows
"""

# Warm start: the same projection with each node's starting community (``seed``: its previous
# level-0 community, a fresh number for a new node) for Leiden's ``seedProperty``.
PROJECT_SEEDED = PROJECT.replace(
    "{relationshipProperties:",
    "{sourceNodeProperties: {seed: $seeds[row[0]]},\n"
    "     targetNodeProperties: CASE WHEN row[1] IS NULL THEN null ELSE {seed: $seeds[row[1]]} END,\n"
    "     relationshipProperties:",
)

# Without provenance (no source chunk ids): what the graph generator reads.
READ_NAMED_ENTITIES_BARE = READ_NAMED_ENTITIES.replace(
    "properties(e)", "e {.name, .display_name, .type, .description, .mentions}"
)
READ_AMONG_BARE = READ_AMONG.replace(", .source_chunk_ids}", "}")
LEIDEN_SEEDED = LEIDEN.replace("gamma: $gamma,", "gamma: $gamma, seedProperty: 'seed',")

DROP_GRAPH = "CALL gds.graph.drop($graph, false) YIELD graphName RETURN graphName"

COUNTS = """
RETURN COUNT { MATCH (e:Entity {room_id: $room_id}) } AS entities,
       COUNT { MATCH ()-[r:RELATED {room_id: $room_id}]->() } AS relationships,
       COUNT { MATCH (c:Community {room_id: $room_id}) } AS communities,
       COUNT { MATCH (r:Report {room_id: $room_id}) } AS reports
"""

VISUAL = """
MATCH (e:Entity {room_id: $room_id})
WITH e ORDER BY e.mentions DESC, e.name
LIMIT $limit
RETURN collect(properties(e)) AS rows
"""


async def _create_communities(
    tx: AsyncManagedTransaction, room_id: str, rows: list[dict[str, Any]]
) -> None:
    for batch in _batches(rows):
        await (
            await tx.run(
                "UNWIND $rows AS row CREATE (c:Community {room_id: $room_id}) SET c += row",
                room_id=room_id,
                rows=batch,
            )
        ).consume()


def _community_rows(communities: Sequence[Community]) -> list[dict[str, Any]]:
    return [
        {
            "id": c.id,
            "level": int(c.level),
            "parent_id": c.parent_id,
            "entity_names": list(c.entity_names),
            "graph_fingerprint": c.graph_fingerprint,
            "drift": int(c.drift),
            "baseline_weight": float(c.baseline_weight),
        }
        for c in communities
    ]


class Neo4jGraphStore:
    """``GraphStore`` on Neo4j; also a ``CommunityDetector`` (Leiden runs inside Neo4j)."""

    def __init__(
        self, uri: str, user: str = "neo4j", password: str = "", database: str = "neo4j"
    ) -> None:
        self.uri = uri
        self.user = user
        self.password = password
        self.database = database
        self._shared: _SharedDriver | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Neo4jGraphStore:
        """The store of ``NEO4J_URI`` and its user, password and database."""
        if not settings.neo4j_uri:
            raise ValueError("NEO4J_URI is not set")
        return cls(
            settings.neo4j_uri,
            user=settings.neo4j_user,
            password=settings.neo4j_password,
            database=settings.neo4j_database,
        )

    # -- driver and schema ----------------------------------------------------------------------

    async def driver(self) -> AsyncDriver:
        """The shared driver of this event loop (schema applied on first use per process)."""
        loop = asyncio.get_running_loop()
        if self._shared is None or self._shared.loop is not loop:
            if self._shared is not None and not self._shared.loop.is_closed():
                await _release(self.uri, self.user, self._shared)
            self._shared = _acquire(self.uri, self.user, self.password)
        if (self.uri, self.database) not in _SCHEMA_APPLIED:
            await self._apply_schema(self._shared.driver)
        return self._shared.driver

    async def close(self) -> None:
        shared, self._shared = self._shared, None
        if shared is not None and not shared.loop.is_closed():
            await _release(self.uri, self.user, shared)

    async def ensure_schema(self) -> None:
        """Apply ``dbschema/neo4j/schema.cypher`` (idempotent) and wait for its indexes."""
        await self.driver()

    async def _apply_schema(self, driver: AsyncDriver) -> None:
        for statement in schema_statements():
            try:
                await driver.execute_query(statement, database_=self.database)
            except ClientError as error:  # another process created it at the same moment
                if "EquivalentSchemaRuleAlreadyExists" not in (error.code or ""):
                    raise
        await driver.execute_query("CALL db.awaitIndexes(300)", database_=self.database)
        _SCHEMA_APPLIED.add((self.uri, self.database))

    async def _rows(self, query: str, **params: Any) -> list[Any]:
        """The ``rows`` list of a one-record read (results are collected server-side: one
        big record transfers far faster than many small ones through the async driver)."""
        driver = await self.driver()
        records, _, _ = await driver.execute_query(
            query, params, database_=self.database, routing_="r"
        )
        return list(records[0]["rows"]) if records else []

    async def _write(self, work: Any, *args: Any) -> Any:
        driver = await self.driver()
        async with driver.session(database=self.database) as session:
            return await session.execute_write(work, *args)

    async def _read_tx(self, work: Any, *args: Any) -> Any:
        driver = await self.driver()
        async with driver.session(database=self.database, default_access_mode="READ") as session:
            return await session.execute_read(work, *args)

    # -- entities and relationships -------------------------------------------------------------

    async def replace_graph(self, room_id: str, graph: RoomGraph) -> None:
        entity_rows = [_entity_row(e) for e in graph.entities]
        rel_rows = [_relationship_row(r) for r in graph.relationships]
        try:
            await self._write(_replace_graph, room_id, entity_rows, rel_rows)
        except ConstraintError:
            # A concurrent writer created one of the new entities: do it again with MERGE.
            await self._write(_replace_graph, room_id, entity_rows, rel_rows, False)

    async def apply_graph_changes(
        self,
        room_id: str,
        entities: Sequence[Entity],
        relationships: Sequence[Relationship],
        deleted_entities: Sequence[str] = (),
        deleted_pairs: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Only these rows, in one transaction: pairs and entities (``DETACH``) deleted, then
        entities and relationships ``MERGE``\\ d in ``UNWIND`` batches."""
        entity_rows = [_entity_row(e) for e in entities]
        rel_rows = [_relationship_row(r) for r in relationships]
        pairs = [list(pair) for pair in deleted_pairs]
        names = list(deleted_entities)

        async def work(tx: AsyncManagedTransaction) -> None:
            for batch in _batches(pairs):
                await (await tx.run(DELETE_RELATIONSHIPS, room_id=room_id, pairs=batch)).consume()
            for batch in _batches(names):
                await (await tx.run(DELETE_ENTITIES, room_id=room_id, names=batch)).consume()
            for batch in _batches(entity_rows):
                await (await tx.run(MERGE_ENTITIES, room_id=room_id, rows=batch)).consume()
            for batch in _batches(rel_rows):
                await (await tx.run(MERGE_RELATIONSHIPS, room_id=room_id, rows=batch)).consume()

        await self._write(work)

    async def get_relationships(
        self, room_id: str, pairs: Sequence[tuple[str, str]]
    ) -> list[Relationship]:
        if not pairs:
            return []
        rows = await self._rows(
            READ_PAIRS, room_id=room_id, pairs=[list(p) for p in sorted(set(pairs))]
        )
        return sorted(map(_relationship, rows), key=lambda r: r.pair)

    async def merge_entities(self, room_id: str, entities: Sequence[Entity]) -> None:
        """Upsert entities with UNWIND-batched MERGE (one transaction), nothing deleted."""
        rows = [_entity_row(e) for e in entities]

        async def work(tx: AsyncManagedTransaction) -> None:
            for batch in _batches(rows):
                await (await tx.run(MERGE_ENTITIES, room_id=room_id, rows=batch)).consume()

        await self._write(work)

    async def write_entities_per_row(self, room_id: str, entities: Sequence[Entity]) -> None:
        """One ``MERGE`` statement per entity (in one transaction): the bench's baseline."""
        rows = [_entity_row(e) for e in entities]

        async def work(tx: AsyncManagedTransaction) -> None:
            for row in rows:
                result = await tx.run(MERGE_ENTITY, room_id=room_id, row=row)
                await result.consume()

        await self._write(work)

    async def get_graph(self, room_id: str, provenance: bool = True) -> RoomGraph:
        # Always with provenance: one collected record per kind is the fast read here.
        async def read(tx: AsyncManagedTransaction) -> RoomGraph:
            entities = await _tx_rows(tx, READ_ENTITIES, room_id=room_id)
            rels = await _tx_rows(tx, READ_RELATIONSHIPS, room_id=room_id)
            return RoomGraph(
                entities=sorted(map(_entity, entities), key=lambda e: e.name),
                relationships=sorted(map(_relationship, rels), key=lambda r: r.pair),
            )

        result: RoomGraph = await self._read_tx(read)
        return result

    async def get_entities(self, room_id: str, names: Sequence[str]) -> list[Entity]:
        if not names:
            return []
        rows = await self._rows(READ_NAMED_ENTITIES, room_id=room_id, names=sorted(set(names)))
        return sorted(map(_entity, rows), key=lambda e: e.name)

    async def entity_names(self, room_id: str) -> list[str]:
        rows = await self._rows(
            "MATCH (e:Entity {room_id: $room_id}) RETURN collect(e.name) AS rows",
            room_id=room_id,
        )
        return sorted(rows)

    async def entities_outside_communities(self, room_id: str) -> list[str]:
        # Compared here: a list membership per entity in Cypher is quadratic in the room.
        names = await self.entity_names(room_id)
        lists = await self._rows(
            "MATCH (c:Community {room_id: $room_id}) WHERE c.level = 0 "
            "RETURN collect(c.entity_names) AS rows",
            room_id=room_id,
        )
        covered = {n for members in lists for n in (members or [])}
        return [n for n in names if n not in covered]

    async def entity_names_matching(
        self, room_id: str, names: Collection[str], words: Collection[str] = ()
    ) -> list[str]:
        if not names and not words:
            return []
        rows = await self._rows(
            "MATCH (e:Entity {room_id: $room_id}) "
            "WHERE e.name IN $names OR any(w IN split(e.name, ' ') WHERE w IN $words) "
            "RETURN collect(e.name) AS rows",
            room_id=room_id,
            names=sorted(set(names)),
            words=sorted(set(words)),
        )
        return sorted(rows)

    async def entity_labels(self, room_id: str) -> list[tuple[str, str]]:
        rows = await self._rows(
            "MATCH (e:Entity {room_id: $room_id}) RETURN collect([e.name, e.display_name]) AS rows",
            room_id=room_id,
        )
        return sorted((str(name), str(display)) for name, display in rows)

    async def entity_mentions(self, room_id: str, names: Collection[str]) -> dict[str, int]:
        if not names:
            return {}
        rows = await self._rows(
            "MATCH (e:Entity {room_id: $room_id}) WHERE e.name IN $names "
            "RETURN collect([e.name, e.mentions]) AS rows",
            room_id=room_id,
            names=sorted(names),
        )
        return {str(name): int(mentions or 0) for name, mentions in rows}

    async def topology(self, room_id: str) -> tuple[list[str], list[tuple[str, str, float]]]:
        names = await self.entity_names(room_id)
        rows = await self._rows(
            "MATCH (a:Entity {room_id: $room_id})-[r:RELATED]->(b:Entity) "
            "RETURN collect([a.name, b.name, r.weight]) AS rows",
            room_id=room_id,
        )
        return names, sorted((str(a), str(b), float(w)) for a, b, w in rows)

    async def topology_digest(self, room_id: str) -> TopologyDigest:
        # Digested here, in Python: Cypher has no cheap hash to aggregate in the server.
        return topology_digest(*await self.topology(room_id))

    async def relationships_touching(
        self, room_id: str, names: Collection[str]
    ) -> list[tuple[str, str, float]]:
        if not names:
            return []
        rows = await self._rows(
            "MATCH (n:Entity {room_id: $room_id}) WHERE n.name IN $names "
            "MATCH (n)-[r:RELATED]-(:Entity) WITH DISTINCT r "
            "RETURN collect([startNode(r).name, endNode(r).name, r.weight]) AS rows",
            room_id=room_id,
            names=sorted(names),
        )
        return sorted((str(a), str(b), float(w)) for a, b, w in rows)

    async def dangling_relationships(self, room_id: str) -> list[tuple[str, str]]:
        # An edge always has both nodes; it dangles when an end is another room's entity.
        rows = await self._rows(
            "MATCH (a:Entity)-[r:RELATED]->(b:Entity) "
            "WHERE (a.room_id = $room_id OR b.room_id = $room_id) "
            "AND (a.room_id <> $room_id OR b.room_id <> $room_id) "
            "RETURN collect([a.name, b.name]) AS rows",
            room_id=room_id,
        )
        return sorted((str(a), str(b)) for a, b in rows)

    async def neighbourhood(
        self, room_id: str, seeds: Sequence[str], hops: int, limit: int, provenance: bool = True
    ) -> RoomGraph:
        # As in the PostgreSQL store: the (deduplicated) seeds come first and count against the
        # limit, known or not; the walk adds entities level by level, stronger ties first.
        start: list[str] = list(dict.fromkeys(seeds))[:limit]
        budget = limit - len(start)

        async def read(tx: AsyncManagedTransaction) -> RoomGraph:
            found = list(start)
            if hops > 0 and budget > 0 and found:
                found += await _tx_rows(
                    tx, EXPAND, room_id=room_id, seeds=start, hops=hops, budget=budget
                )
            read_entities = READ_NAMED_ENTITIES if provenance else READ_NAMED_ENTITIES_BARE
            read_among = READ_AMONG if provenance else READ_AMONG_BARE
            entities = await _tx_rows(tx, read_entities, room_id=room_id, names=found)
            rels = await _tx_rows(tx, read_among, room_id=room_id, names=found)
            order = {name: i for i, name in enumerate(found)}
            return RoomGraph(
                entities=sorted(map(_entity, entities), key=lambda e: order[e.name]),
                relationships=sorted(map(_relationship, rels), key=lambda r: (-r.weight, r.pair)),
            )

        result: RoomGraph = await self._read_tx(read)
        return result

    async def top_source_chunks(
        self, room_id: str, weights: Sequence[tuple[str, float]], limit: int
    ) -> list[tuple[str, float]]:
        if not weights or limit <= 0:
            return []

        async def read(tx: AsyncManagedTransaction) -> list[tuple[str, float]]:
            rows = await _tx_rows(
                tx,
                TOP_SOURCE_CHUNKS,
                room_id=room_id,
                names=[name for name, _ in weights],
                weights=[float(weight) for _, weight in weights],
                limit=limit,
            )
            return [(str(cid), float(votes)) for cid, votes in rows]

        result: list[tuple[str, float]] = await self._read_tx(read)
        return result

    async def visual_subgraph(self, room_id: str, limit: int) -> RoomGraph:
        """The ``limit`` most mentioned entities (ties by name) and the edges among them,
        strongest first: what the visualization shows, selected inside Neo4j."""

        async def read(tx: AsyncManagedTransaction) -> RoomGraph:
            entities = list(map(_entity, await _tx_rows(tx, VISUAL, room_id=room_id, limit=limit)))
            names = [e.name for e in entities]
            rels = await _tx_rows(tx, READ_AMONG, room_id=room_id, names=names)
            return RoomGraph(
                entities=entities,
                relationships=sorted(map(_relationship, rels), key=lambda r: (-r.weight, r.pair)),
            )

        result: RoomGraph = await self._read_tx(read)
        return result

    # -- communities and reports ----------------------------------------------------------------

    async def replace_communities(self, room_id: str, communities: Sequence[Community]) -> None:
        rows = _community_rows(communities)

        async def work(tx: AsyncManagedTransaction) -> None:
            await (
                await tx.run("MATCH (c:Community {room_id: $room_id}) DELETE c", room_id=room_id)
            ).consume()
            await _create_communities(tx, room_id, rows)

        await self._write(work)

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
        rows = _community_rows(upserts)

        async def work(tx: AsyncManagedTransaction) -> None:
            if gone:
                await (
                    await tx.run(
                        "MATCH (c:Community {room_id: $room_id}) WHERE c.id IN $ids DELETE c",
                        room_id=room_id,
                        ids=gone,
                    )
                ).consume()
            await _create_communities(tx, room_id, rows)
            await (
                await tx.run(
                    "MATCH (c:Community {room_id: $room_id}) SET c.graph_fingerprint = $fp, "
                    "c.drift = $drift, c.baseline_weight = $baseline",
                    room_id=room_id,
                    fp=fingerprint,
                    drift=int(drift),
                    baseline=float(baseline_weight),
                )
            ).consume()

        await self._write(work)

    async def get_communities(
        self,
        room_id: str,
        ids: Collection[str] | None = None,
        containing: Collection[str] | None = None,
    ) -> list[Community]:
        if ids is None and containing is None:
            query = "MATCH (c:Community {room_id: $room_id}) RETURN collect(properties(c)) AS rows"
        elif not ids and not containing:
            return []
        else:
            query = (
                "MATCH (c:Community {room_id: $room_id}) WHERE c.id IN $ids "
                "OR any(name IN c.entity_names WHERE name IN $names) "
                "RETURN collect(properties(c)) AS rows"
            )
        rows = await self._rows(
            query, room_id=room_id, ids=sorted(ids or ()), names=sorted(containing or ())
        )
        communities = [
            Community(
                id=c["id"],
                level=int(c["level"]),
                parent_id=c.get("parent_id"),
                entity_names=list(c.get("entity_names") or []),
                graph_fingerprint=c.get("graph_fingerprint"),
                drift=int(c.get("drift") or 0),
                baseline_weight=float(c.get("baseline_weight") or 0.0),
            )
            for c in rows
        ]
        return sorted(communities, key=lambda c: (c.level, c.id))

    async def upsert_reports(self, room_id: str, reports: Sequence[CommunityReport]) -> None:
        if not reports:
            return
        rows = [
            {
                "community_id": r.community_id,
                "level": int(r.level),
                "title": r.title,
                "summary": r.summary,
                "findings": json.dumps(r.findings),
                "rank": float(r.rank),
                "content_hash": r.content_hash,
                "source_chunk_ids": list(r.source_chunk_ids),
            }
            for r in reports
        ]

        async def work(tx: AsyncManagedTransaction) -> None:
            for batch in _batches(rows):
                await (
                    await tx.run(
                        "UNWIND $rows AS row "
                        "MERGE (r:Report {room_id: $room_id, community_id: row.community_id}) "
                        "SET r += row, r.generated_at = datetime()",
                        room_id=room_id,
                        rows=batch,
                    )
                ).consume()

        await self._write(work)

    async def delete_reports(self, room_id: str, community_ids: Sequence[str]) -> None:
        if not community_ids:
            return

        async def work(tx: AsyncManagedTransaction) -> None:
            await (
                await tx.run(
                    "UNWIND $ids AS id MATCH (r:Report {room_id: $room_id, community_id: id}) "
                    "DELETE r",
                    room_id=room_id,
                    ids=list(community_ids),
                )
            ).consume()

        await self._write(work)

    async def get_reports(
        self, room_id: str, community_ids: Sequence[str] | None = None
    ) -> list[CommunityReport]:
        if community_ids is None:
            rows = await self._rows(
                "MATCH (r:Report {room_id: $room_id}) RETURN collect(properties(r)) AS rows",
                room_id=room_id,
            )
        else:
            rows = await self._rows(
                "UNWIND $ids AS id MATCH (r:Report {room_id: $room_id, community_id: id}) "
                "RETURN collect(properties(r)) AS rows",
                room_id=room_id,
                ids=sorted(set(community_ids)),
            )
        return sorted(map(_report, rows), key=lambda r: (-r.rank, r.community_id))

    async def counts(self, room_id: str, kinds: Collection[str] = COUNT_KINDS) -> dict[str, int]:
        asked = counted_kinds(kinds)
        if not asked:
            return {}
        driver = await self.driver()
        records, _, _ = await driver.execute_query(
            COUNTS, room_id=room_id, database_=self.database, routing_="r"
        )
        return {key: int(value) for key, value in records[0].data().items() if key in asked}

    async def wipe_room(self, room_id: str) -> dict[str, int]:
        """Delete everything of the room, in batches of inner transactions (rooms can be big).

        Each statement commits its batches as it goes, so a failure part-way leaves fewer rows
        and running it again finishes the job."""
        driver = await self.driver()
        removed: dict[str, int] = {}
        async with driver.session(database=self.database) as session:
            for key, statement in (
                (
                    "neo4j:Report",
                    "MATCH (r:Report {room_id: $room_id}) "
                    "CALL (r) { DELETE r } IN TRANSACTIONS OF $batch ROWS",
                ),
                (
                    "neo4j:Community",
                    "MATCH (c:Community {room_id: $room_id}) "
                    "CALL (c) { DELETE c } IN TRANSACTIONS OF $batch ROWS",
                ),
                (
                    "neo4j:RELATED",
                    "MATCH ()-[r:RELATED {room_id: $room_id}]->() "
                    "CALL (r) { DELETE r } IN TRANSACTIONS OF $batch ROWS",
                ),
                (
                    "neo4j:Entity",
                    "MATCH (e:Entity {room_id: $room_id}) "
                    "CALL (e) { DETACH DELETE e } IN TRANSACTIONS OF $batch ROWS",
                ),
            ):
                # The counters of a summary add up every inner transaction of the statement.
                summary = await (
                    await session.run(statement, room_id=room_id, batch=WIPE_BATCH)
                ).consume()
                counters = summary.counters
                deleted = (
                    counters.relationships_deleted
                    if key == "neo4j:RELATED"
                    else counters.nodes_deleted
                )
                removed[key] = deleted
        return removed

    # -- Leiden in GDS --------------------------------------------------------------------------

    async def leiden_levels(
        self,
        room_id: str,
        seed: int,
        resolution: float = 1.0,
        starting: Mapping[str, int] | None = None,
    ) -> dict[str, list[int]]:
        """GDS Leiden on the room: entity name -> community per Leiden level, finest first
        (the last one is the final partition). Entities without relationships are left out.
        ``starting`` (name -> community) warm-starts it (``seedProperty``; names it lacks
        start alone)."""
        names = sorted(
            await self._rows(
                "MATCH (e:Entity {room_id: $room_id}) WHERE EXISTS { (e)-[:RELATED]-() } "
                "RETURN collect(e.name) AS rows",
                room_id=room_id,
            )
        )
        if not names:
            return {}
        driver = await self.driver()
        graph_name = f"coagent-leiden-{uuid.uuid4().hex}"
        async with driver.session(database=self.database) as session:
            try:
                seeds = _seeds(names, starting) if starting else None
                await (
                    await session.run(
                        PROJECT if seeds is None else PROJECT_SEEDED,
                        room_id=room_id,
                        names=names,
                        graph=graph_name,
                        seeds=seeds,
                    )
                ).consume()
                params = {"graph": graph_name, "seed": int(seed), "gamma": float(resolution)}
                if seeds is None:
                    rows = await _tx_rows(session, LEIDEN, **params)
                else:
                    rows = await _seeded_leiden_rows(session, params, seeds)
            finally:
                await (await session.run(DROP_GRAPH, graph=graph_name)).consume()
        return {
            names[int(node)]: [int(c) for c in path]
            for node, path in rows
            if 0 <= int(node) < len(names)
        }

    async def leiden_partition(
        self, room_id: str, seed: int, resolution: float = 1.0
    ) -> dict[str, int]:
        """Flat GDS Leiden partition (final level): entity -> community number."""
        levels = await self.leiden_levels(room_id, seed, resolution)
        return {name: path[-1] for name, path in levels.items()}

    async def detect_communities(
        self,
        room_id: str,
        seed: int,
        max_cluster_size: int,
        resolution: float = 1.0,
        previous: Sequence[Community] = (),
    ) -> list[Community]:
        """Hierarchical communities from GDS Leiden, shaped like
        :func:`knowledge.communities.hierarchical_communities`: level 0 is Leiden's final
        partition, a community of ``max_cluster_size`` or more entities is split at the next
        level along the next finer intermediate Leiden level that divides it (so the depth is
        bounded by GDS's levels; a community no finer level divides stays whole), ids hash (room, level, members),
        and entities without relationships get singleton communities at level 0.
        ``previous`` communities warm-start Leiden from their level-0 assignment (GDS seeds
        the first level only); ids are left to the caller (``inherit_ids``)."""
        starting = previous_assignment(previous).get(0)
        levels = await self.leiden_levels(room_id, seed, resolution, starting)
        names = await self.entity_names(room_id)
        return communities_from_levels(room_id, names, levels, max_cluster_size)


async def _seeded_leiden_rows(
    session: Any, params: dict[str, Any], seeds: Sequence[int]
) -> list[Any]:
    """Seeded GDS Leiden rows ``[nodeId, intermediateCommunityIds]``.

    GDS 2.13 fails (a NullPointerException on its dendrogram, with or without intermediate
    communities) when Leiden's first pass cannot improve the seeded partition: then that
    partition is the result. Its final level is the seeds, and the finer levels come from an
    unseeded run on the same projection (``communities_from_levels`` splits each final
    community along them)."""
    try:
        return await _tx_rows(session, LEIDEN_SEEDED, **params)
    except ClientError as error:
        if "dendrogram" not in str(error.message or ""):
            raise
    cold = await _tx_rows(session, LEIDEN, **params)
    return [[node, [*path[:-1], seeds[int(node)]]] for node, path in cold]


def _seeds(names: Sequence[str], starting: Mapping[str, int]) -> list[int] | None:
    """Per projected node (``names`` order) its starting community, renumbered 0.. in name
    order, a fresh number for a name without one; None when no name has one."""
    numbers = starting_communities(names, starting)
    return None if numbers is None else [numbers[n] for n in names]


def communities_from_levels(
    room_id: str,
    names: Iterable[str],
    levels: dict[str, list[int]],
    max_cluster_size: int,
) -> list[Community]:
    """Turn Leiden levels (name -> community per level, finest first) into our hierarchy.

    GDS's intermediate communities need not nest (a later level may move a refined part of a
    community elsewhere), so a child is the intersection of its parent with a finer community:
    children always partition their parent.
    """
    communities: list[Community] = []

    def split(members: list[str], level: int, parent: str | None, depth: int) -> None:
        cid = community_id(room_id, level, members)
        communities.append(
            Community(id=cid, level=level, parent_id=parent, entity_names=sorted(members))
        )
        if len(members) < max_cluster_size:  # graspologic splits at max_cluster_size too
            return
        # The next finer Leiden level that divides this community.
        for finer in range(depth - 1, -1, -1):
            groups: dict[int, list[str]] = defaultdict(list)
            for name in members:
                groups[levels[name][finer]].append(name)
            if len(groups) > 1:
                for group in groups.values():
                    split(group, level + 1, cid, finer)
                return

    top: dict[int, list[str]] = defaultdict(list)
    for name, path in levels.items():
        top[path[-1]].append(name)
    for group in top.values():
        depth = len(levels[group[0]]) - 1
        split(group, 0, None, depth)
    for name in sorted(set(names) - set(levels)):
        split([name], 0, None, 0)
    communities.sort(key=lambda c: (c.level, -len(c.entity_names), c.entity_names))
    return communities


async def _replace_graph(
    tx: AsyncManagedTransaction,
    room_id: str,
    entity_rows: list[dict[str, Any]],
    rel_rows: list[dict[str, Any]],
    create_new: bool = True,
) -> None:
    """Make the room exactly the new graph, writing only the difference.

    One read of the room's keys and fingerprints; then, in UNWIND batches: delete what the new
    graph no longer has, CREATE the entities not stored yet (``create_new``; else MERGE them),
    MERGE the changed ones and the new or changed relationships. Unchanged rows cost nothing.
    """
    stored = await _tx_rows(tx, STORED_KEYS, room_id=room_id)
    stored_entities = {name: fp for name, fp, _ in stored}
    stored_pairs = {(name, target): fp for name, _, targets in stored for target, fp in targets}
    wanted_names = {row["name"] for row in entity_rows}
    wanted_pairs = {(row["source"], row["target"]) for row in rel_rows}
    stale_names = sorted(set(stored_entities) - wanted_names)
    # Relationships of stale entities go with them (DETACH DELETE).
    stale_pairs = sorted(
        list(pair)
        for pair in stored_pairs
        if pair not in wanted_pairs and pair[0] in wanted_names and pair[1] in wanted_names
    )
    new = [row for row in entity_rows if row["name"] not in stored_entities]
    changed = [
        row
        for row in entity_rows
        if row["name"] in stored_entities and stored_entities[row["name"]] != row["fp"]
    ]
    if not create_new:
        changed, new = new + changed, []
    rels = [
        row for row in rel_rows if stored_pairs.get((row["source"], row["target"])) != row["fp"]
    ]
    for pairs in _batches(stale_pairs):
        await (await tx.run(DELETE_RELATIONSHIPS, room_id=room_id, pairs=pairs)).consume()
    for names in _batches(stale_names):
        await (await tx.run(DELETE_ENTITIES, room_id=room_id, names=names)).consume()
    for rows in _batches(new):
        await (await tx.run(CREATE_ENTITIES, room_id=room_id, rows=rows)).consume()
    for rows in _batches(changed):
        await (await tx.run(MERGE_ENTITIES, room_id=room_id, rows=rows)).consume()
    for rows in _batches(rels):
        await (await tx.run(MERGE_RELATIONSHIPS, room_id=room_id, rows=rows)).consume()
