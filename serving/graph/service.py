from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from knowledge.errors import DomainError
from knowledge.retrieval import Evidence
from knowledge.search import (
    Answer,
    AnswerDelta,
    Citation,
    Mode,
    Route,
    answer_question,
    check_question,
    stream_answer,
)
from knowledge.stores.base import GraphStore
from realtime.events import RoomRebuildRequested
from serving.graph.dagster import Materialization, PartitionStatus
from serving.graph.schemas import (
    AssetStatus,
    BuildOut,
    CitationOut,
    CommunityOut,
    EvidenceOut,
    Freshness,
    GraphEdge,
    GraphNode,
    GraphOut,
    QueryIn,
    QueryOut,
    RunOut,
    StatusOut,
)
from serving.notify import after_commit, stage_event
from serving.pagination import Page, PageParams
from serving.state import AppState

log = logging.getLogger(__name__)

#: Stream entries examined when counting a room's pending events.
PENDING_SCAN_LIMIT = 10_000
_SCAN_BATCH = 1_000


async def request_build(
    session: AsyncSession, state: AppState, room_id: uuid.UUID, full: bool, actor_id: uuid.UUID
) -> BuildOut:
    """The ``room.rebuild_requested`` event goes through the outbox: accepted even while Redis
    is down (``stream_id`` is then None and the relay appends it once Redis is back)."""
    event = RoomRebuildRequested(room_id=str(room_id), full=full, actor_id=str(actor_id))
    staged = await stage_event(session, event)
    await session.commit()
    delivered = await after_commit(state, room_id, None, staged)
    return BuildOut(
        room_id=room_id,
        full=full,
        event_id=event.event_id,
        stream_id=delivered.get(staged[0]),
        requested_at=event.ts,
    )


async def _materializations(state: AppState, room_id: str) -> dict[str, Materialization | None]:
    try:
        return await state.dagster.last_materializations(room_id)
    except Exception:
        log.warning("Dagster instance not reachable for the freshness of room %s", room_id)
        return {}


def _citation_out(citation: Citation) -> CitationOut:
    return CitationOut(
        kind=citation.kind,
        id=citation.id,
        speaker=citation.speaker,
        time=citation.time,
        excerpt=citation.excerpt,
    )


def _evidence_out(item: Evidence) -> EvidenceOut:
    return EvidenceOut(
        kind=item.kind,
        id=item.id,
        score=item.score,
        signals=dict(item.signals),
        speaker=item.speaker,
        time=item.time,
        excerpt=item.excerpt,
    )


async def query(state: AppState, room_id: uuid.UUID, body: QueryIn) -> QueryOut:
    mode = Mode(body.mode)
    # The freshness lookup (Dagster's event log, in a thread) runs while the question is
    # answered: it is as long as a retrieval and independent of it.
    freshness = asyncio.ensure_future(_materializations(state, str(room_id)))
    try:
        answer = await answer_question(
            state.platform,
            str(room_id),
            body.question,
            Route(body.route) if body.route else None,
            top_k=body.top_k,
            mode=mode,
        )
    except BaseException:
        freshness.cancel()
        raise
    return await _query_out(state, room_id, body, answer, freshness)


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


async def query_stream(state: AppState, room_id: uuid.UUID, body: QueryIn) -> AsyncIterator[bytes]:
    """``query`` as Server-Sent Events: ``delta`` ({"text"}) pieces of the answer as it is
    generated, then ``evidence`` and ``citations``, then ``done`` (the whole ``QueryOut``).
    A failure after the stream began is an ``error`` event with the usual error body."""
    check_question(body.question)  # before the 200: a bad question is still a 422
    freshness = asyncio.ensure_future(_materializations(state, str(room_id)))
    answer: Answer | None = None
    try:
        if body.mode == Mode.evidence.value:
            answer = await answer_question(
                state.platform,
                str(room_id),
                body.question,
                Route(body.route) if body.route else None,
                top_k=body.top_k,
                mode=Mode.evidence,
            )
        else:
            async for item in stream_answer(
                state.platform,
                str(room_id),
                body.question,
                Route(body.route) if body.route else None,
                top_k=body.top_k,
            ):
                if isinstance(item, AnswerDelta):
                    yield _sse("delta", {"text": item.text})
                else:
                    answer = item
        assert answer is not None
        out = await _query_out(state, room_id, body, answer, freshness)
    except DomainError as error:
        freshness.cancel()
        log.warning("streamed query in room %s failed: %s", room_id, error)
        yield _sse("error", {"error": {"code": "invalid_input", "message": str(error)}})
        return
    except BaseException:
        freshness.cancel()
        raise
    dumped = out.model_dump(mode="json")
    yield _sse("evidence", dumped["evidence"])
    yield _sse("citations", dumped["citations"])
    yield _sse("done", dumped)


async def _query_out(
    state: AppState,
    room_id: uuid.UUID,
    body: QueryIn,
    answer: Answer,
    freshness: asyncio.Future[dict[str, Materialization | None]],
) -> QueryOut:
    mode = Mode(body.mode)
    done = await freshness
    chunks = done.get("chunks")
    graph = done.get("entities")
    pending: int | None = None
    capped = False
    try:
        pending, capped = await pending_events(
            state, str(room_id), chunks.timestamp if chunks else None
        )
    except Exception as error:  # the answer stands without the count
        log.warning("event stream not reachable for the freshness of room %s: %s", room_id, error)
    return QueryOut(
        question=answer.question,
        mode=mode.value,  # type: ignore[arg-type]
        answer=answer.answer if mode == Mode.answer else "",
        route=answer.route.value,  # type: ignore[arg-type]
        citations=[_citation_out(c) for c in answer.citations],
        evidence=[_evidence_out(e) for e in answer.evidence[: body.top_k]],
        entities=answer.entities,
        communities=answer.communities,
        freshness=Freshness(
            reports_as_of=answer.reports_as_of,
            chunks_materialized_at=chunks.timestamp if chunks else None,
            graph_materialized_at=graph.timestamp if graph else None,
            pending_events=pending,
            pending_events_capped=capped,
        ),
        seconds=round(answer.seconds, 4),
    )


