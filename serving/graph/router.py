"""``/rooms/{room_id}/graph``: build, query, visualize, communities, status (members only)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from serving.deps import CurrentUser, PermissionsDep, SessionDep, StateDep
from serving.errors import ERROR_RESPONSES
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


@router.post("/build", response_model=BuildOut, status_code=status.HTTP_202_ACCEPTED)
async def build(
    room_id: uuid.UUID,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
    body: BuildIn | None = None,
) -> BuildOut:
    """Ask for the room's graph to be refreshed (or rebuilt with ``full``): appends
    ``room.rebuild_requested`` to ``graphrag:events``; the Dagster sensor launches the run."""
    room = await authorize_room(session, perms, user, room_id, Action.GRAPH_BUILD)
    return await service.request_build(state, room.id, (body or BuildIn()).full, user.id)


@router.post("/query", response_model=QueryOut)
async def query(
    room_id: uuid.UUID,
    body: QueryIn,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> QueryOut:
    """Answer a question from the room's graph: the route taken (global: community reports;
    local: entities and their neighbourhood), citations, the ranked evidence (at most
    ``top_k``) and how fresh the data is. ``mode=evidence`` returns the evidence only and
    makes no LLM call."""
    room = await authorize_room(session, perms, user, room_id, Action.GRAPH_READ)
    return await service.query(state, room.id, body)


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
