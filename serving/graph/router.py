"""``/rooms/{room_id}/graph``: build, query, visualize, communities, status (members only)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from fastapi.responses import StreamingResponse

from serving.auth import ratelimit
from serving.deps import CurrentUser, PermissionsDep, SessionDep, StateDep
from serving.errors import ERROR_RESPONSES, RATE_LIMITED_RESPONSE
from serving.graph import service
from serving.graph.schemas import (
    BuildIn,
    BuildOut,
    CommunityOut,
    GraphOut,
    QueryIn,
    QueryOut,
    StatusOut,
)
from serving.pagination import Page, PageDep
from serving.permissions import Action
from serving.rooms.service import authorize_room

router = APIRouter(prefix="/rooms/{room_id}/graph", tags=["graph"], responses=ERROR_RESPONSES)


@router.post(
    "/build",
    response_model=BuildOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=RATE_LIMITED_RESPONSE,
)
async def build(
    room_id: uuid.UUID,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
    body: BuildIn | None = None,
) -> BuildOut:
    """Ask for the room's graph to be refreshed (or rebuilt with ``full``): appends
    ``room.rebuild_requested`` to ``graphrag:events`` (through the outbox: accepted while Redis
    is down too, with ``stream_id`` null); the Dagster sensor launches the run. A full rebuild
    needs a room manager (moderator, course owner or teacher, admin); members get 403. At most
    ``GRAPH_BUILD_RATE_LIMIT`` requests per user per ``GRAPH_RATE_WINDOW_SECONDS`` (429)."""
    full = (body or BuildIn()).full
    # A full rebuild wipes and re-derives the room (every LLM call again): room managers only.
    action = Action.GRAPH_REBUILD if full else Action.GRAPH_BUILD
    room = await authorize_room(session, perms, user, room_id, action)
    settings = state.settings
    await ratelimit.check_user(
        state.redis,
        user.id,
        "graph_build",
        settings.graph_build_rate_limit,
        settings.graph_rate_window_seconds,
        "graph build requests",
    )
    return await service.request_build(session, state, room.id, full, user.id)


SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the answer (JSON), or with `stream: true` Server-Sent Events: "
        "`delta` {text}…, `evidence` [...], `citations` [...], `done` (the JSON response); "
        "`error` {error} if it fails after the stream began",
        "content": {
            "text/event-stream": {
                # One schema per event (what SSE clients and schemathesis validate).
                "schema": {
                    "type": "object",
                    "properties": {
                        "event": {
                            "type": "string",
                            "enum": ["delta", "evidence", "citations", "done", "error"],
                        },
                        "data": {"type": "string", "contentMediaType": "application/json"},
                    },
                    "required": ["event", "data"],
                }
            }
        },
    }
}


@router.post("/query", response_model=QueryOut, responses={**RATE_LIMITED_RESPONSE, **SSE_RESPONSE})
async def query(
    room_id: uuid.UUID,
    body: QueryIn,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> QueryOut | StreamingResponse:
    """Answer a question from the room's graph: the route taken (global: community reports;
    local: entities and their neighbourhood), citations, the ranked evidence (at most
    ``top_k``) and how fresh the data is. ``mode=evidence`` returns the evidence only and
    makes no LLM call. At most ``GRAPH_QUERY_RATE_LIMIT`` questions per user per
    ``GRAPH_RATE_WINDOW_SECONDS`` (then 429 with ``Retry-After``)."""
    room = await authorize_room(session, perms, user, room_id, Action.GRAPH_READ)
    settings = state.settings
    await ratelimit.check_user(
        state.redis,
        user.id,
        "graph_query",
        settings.graph_query_rate_limit,
        settings.graph_rate_window_seconds,
        "graph questions",
    )
    if body.stream:
        stream = service.query_stream(state, room.id, body)
        first = await anext(stream)  # a bad question raises here, before the 200
        return StreamingResponse(
            _prepend(first, stream),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return await service.query(state, room.id, body)


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for item in rest:
        yield item


@router.get("/visualize", response_model=GraphOut)
async def visualize(
    room_id: uuid.UUID,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=2000, description="most nodes returned")] = 200,
) -> GraphOut:
    """Entities (most mentioned first, at most ``limit``) and the edges among them, each
    node with its community ids."""
    room = await authorize_room(session, perms, user, room_id, Action.GRAPH_READ)
    return await service.visualize(state, room.id, limit)


@router.get("/communities", response_model=Page[CommunityOut])
async def communities(
    room_id: uuid.UUID,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
    page: PageDep,
    level: Annotated[int | None, Query(ge=0, le=100)] = None,
) -> Page[CommunityOut]:
    """Communities (coarse levels first) with their report titles and summaries."""
    room = await authorize_room(session, perms, user, room_id, Action.GRAPH_READ)
    return await service.communities(state, room.id, page, level)


@router.get("/status", response_model=StatusOut)
async def graph_status(
    room_id: uuid.UUID,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> StatusOut:
    """Last materialization of each asset for this room, queued and running runs of its
    partition, and the events not yet covered by a run."""
    room = await authorize_room(session, perms, user, room_id, Action.GRAPH_READ)
    return await service.status(state, room.id)
