"""The whole room: every step in order, a wipe, and counts of what is stored."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, select

from dbschema.models import ChunkExtraction, EntityAlias, RoomChunk
from knowledge.gcpolicy import build_collection
from knowledge.indexing.changes import reset_room
from knowledge.indexing.chunks import ChunkSync, sync_chunks
from knowledge.indexing.communities import CommunityBuild, detect_communities
from knowledge.indexing.evidence import EvidenceSync, sync_evidence
from knowledge.indexing.graph import BUILD_TABLES, GraphBuild, build_graph
from knowledge.indexing.reports import ReportBuild, write_reports
from knowledge.platform import Platform
from knowledge.rooms import get_room
from knowledge.stores.base import CHUNKS, COMMUNITIES, ENTITIES, EVIDENCE


@dataclass
class RoomIndex:
    chunks: ChunkSync
    evidence: EvidenceSync
    graph: GraphBuild
    communities: CommunityBuild
    reports: ReportBuild


async def index_room(platform: Platform, room_id: str) -> RoomIndex:
    """Every step in order, in this process (what a room refresh run materializes)."""
    with build_collection():
        chunks = await sync_chunks(platform, room_id)
        evidence = await sync_evidence(platform, room_id)
        graph = await build_graph(platform, room_id)
        communities = await detect_communities(platform, room_id)
        reports = await write_reports(platform, room_id)
    return RoomIndex(chunks, evidence, graph, communities, reports)


async def wipe_room(platform: Platform, room_id: str) -> None:
    """Remove every derived fact of a room from every store (the sources stay)."""
    async with platform.session() as session:
        await get_room(session, room_id)
        await session.execute(delete(ChunkExtraction).where(ChunkExtraction.room_id == room_id))
        await session.execute(delete(RoomChunk).where(RoomChunk.room_id == room_id))
        await session.execute(delete(EntityAlias).where(EntityAlias.room_id == room_id))
        # The next run of every step rebuilds the room (its pending changes are moot).
        await reset_room(session, room_id)
        for model in BUILD_TABLES:
            await session.execute(delete(model).where(model.room_id == room_id))
        await session.commit()
    await platform.graph.wipe_room(room_id)
    await platform.vectors.wipe_room(room_id)


async def room_state(platform: Platform, room_id: str) -> dict[str, int]:
    """Counts of every stored kind of fact of a room (used by tests, checks and the demo)."""
    counts = dict(await platform.graph.counts(room_id))
    counts["chunks"], counts["artifact_chunks"] = await chunk_counts(platform, room_id)
    for collection in (CHUNKS, ENTITIES, COMMUNITIES, EVIDENCE):
        counts[f"{collection}_vectors"] = await platform.vectors.count(collection, room_id)
    return counts


async def chunk_counts(platform: Platform, room_id: str) -> tuple[int, int]:
    """How many chunks the room has, and how many of them are artifact passages."""
    async with platform.session() as session:
        total, passages = (
            await session.execute(
                select(func.count(), func.count(RoomChunk.artifact_id)).where(
                    RoomChunk.room_id == room_id
                )
            )
        ).one()
    return int(total), int(passages)