async def visualize(state: AppState, room_id: uuid.UUID, limit: int) -> GraphOut:
    key = str(room_id)
    graph = await state.platform.graph.get_graph(key)
    communities = await state.platform.graph.get_communities(key)
    by_entity: dict[str, list[tuple[int, str]]] = {}
    for community in communities:
        for name in community.entity_names:
            by_entity.setdefault(name, []).append((community.level, community.id))
    ranked = sorted(graph.entities, key=lambda e: (-e.mentions, e.name))
    chosen = ranked[:limit]
    names = {e.name for e in chosen}
    edges = sorted(
        (r for r in graph.relationships if r.source in names and r.target in names),
        key=lambda r: (-r.weight, r.source, r.target),
    )[: limit * 5]
    nodes = []
    for entity in chosen:
        levels = sorted(by_entity.get(entity.name, []))
        nodes.append(
            GraphNode(
                id=entity.name,
                label=entity.display_name,
                type=entity.type,
                mentions=entity.mentions,
                community_id=next((cid for level, cid in levels if level == 0), None),
                community_ids=[cid for _, cid in levels],
            )
        )
    return GraphOut(
        room_id=room_id,
        nodes=nodes,
        edges=[GraphEdge(source=r.source, target=r.target, weight=r.weight) for r in edges],
        total_nodes=len(graph.entities),
        total_edges=len(graph.relationships),
        truncated=len(chosen) < len(graph.entities)
        or len(edges)
        < sum(1 for r in graph.relationships if r.source in names and r.target in names),
    )


async def communities(
    state: AppState, room_id: uuid.UUID, page: PageParams, level: int | None
) -> Page[CommunityOut]:
    items, total = await community_page(
        state.platform.graph, str(room_id), level, page.offset, page.limit
    )
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


async def community_page(
    graph: GraphStore, room_key: str, level: int | None, offset: int, limit: int
) -> tuple[list[CommunityOut], int]:
    """One page of the room's communities (level first, larger first) with their reports,
    and how many there are (the API's list and the MCP tool's)."""
    found = await graph.get_communities(room_key)
    reports = {r.community_id: r for r in await graph.get_reports(room_key)}
    if level is not None:
        found = [c for c in found if c.level == level]
    found.sort(key=lambda c: (c.level, -len(c.entity_names), c.id))
    items = []
    for community in found[offset : offset + limit]:
        report = reports.get(community.id)
        items.append(
            CommunityOut(
                id=community.id,
                level=community.level,
                parent_id=community.parent_id,
                size=len(community.entity_names),
                entities=community.entity_names[:50],
                title=report.title if report else None,
                summary=report.summary if report else None,
                rank=report.rank if report else None,
                generated_at=report.generated_at if report else None,
            )
        )
    return items, len(found)


async def pending_events(state: AppState, room_id: str, since: datetime | None) -> tuple[int, bool]:
    """Events of the room appended after ``since`` (newest first, at most a bounded scan)."""
    floor = f"{int(since.timestamp() * 1000)}-0" if since else "-"
    upper = "+"
    count = scanned = 0
    while scanned < PENDING_SCAN_LIMIT:
        batch = await state.redis.xrevrange(state.events.stream, upper, floor, count=_SCAN_BATCH)
        if not batch:
            return count, False
        for _, fields in batch:
            scanned += 1
            value = (fields or {}).get(b"room_id")
            if (
                value is not None
                and (value.decode() if isinstance(value, bytes) else value) == room_id
            ):
                count += 1
        last = batch[-1][0]
        last = last.decode() if isinstance(last, bytes) else str(last)
        upper = "(" + last
        if len(batch) < _SCAN_BATCH:
            return count, False
    return count, True


def _run_out(run: object) -> RunOut:
    return RunOut.model_validate(run, from_attributes=True)


async def status(state: AppState, room_id: uuid.UUID) -> StatusOut:
    key = str(room_id)
    counts = await state.platform.graph.counts(key)
    dagster_error = None
    partition: PartitionStatus | None = None
    try:
        partition = await state.dagster.partition_status(key)
    except Exception as error:
        log.warning("Dagster instance not reachable: %s", error)
        dagster_error = f"the Dagster instance is not reachable: {type(error).__name__}"
    since = None
    if partition is not None and partition.last_run is not None:
        since = partition.last_run.started_at or partition.last_run.created_at
    pending, capped = await pending_events(state, key, since)
    assets: list[AssetStatus] = []
    if partition is not None:
        for asset, record in partition.materializations.items():
            assets.append(
                AssetStatus(
                    asset=asset,
                    last_materialized_at=record.timestamp if record else None,
                    run_id=record.run_id if record else None,
                    metadata=record.metadata if record else {},
                )
            )
    return StatusOut(
        room_id=room_id,
        partition_registered=partition.registered if partition else None,
        assets=assets,
        active_runs=[_run_out(r) for r in partition.active_runs] if partition else [],
        last_run=_run_out(partition.last_run) if partition and partition.last_run else None,
        pending_events=pending,
        pending_events_capped=capped,
        counts=counts,
        dagster_available=partition is not None,
        dagster_error=dagster_error,
    )
