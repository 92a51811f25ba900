"""Purge a deleted room: every derived row, node and point of it, in every store.

The relational rows of a room (``rooms``, ``messages``, ``artifacts`` and ``artifact_versions``,
``room_members``, ``agent_configs``, ``golden_questions``) are the API's: deleting the room row
removes them through their ``ON DELETE CASCADE`` foreign keys. What is *derived* from them
carries the room id as plain text without a foreign key (Dagster partition keys), so it stays
behind until :func:`purge_room` removes it:

PostgreSQL, always (whichever graph / vector store is configured: a room indexed before Neo4j
or Qdrant was configured still has rows here)
    ``room_chunks``, ``chunk_extractions``, ``entity_aliases``, and the graph build's state
    (``graph_build_rooms``, ``graph_build_chunks``, ``graph_room_words``,
    ``graph_entity_mentions``, ``graph_relationship_mentions``, ``graph_merged_entities``,
    ``graph_merged_relationships``), the index steps' pending ``room_changes`` and
    ``graph_changes`` (here);
    ``graph_entities``, ``graph_relationships``, ``graph_communities``,
    ``graph_community_reports`` (:meth:`PostgresGraphStore.wipe_room`);
    ``vector_points``, ``lexical_postings``, ``lexical_rooms``, ``lexical_terms``
    (:meth:`PgVectorStore.wipe_room`).
Neo4j, when it is the graph store
    ``(:Entity)``, ``[:RELATED]``, ``(:Community)``, ``(:Report)``
    (:meth:`Neo4jGraphStore.wipe_room`).
Qdrant, when it is the vector store
    the room's points in every collection under the store's prefix: ``chunks``, ``entities``,
    ``communities`` (reports), ``evidence`` (:meth:`QdrantVectorStore.wipe_room`).

Not purged:

- ``llm_cache``: keyed by a hash of (model, prompt, schema), shared by every room whose chunks
  hash the same, with no room column; its responses do hold text derived from the room
  (extractions, reports).
- ``event_outbox``: the relay's delivery log of change events (no foreign key, so that the
  ``room.deleted`` event outlives its room); sent rows are pruned by the relay, and deleting
  unsent ones would lose events.
- The room's Dagster partition and run history, which the Dagster purge job owns.

Each store's delete is independent and idempotent: every step runs even when an earlier one
failed, a failure raises :class:`PurgeIncomplete` afterwards, and running the purge again
finishes the job (a second run removes nothing and succeeds). The caller makes sure no refresh
of the room runs at the same time (it would write the room again).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy import delete

from dbschema.models import (
    ChunkExtraction,
    EntityAlias,
    GraphBuildChunk,
    GraphBuildRoom,
    GraphChange,
    GraphEntityMention,
    GraphMergedEntity,
    GraphMergedRelationship,
    GraphRelationshipMention,
    GraphRoomWord,
    RoomChange,
    RoomChunk,
)
from knowledge.errors import InvalidInputError
from knowledge.platform import Platform
from knowledge.stores.pgvector_store import PgVectorStore
from knowledge.stores.postgres_graph import PostgresGraphStore

#: Derived tables of the room pipeline itself (the stores' own tables are their wipe_room's).
DERIVED_TABLES = (
    ChunkExtraction,
    RoomChunk,
    EntityAlias,
    # the graph build's state (``knowledge.indexing.graph``)
    GraphEntityMention,
    GraphRelationshipMention,
    GraphMergedEntity,
    GraphMergedRelationship,
    GraphRoomWord,
    GraphBuildChunk,
    GraphBuildRoom,
    GraphChange,
    # the index steps' pending changes (``knowledge.indexing.changes``)
    RoomChange,
    GraphChange,
)


class PurgeIncomplete(RuntimeError):
    """Some store could not be purged; the others were. Run :func:`purge_room` again."""

    def __init__(
        self, room_id: str, removed: dict[str, int], failures: dict[str, BaseException]
    ) -> None:
        self.room_id = room_id
        self.removed = removed
        self.failures = failures
        causes = "; ".join(f"{step}: {type(e).__name__}: {e}" for step, e in failures.items())
        super().__init__(
            f"purge of room {room_id} is incomplete ({causes}); the other stores were purged, "
            "run the purge again to finish"
        )


async def _purge_tables(platform: Platform, room_id: str) -> dict[str, int]:
    removed: dict[str, int] = {}
    async with platform.engine.begin() as conn:
        for model in DERIVED_TABLES:
            result = await conn.execute(delete(model).where(model.room_id == room_id))
            removed[f"postgres:{model.__tablename__}"] = result.rowcount
    return removed


def _steps(platform: Platform) -> list[tuple[str, Callable[[str], Awaitable[dict[str, int]]]]]:
    embedded_graph = PostgresGraphStore(platform.engine)
    embedded_vectors = PgVectorStore(platform.engine)
    steps: list[tuple[str, Callable[[str], Awaitable[dict[str, int]]]]] = [
        ("postgres tables", lambda room: _purge_tables(platform, room)),
        ("postgres graph store", embedded_graph.wipe_room),
        ("pgvector store", embedded_vectors.wipe_room),
    ]
    # The configured stores, unless they are the embedded ones on this very engine.
    graph = platform.graph
    if not (isinstance(graph, PostgresGraphStore) and graph.engine is platform.engine):
        steps.append((f"graph store ({type(graph).__name__})", graph.wipe_room))
    vectors = platform.vectors
    if not (isinstance(vectors, PgVectorStore) and vectors.engine is platform.engine):
        steps.append((f"vector store ({type(vectors).__name__})", vectors.wipe_room))
    return steps


async def purge_room(platform: Platform, room_id: str | uuid.UUID) -> dict[str, int]:
    """Delete everything derived from the room in every store of the platform.

    Returns how many rows / nodes / relationships / points each table, label or collection
    lost, keyed ``"<store>:<name>"`` (``"postgres:room_chunks"``, ``"neo4j:Entity"``,
    ``"qdrant:coagent_evidence"``), zeros included. Raises :class:`PurgeIncomplete` (after
    trying every store) when a store failed.
    """
    room = str(room_id)
    if not room or "\x00" in room or len(room) > 64:
        raise InvalidInputError("a room id is 1 to 64 characters, without NUL")
    removed: dict[str, int] = {}
    failures: dict[str, BaseException] = {}
    for step, wipe in _steps(platform):
        try:
            counts = await wipe(room)
        except Exception as error:  # the other stores are still purged; the caller retries
            failures[step] = error
            continue
        for key, count in counts.items():
            removed[key] = removed.get(key, 0) + count
    if failures:
        raise PurgeIncomplete(room, removed, failures) from next(iter(failures.values()))
    return removed
