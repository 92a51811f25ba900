"""Room agents: configs, the sandbox, and the Analytics Agent answering mentions in chat.

Each agent speaks as its own user (role ``agent``, no password, a member of its room). No
language model client exists in the platform yet, so replies are composed offline from the
agent's tools: ``graph_query`` answers through the room's knowledge graph (the same router as
``POST /rooms/{id}/graph/query``).
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import AgentConfig, User, UserRole
from knowledge import rooms
from knowledge.errors import DomainError
from knowledge.search import answer_question
from serving.agents.schemas import AgentIn, AgentUpdate, SandboxOut, ToolCallOut
from serving.chat.service import post_message
from serving.errors import Conflict, NotFound
from serving.permissions import Action, Permissions
from serving.rooms.service import authorize_room
from serving.state import AppState

log = logging.getLogger(__name__)

ANALYTICS_NAME = "Analytics Agent"
ANALYTICS_EMAIL = "analytics-agent@agents.coagent.invalid"
ANALYTICS_MENTIONS = frozenset(
    {"analytics", "analytics-agent", "analytics_agent", "analyticsagent"}
)
ANALYTICS_PROMPT = (
    "You are the Analytics Agent of a CoAgent Studio room. Answer questions about what was "
    "said in the room from its knowledge graph and cite the messages you used."
)
MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9][A-Za-z0-9_.-]{0,63})")
MAX_AGENTS_PER_MESSAGE = 3


@dataclass
class AgentSpec:
    name: str
    system_prompt: str
    model: str
    tools: list[str]
    user_id: uuid.UUID | None = None


@dataclass
class AgentReply:
    reply: str
    tool_calls: list[ToolCallOut] = field(default_factory=list)
    offline: bool = True


def analytics_spec(settings_model: str) -> AgentSpec:
    return AgentSpec(ANALYTICS_NAME, ANALYTICS_PROMPT, settings_model, ["graph_query"])


# configs


async def _find(session: AsyncSession, room_id: uuid.UUID, agent_id: uuid.UUID) -> AgentConfig:
    agent = await session.get(AgentConfig, agent_id)
    if agent is None or agent.room_id != room_id:
        raise NotFound(f"agent {agent_id} does not exist in room {room_id}")
    return agent


async def _check_name(
    session: AsyncSession, room_id: uuid.UUID, name: str, agent_id: uuid.UUID | None
) -> None:
    if name.lower() in ANALYTICS_MENTIONS:
        raise Conflict(f"@{name} is reserved for the Analytics Agent", "agent_name_taken")
    found = await session.execute(
        select(AgentConfig.id).where(
            AgentConfig.room_id == room_id, func.lower(AgentConfig.name) == name.lower()
        )
    )
    existing = found.scalar_one_or_none()
    if existing is not None and existing != agent_id:
        raise Conflict(f"this room already has an agent named {name}", "agent_name_taken")


async def create_agent(
    session: AsyncSession,
    state: AppState,
    perms: Permissions,
    actor: User,
    room_id: uuid.UUID,
    body: AgentIn,
) -> AgentConfig:
    room = await authorize_room(session, perms, actor, room_id, Action.AGENT_MANAGE)
    await _check_name(session, room.id, body.name, None)
    agent_id = uuid.uuid4()
    identity = await rooms.create_user(
        session, f"agent+{agent_id.hex}@agents.coagent.invalid", body.name, UserRole.agent
    )
    await rooms.set_room_member(session, room.id, identity.id, "agent")
    agent = AgentConfig(
        id=agent_id,
        room_id=room.id,
        user_id=identity.id,
        name=body.name,
        system_prompt=body.system_prompt,
        model=body.model or state.settings.llm_chat_model,
        tools=list(dict.fromkeys(body.tools)),
        created_by=actor.id,
    )
    session.add(agent)
    await session.commit()
    await session.refresh(agent)
    return agent


async def list_agents(
    session: AsyncSession, perms: Permissions, actor: User, room_id: uuid.UUID
) -> list[AgentConfig]:
    room = await authorize_room(session, perms, actor, room_id, Action.ROOM_READ)
    found = await session.execute(
        select(AgentConfig).where(AgentConfig.room_id == room.id).order_by(AgentConfig.name)
    )
    return list(found.scalars())


async def get_agent(
    session: AsyncSession, perms: Permissions, actor: User, room_id: uuid.UUID, agent_id: uuid.UUID
) -> AgentConfig:
    room = await authorize_room(session, perms, actor, room_id, Action.ROOM_READ)
    return await _find(session, room.id, agent_id)


async def update_agent(
    session: AsyncSession,
    perms: Permissions,
    actor: User,
    room_id: uuid.UUID,
    agent_id: uuid.UUID,
    body: AgentUpdate,
) -> AgentConfig:
    room = await authorize_room(session, perms, actor, room_id, Action.AGENT_MANAGE)
    agent = await _find(session, room.id, agent_id)
    if body.name is not None and body.name != agent.name:
        await _check_name(session, room.id, body.name, agent.id)
        agent.name = body.name
        identity = await session.get(User, agent.user_id)
        if identity is not None:
            identity.full_name = body.name
    if body.system_prompt is not None:
        agent.system_prompt = body.system_prompt
    if body.model is not None:
        agent.model = body.model
    if body.tools is not None:
        agent.tools = list(dict.fromkeys(body.tools))
    agent.updated_at = datetime.now(UTC)
    await session.commit()
    await session.refresh(agent)
    return agent


async def delete_agent(
    session: AsyncSession, perms: Permissions, actor: User, room_id: uuid.UUID, agent_id: uuid.UUID
) -> None:
    room = await authorize_room(session, perms, actor, room_id, Action.AGENT_MANAGE)
    agent = await _find(session, room.id, agent_id)
    identity = await session.get(User, agent.user_id)
    # The identity goes too (its config and membership cascade); its messages stay, authorless.
    await session.delete(identity if identity is not None else agent)
    await session.commit()


# running


async def run_agent(state: AppState, room_id: uuid.UUID, spec: AgentSpec, text: str) -> AgentReply:
    """The agent's answer to ``text`` (offline: composed from its tools)."""
    question = MENTION.sub(" ", text).strip()
    if not question:
        return AgentReply(
            f"Ask me a question about this room, e.g. @{_handle(spec)} what are the main topics?"
        )
    if "graph_query" not in spec.tools:
        return AgentReply(
            f"{spec.name} has no tools and no language model is configured, so it cannot "
            "answer yet. Give it the graph_query tool."
        )
    try:
        answer = await answer_question(state.platform, str(room_id), question)
    except DomainError as error:
        return AgentReply(f"I could not answer that: {error}")
    call = ToolCallOut(
        tool="graph_query",
        route=answer.route.value,
        citations=[
            {"kind": c.kind, "id": c.id, "speaker": c.speaker, "excerpt": c.excerpt}
            for c in answer.citations
        ],
        reports_as_of=answer.reports_as_of,
    )
    return AgentReply(answer.answer, [call])


