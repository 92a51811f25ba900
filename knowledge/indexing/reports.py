"""Step 5: a report per community whose content changed, with its vector."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from knowledge.graph import RoomGraph
from knowledge.indexing.chunks import room_chunks
from knowledge.indexing.vectors import VectorSync, sync_vectors
from knowledge.platform import Platform
from knowledge.reports import build_context, report_text
from knowledge.stores.base import COMMUNITIES


@dataclass
class ReportBuild:
    total: int
    regenerated: int
    deleted: int
    vectors: VectorSync
    seconds: float


async def write_reports(platform: Platform, room_id: str) -> ReportBuild:
    """Write a report for each community whose content changed; drop reports of gone ones."""
    started = time.perf_counter()
    writer = platform.report_writer
    graph: RoomGraph = await platform.graph.get_graph(room_id)
    communities = await platform.graph.get_communities(room_id)
    existing = {r.community_id: r for r in await platform.graph.get_reports(room_id)}
    chunk_texts = {c.id: c.text for c in await room_chunks(platform, room_id)}
    entities = {e.name: e for e in graph.entities}

    reports = []
    contexts = []
    for community in communities:
        context = build_context(community, entities, graph.relationships, chunk_texts)
        old = existing.get(community.id)
        if old is not None and old.content_hash == context.content_hash():
            reports.append(old)
        else:
            contexts.append(context)
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
    )
