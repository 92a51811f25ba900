"""Step 5: a report per community whose content changed, with its vector.

The room graph is indexed once (entities by name, relationships by entity), so each
community's content hash costs the sum of its members' degrees; a community whose hash
matches its stored report is skipped without building its context. Contexts (ordering,
excerpts) are built only for the communities whose report is written, and only their
excerpt chunks' texts are read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import select

from dbschema.models import RoomChunk
from knowledge.graph import RoomGraph
from knowledge.indexing.vectors import VectorSync, sync_vectors
from knowledge.platform import Platform
from knowledge.reports import GraphIndex, report_text
from knowledge.stores.base import COMMUNITIES

#: Chunk ids per ``IN`` list when reading excerpt texts.
_CHUNK_BATCH = 5_000


@dataclass
class ReportBuild:
    total: int
    regenerated: int
    deleted: int
    vectors: VectorSync
    seconds: float
    #: Full report contexts built (ordering, excerpts): one per report written.
    contexts_built: int = 0
    #: Excerpt chunk texts read from the database for those contexts.
    chunks_read: int = 0


async def write_reports(platform: Platform, room_id: str) -> ReportBuild:
    """Write a report for each community whose content changed; drop reports of gone ones."""
    started = time.perf_counter()
    writer = platform.report_writer
    # Content hashes need no provenance (the largest columns); the entities of the
    # communities to rewrite are read again whole below, for their excerpts.
    graph: RoomGraph = await platform.graph.get_graph(room_id, provenance=False)
    communities = await platform.graph.get_communities(room_id)
    existing = {r.community_id: r for r in await platform.graph.get_reports(room_id)}
    index = GraphIndex(graph)

    reports = []
    stale = []
    for community in communities:
        old = existing.get(community.id)
        if old is not None and old.content_hash == index.content_hash(community):
            reports.append(old)
        else:
            stale.append(community)
    for entity in await platform.graph.get_entities(
        room_id, sorted({n for c in stale for n in c.entity_names})
    ):
        index.entities[entity.name] = entity
    wanted = {cid for c in stale for cid in index.excerpt_chunk_ids(c)}
    chunk_texts = await chunk_texts_by_id(platform, room_id, wanted)
    contexts = [index.context(c, chunk_texts) for c in stale]
    fresh = list(await asyncio.gather(*(writer.write(c) for c in contexts)))
    reports += fresh
    await platform.graph.upsert_reports(room_id, fresh)
    gone = sorted(set(existing) - {c.id for c in communities})
    await platform.graph.delete_reports(room_id, gone)
    vectors = await sync_vectors(
        platform,
        COMMUNITIES,
        room_id,
        {
            r.community_id: (report_text(r), {"level": r.level, "rank": r.rank, "title": r.title})
            for r in reports
        },
    )
    return ReportBuild(
        total=len(reports),
        regenerated=len(fresh),
        deleted=len(gone),
        vectors=vectors,
        seconds=time.perf_counter() - started,
        contexts_built=len(contexts),
        chunks_read=len(chunk_texts),
    )


async def chunk_texts_by_id(
    platform: Platform, room_id: str, ids: Collection[str]
) -> dict[str, str]:
    """The texts of these chunks of the room (ids not stored are left out)."""
    wanted = sorted(ids)
    texts: dict[str, str] = {}
    if not wanted:
        return texts
    async with platform.session() as session:
        for start in range(0, len(wanted), _CHUNK_BATCH):
            rows = await session.execute(
                select(RoomChunk.id, RoomChunk.text).where(
                    RoomChunk.room_id == room_id,
                    RoomChunk.id.in_(wanted[start : start + _CHUNK_BATCH]),
                )
            )
            texts.update((cid, text) for cid, text in rows.all())
    return texts
