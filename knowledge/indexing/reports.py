"""Step 5: a report per community whose content changed, with its vector.

Delta: the graph and communities steps log the entities and communities they change in a way
a report's content hash can see (``graph_changes``; ``knowledge.reports.entity_report_key``
and ``relationship_report_key``); a run hashes only the communities those touch, from the
subgraph of their contexts' members (a large community's report reads only its most mentioned
members, ``knowledge.reports.CONTEXT_MEMBERS``; one read of the whole graph when the contexts
hold much of it). A full build hashes every one. The graph read is indexed once (entities by name, relationships by entity),
so each community's content hash costs the sum of its members' degrees; a community whose hash
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
from knowledge.graph import Community, CommunityReport
from knowledge.indexing.changes import (
    REPORTS_CONSUMER,
    consume_graph_changes,
    lock_room,
    pending_graph_changes,
)
from knowledge.indexing.vectors import VectorSync, sync_vector_ids, sync_vectors
from knowledge.platform import Platform
from knowledge.reports import CONTEXT_MEMBERS, GraphIndex, context_members, report_text
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
    #: "full" (every community hashed) or "delta" (those the logged changes touch).
    mode: str = "full"
    #: Communities hashed.
    touched: int = 0


#: Past this share of the room's entities among the touched communities' context members, one
#: read of the whole graph (without provenance) is cheaper than reading their subgraph.
FULL_PASS_SHARE = 0.25


async def write_reports(platform: Platform, room_id: str) -> ReportBuild:
    """Write a report for each community whose content changed; drop reports of gone ones.

    The graph and communities steps log what they changed (``graph_changes``); only the
    communities those changes touch are hashed, and only their reports and vectors are read
    (a whole-room entry hashes them all).
    """
    started = time.perf_counter()
    async with platform.session() as session:
        await lock_room(session, room_id, REPORTS_CONSUMER)
        pending = await pending_graph_changes(session, room_id)
        full = pending.whole_room
        if full:
            communities = await platform.graph.get_communities(room_id)
            build = await _write_all(platform, room_id, communities)
            touched = communities
        else:
            # Only the communities the changes touch are read (by id, or holding a changed
            # entity), not the room's thousands.
            touched = await platform.graph.get_communities(
                room_id, ids=pending.community_ids, containing=pending.entity_names
            )
            names = await _context_names(platform, room_id, touched)
            room_entities = (await platform.graph.counts(room_id, ["entities"]))["entities"]
            whole_graph = len(names) > FULL_PASS_SHARE * room_entities
            gone = sorted(pending.community_ids - {c.id for c in touched})
            build = await _write_touched(platform, room_id, touched, gone, names, whole_graph)
        await consume_graph_changes(session, pending.ids)
        await session.commit()
    build.mode = "full" if full else "delta"
    build.touched = len(touched)
    build.seconds = time.perf_counter() - started
    return build


async def _write_all(platform: Platform, room_id: str, communities: list[Community]) -> ReportBuild:
    # Content hashes need no provenance (the largest columns).
    graph = await platform.graph.get_graph(room_id, provenance=False)
    existing = {r.community_id: r for r in await platform.graph.get_reports(room_id)}
    kept, fresh, chunks_read = await _refresh(
        platform, room_id, communities, existing, GraphIndex(graph), provenance=False
    )
    gone = sorted(set(existing) - {c.id for c in communities})
    await platform.graph.delete_reports(room_id, gone)
    vectors = await sync_vectors(
        platform, COMMUNITIES, room_id, {r.community_id: _vector_item(r) for r in kept + fresh}
    )
    return ReportBuild(
        total=len(kept) + len(fresh),
        regenerated=len(fresh),
        deleted=len(gone),
        vectors=vectors,
        seconds=0.0,
        contexts_built=len(fresh),
        chunks_read=chunks_read,
    )


async def _context_names(
    platform: Platform, room_id: str, communities: list[Community]
) -> list[str]:
    """The members the communities' reports read (``knowledge.reports.context_members``): of
    a large community only its most mentioned, picked from the mentions alone."""
    large = {
        n for c in communities if len(c.entity_names) > CONTEXT_MEMBERS for n in c.entity_names
    }
    mentions = await platform.graph.entity_mentions(room_id, large)
    return sorted({n for c in communities for n in context_members(c, mentions)})


async def _write_touched(
    platform: Platform,
    room_id: str,
    touched: list[Community],
    gone: list[str],
    names: list[str],
    whole_graph: bool,
) -> ReportBuild:
    """Hash the touched communities, rewrite the changed ones. The subgraph of their
    contexts' members ``names`` (entities and the relationships among them) is read on its
    own, or, when they are much of the room, as part of one read of the whole graph without
    provenance (the entities of contexts to rewrite are then read again whole)."""
    if whole_graph:
        graph = await platform.graph.get_graph(room_id, provenance=False)
    else:
        graph = await platform.graph.neighbourhood(room_id, names, hops=0, limit=len(names))
    existing = {
        r.community_id: r
        for r in await platform.graph.get_reports(room_id, [c.id for c in touched] + gone)
    }
    _, fresh, chunks_read = await _refresh(
        platform, room_id, touched, existing, GraphIndex(graph), provenance=not whole_graph
    )
    gone = [cid for cid in gone if cid in existing]
    await platform.graph.delete_reports(room_id, gone)
    vectors = await sync_vector_ids(
        platform,
        COMMUNITIES,
        room_id,
        [r.community_id for r in fresh] + gone,
        {r.community_id: _vector_item(r) for r in fresh},
    )
    return ReportBuild(
        total=await _report_count(platform, room_id),
        regenerated=len(fresh),
        deleted=len(gone),
        vectors=vectors,
        seconds=0.0,
        contexts_built=len(fresh),
        chunks_read=chunks_read,
    )


async def _refresh(
    platform: Platform,
    room_id: str,
    communities: list[Community],
    existing: dict[str, CommunityReport],
    index: GraphIndex,
    provenance: bool,
) -> tuple[list[CommunityReport], list[CommunityReport], int]:
    """The stored reports still current, the reports written for the communities whose
    content hash changed, and the excerpt chunks read for them. An ``index`` built without
    provenance gets the entities of those communities read again whole (for their excerpts)."""
    kept, stale = [], []
    for community in communities:
        old = existing.get(community.id)
        if old is not None and old.content_hash == index.content_hash(community):
            kept.append(old)
        else:
            stale.append(community)
    if not provenance:
        for entity in await platform.graph.get_entities(
            room_id, sorted({e.name for c in stale for e in index.members(c)})
        ):
            index.entities[entity.name] = entity
    wanted = {cid for c in stale for cid in index.excerpt_chunk_ids(c)}
    chunk_texts = await chunk_texts_by_id(platform, room_id, wanted)
    contexts = [index.context(c, chunk_texts) for c in stale]
    writer = platform.report_writer
    fresh = list(await asyncio.gather(*(writer.write(c) for c in contexts)))
    await platform.graph.upsert_reports(room_id, fresh)
    return kept, fresh, len(chunk_texts)


def _vector_item(report: CommunityReport) -> tuple[str, dict[str, object]]:
    return report_text(report), {"level": report.level, "rank": report.rank, "title": report.title}


async def _report_count(platform: Platform, room_id: str) -> int:
    return (await platform.graph.counts(room_id, ["reports"]))["reports"]


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
