"""``/rooms/{room_id}/agents``: per-room agent configs and a sandbox to try them."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from serving.agents import service
from serving.agents.schemas import AgentIn, AgentOut, AgentUpdate, SandboxIn, SandboxOut
from serving.deps import CurrentUser, PermissionsDep, SessionDep, StateDep
from serving.errors import ERROR_RESPONSES, ErrorResponse

router = APIRouter(prefix="/rooms/{room_id}/agents", tags=["agents"], responses=ERROR_RESPONSES)


@router.get("", response_model=list[AgentOut])
async def list_agents(
    room_id: uuid.UUID, session: SessionDep, perms: PermissionsDep, user: CurrentUser
) -> list[AgentOut]:
    agents = await service.list_agents(session, perms, user, room_id)
    return [AgentOut.model_validate(a) for a in agents]


@router.post(
    "",
    response_model=AgentOut,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"model": ErrorResponse, "description": "the name is taken"}},
)
async def create_agent(
    room_id: uuid.UUID,
    body: AgentIn,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> AgentOut:
    """Configure an agent for the room (moderators). It answers when mentioned as @name."""
    agent = await service.create_agent(session, state, perms, user, room_id, body)
    return AgentOut.model_validate(agent)


@router.post("/analytics/sandbox", response_model=SandboxOut)
async def try_analytics_agent(
    room_id: uuid.UUID,
    body: SandboxIn,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> SandboxOut:
    """What the built-in Analytics Agent would answer (nothing is posted)."""
    return await service.sandbox(session, state, perms, user, room_id, None, body.message)


@router.get("/{agent_id}", response_model=AgentOut)
async def read_agent(
    room_id: uuid.UUID,
    agent_id: uuid.UUID,
    session: SessionDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> AgentOut:
    return AgentOut.model_validate(await service.get_agent(session, perms, user, room_id, agent_id))


@router.patch(
    "/{agent_id}",
    response_model=AgentOut,
    responses={409: {"model": ErrorResponse, "description": "the name is taken"}},
)
async def update_agent(
    room_id: uuid.UUID,
    agent_id: uuid.UUID,
    body: AgentUpdate,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> AgentOut:
    """Change an agent (moderators). Re-saving ``api_key`` rotates it; ``""`` removes it."""
    agent = await service.update_agent(session, state, perms, user, room_id, agent_id, body)
    return AgentOut.model_validate(agent)


@router.delete("/{agent_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_agent(
    room_id: uuid.UUID,
    agent_id: uuid.UUID,
    session: SessionDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> Response:
    await service.delete_agent(session, perms, user, room_id, agent_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{agent_id}/sandbox", response_model=SandboxOut)
async def try_agent(
    room_id: uuid.UUID,
    agent_id: uuid.UUID,
    body: SandboxIn,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> SandboxOut:
    """What this agent would answer to a message (nothing is posted)."""
    return await service.sandbox(session, state, perms, user, room_id, agent_id, body.message)