def _handle(spec: AgentSpec) -> str:
    return "analytics" if spec.name == ANALYTICS_NAME else spec.name


async def sandbox(
    session: AsyncSession,
    state: AppState,
    perms: Permissions,
    actor: User,
    room_id: uuid.UUID,
    agent_id: uuid.UUID | None,
    message: str,
) -> SandboxOut:
    """Try an agent (or the Analytics Agent when ``agent_id`` is None) without side effects."""
    room = await authorize_room(session, perms, actor, room_id, Action.AGENT_RUN)
    if agent_id is None:
        spec = analytics_spec(state.settings.llm_chat_model)
    else:
        agent = await _find(session, room.id, agent_id)
        spec = AgentSpec(agent.name, agent.system_prompt, agent.model, list(agent.tools))
    reply = await run_agent(state, room.id, spec, message)
    return SandboxOut(
        agent=spec.name,
        model=spec.model,
        reply=reply.reply,
        tool_calls=reply.tool_calls,
        offline=reply.offline,
    )


async def analytics_identity(session: AsyncSession) -> User:
    """The Analytics Agent's user (created once, shared by every room)."""
    user = await rooms.get_user_by_email(session, ANALYTICS_EMAIL)
    if user is None:
        user = await rooms.create_user(session, ANALYTICS_EMAIL, ANALYTICS_NAME, UserRole.agent)
    return user


def mentioned(text: str) -> list[str]:
    """Lower-cased @names in the text (trailing punctuation dropped), first seen first."""
    names = (m.rstrip("._-").lower() for m in MENTION.findall(text))
    return list(dict.fromkeys(n for n in names if n))


async def respond_to_mentions(
    state: AppState, room_id: uuid.UUID, message_id: int, text: str
) -> None:
    """Background task after a message is posted: each agent mentioned in it answers in the
    room; the reply is stored, broadcast and streamed like any message."""
    names = mentioned(text)
    if not names:
        return
    try:
        async with state.session_factory() as session:
            found = await session.execute(
                select(AgentConfig).where(
                    AgentConfig.room_id == room_id,
                    func.lower(AgentConfig.name).in_(names),
                )
            )
            configured = {a.name.lower(): a for a in found.scalars()}
            speakers: list[tuple[User, AgentSpec]] = []
            for name in names[: MAX_AGENTS_PER_MESSAGE * 2]:
                if name in ANALYTICS_MENTIONS:
                    identity = await analytics_identity(session)
                    if await rooms.room_member(session, room_id, identity.id) is None:
                        await rooms.set_room_member(session, room_id, identity.id, "agent")
                    spec = analytics_spec(state.settings.llm_chat_model)
                elif name in configured:
                    agent = configured[name]
                    found_user = await session.get(User, agent.user_id)
                    if found_user is None:
                        continue
                    identity = found_user
                    spec = AgentSpec(
                        agent.name, agent.system_prompt, agent.model, list(agent.tools)
                    )
                else:
                    continue
                if all(identity.id != s[0].id for s in speakers):
                    speakers.append((identity, spec))
            await session.commit()
            for identity, spec in speakers[:MAX_AGENTS_PER_MESSAGE]:
                reply = await run_agent(state, room_id, spec, text)
                content = reply.reply[: state.settings.max_message_chars]
                await post_message(session, state, Permissions(session), identity, room_id, content)
    except Exception:
        log.exception("agents could not answer message %s in room %s", message_id, room_id)
