"""Room agents: configs, the sandbox, and agents answering mentions in chat.

Each agent speaks as its own user (role ``agent``, no password, a member of its room). A
mention enqueues one job per (message, agent) on the arq queue (``serving.agents.worker``);
the worker runs the reply (``knowledge.agents.runtime``: the agent's prompt, the room's recent
history, tool calls), streams it to the room as ``agent.typing`` / ``message.delta`` frames and
stores it once, complete, as a reply to the message. Offline (no LLM) an agent answers through
its tools and says so.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import AgentConfig, Message, User, UserRole
from knowledge import rooms, users
from knowledge.agents.llm import AgentLLM, AgentLLMError
from knowledge.agents.runtime import (
    AgentResult,
    AgentSpec,
    DeltaSink,
    build_messages,
    recent_history,
    run_turn,
)
from knowledge.agents.secrets import SecretsUnavailable, decrypt_secret, encrypt_secret
from knowledge.errors import DomainError
from knowledge.settings import Settings
from serving.agents import queue
from serving.agents.schemas import AgentIn, AgentUpdate, SandboxOut, ToolCallOut
from serving.chat.service import post_message
from serving.errors import Conflict, NotFound, Unprocessable
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


def analytics_spec(settings: Settings, user_id: uuid.UUID | None = None) -> AgentSpec:
    return AgentSpec(
        ANALYTICS_NAME,
        ANALYTICS_PROMPT,
        settings.llm_chat_model,
        ["graph_query", "search_messages", "list_artifacts", "read_artifact"],
        user_id=user_id,
    )


def spec_of(agent: AgentConfig, settings: Settings) -> AgentSpec:
    """The runnable spec of a configured agent (its key decrypted: worker and sandbox only)."""
    key = None
    if agent.api_key_encrypted is not None:
        key = decrypt_secret(settings.fernet_secret_key, agent.api_key_encrypted)
    return AgentSpec(
        agent.name,
        agent.system_prompt,
        agent.model,
        list(agent.tools),
        user_id=agent.user_id,
        base_url=agent.base_url,
        api_key=key,
    )


def has_model(settings: Settings, spec: AgentSpec) -> bool:
    """An agent has a model when it has its own endpoint or the server has an LLM."""
    return bool(spec.base_url or settings.uses_llm)


def agent_llm(settings: Settings, spec: AgentSpec) -> AgentLLM | None:
    """The agent's model client; None offline (no server LLM and no endpoint of its own)."""
    if not has_model(settings, spec):
        return None
    return AgentLLM(
        api_key=spec.api_key or (settings.openai_api_key or ""),
        base_url=spec.base_url or settings.llm_base_url,
        model=spec.model,
        timeout=min(settings.llm_timeout_seconds, settings.agent_timeout_seconds),
        max_retries=min(settings.llm_max_retries, 2),
    )


def _encrypted_key(settings: Settings, api_key: str) -> str:
    try:
        return encrypt_secret(settings.fernet_secret_key, api_key)
    except SecretsUnavailable as error:
        raise Unprocessable(str(error), "secrets_unavailable") from None


# configs


async def find_agent(session: AsyncSession, room_id: uuid.UUID, agent_id: uuid.UUID) -> AgentConfig:
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
    identity = await users.create_user(
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
        base_url=body.base_url,
        api_key_encrypted=_encrypted_key(state.settings, body.api_key) if body.api_key else None,
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
    return await find_agent(session, room.id, agent_id)


async def update_agent(
    session: AsyncSession,
    state: AppState,
    perms: Permissions,
    actor: User,
    room_id: uuid.UUID,
    agent_id: uuid.UUID,
    body: AgentUpdate,
) -> AgentConfig:
    room = await authorize_room(session, perms, actor, room_id, Action.AGENT_MANAGE)
    agent = await find_agent(session, room.id, agent_id)
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
    if body.base_url is not None:
        agent.base_url = body.base_url or None
    if body.api_key is not None:
        # Re-saving the key rotates it; "" removes it.
        agent.api_key_encrypted = (
            _encrypted_key(state.settings, body.api_key) if body.api_key else None
        )
    agent.updated_at = datetime.now(UTC)
    await session.commit()
    await session.refresh(agent)
    return agent


async def delete_agent(
    session: AsyncSession, perms: Permissions, actor: User, room_id: uuid.UUID, agent_id: uuid.UUID
) -> None:
    room = await authorize_room(session, perms, actor, room_id, Action.AGENT_MANAGE)
    agent = await find_agent(session, room.id, agent_id)
    identity = await session.get(User, agent.user_id)
    # The identity goes too (its config and membership cascade); its messages stay, authorless.
    await session.delete(identity if identity is not None else agent)
    await session.commit()


# running


def _question(text: str) -> str:
    return MENTION.sub(" ", text).strip()


def _handle(spec: AgentSpec) -> str:
    return "analytics" if spec.name == ANALYTICS_NAME else spec.name


def _tool_calls(result: AgentResult) -> list[ToolCallOut]:
    return [
        ToolCallOut(tool=c.tool, arguments=c.arguments, citations=c.citations, error=c.error)
        for c in result.tool_calls
    ]


async def _noop(delta: str) -> None:
    return None


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
        spec = analytics_spec(state.settings)
    else:
        spec = spec_of(await find_agent(session, room.id, agent_id), state.settings)
    try:
        result = await _turn(state, room.id, spec, actor.full_name, message, None, _noop)
    except (AgentLLMError, TimeoutError) as error:
        log.warning("sandbox of %s failed: %s", spec.name, error)
        raise Unprocessable(
            f"{spec.name} could not answer: its language model failed ({_reason(error)})",
            "agent_failed",
        ) from None
    return SandboxOut(
        agent=spec.name,
        model=spec.model,
        reply=result.reply,
        tool_calls=_tool_calls(result),
        offline=result.offline,
    )


async def analytics_identity(session: AsyncSession) -> User:
    """The Analytics Agent's user (created once, shared by every room)."""
    user = await users.get_user_by_email(session, ANALYTICS_EMAIL)
    if user is None:
        user = await users.create_user(session, ANALYTICS_EMAIL, ANALYTICS_NAME, UserRole.agent)
    return user


def mentioned(text: str) -> list[str]:
    """Lower-cased @names in the text (trailing punctuation dropped), first seen first."""
    names = (m.rstrip("._-").lower() for m in MENTION.findall(text))
    return list(dict.fromkeys(n for n in names if n))


async def mentioned_agents(
    session: AsyncSession, room_id: uuid.UUID, text: str, exclude: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """The user ids of the agents a message mentions (at most MAX_AGENTS_PER_MESSAGE); the
    Analytics Agent joins the room on its first mention."""
    names = mentioned(text)
    if not names:
        return []
    found = await session.execute(
        select(AgentConfig).where(
            AgentConfig.room_id == room_id, func.lower(AgentConfig.name).in_(names)
        )
    )
    configured = {a.name.lower(): a.user_id for a in found.scalars()}
    ids: list[uuid.UUID] = []
    for name in names:
        if name in ANALYTICS_MENTIONS:
            identity = await analytics_identity(session)
            if await rooms.room_member(session, room_id, identity.id) is None:
                await rooms.set_room_member(session, room_id, identity.id, "agent")
            user_id = identity.id
        elif name in configured:
            user_id = configured[name]
        else:
            continue
        if user_id != exclude and user_id not in ids:
            ids.append(user_id)
    return ids[:MAX_AGENTS_PER_MESSAGE]


async def respond_to_mentions(
    state: AppState, room_id: uuid.UUID, message_id: int, text: str, depth: int = 0
) -> int:
    """After a message is posted: one reply job per mentioned agent (the worker answers).
    Returns the number of jobs enqueued (a job already queued for the pair is not repeated)."""
    if not mentioned(text):
        return 0
    try:
        async with state.session_factory() as session:
            message = await session.get(Message, message_id)
            author = message.author_id if message is not None else None
            agents = await mentioned_agents(session, room_id, text, exclude=author)
            await session.commit()
        enqueued = 0
        for agent_user_id in agents:
            if await queue.enqueue_reply(state.redis, room_id, message_id, agent_user_id, depth):
                enqueued += 1
        return enqueued
    except Exception:
        log.exception(
            "could not enqueue agent replies to message %s in room %s", message_id, room_id
        )
        return 0


# the worker's side


async def _reply_exists(session: AsyncSession, message_id: int, author_id: uuid.UUID) -> bool:
    found = await session.execute(
        select(Message.id).where(Message.reply_to == message_id, Message.author_id == author_id)
    )
    return found.first() is not None


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "it took too long"
    if isinstance(error, AgentLLMError):
        return "it could not be reached" if "Connection" in str(error) else "it returned an error"
    return "an internal error"


async def _guard_trips(state: AppState, room_id: uuid.UUID, depth: int) -> tuple[str, bool] | None:
    """The loop guard: None to go on, else (notice, whether to post it). It bounds what agents
    trigger in each other (depth >= 1); replies to people are bounded by the API's own rate
    limits instead. The notice is posted once per room and minute, so a tripped guard does not
    itself flood the room."""
    settings = state.settings
    minute = int(time.time() // 60)
    if depth == 0:
        return None
    if depth > settings.agent_max_depth:
        notice = (
            f"Loop guard: agents answering agents stop after {settings.agent_max_depth} "
            "replies in a row; mention me again to continue."
        )
    else:
        key = f"coagent:agents:replies:{room_id}:{minute}"
        async with state.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 120)
            count, _ = await pipe.execute()
        if int(count) <= settings.agent_replies_per_minute:
            return None
        notice = (
            f"Loop guard: agents in this room have answered each other "
            f"{settings.agent_replies_per_minute} times in the last minute; I'll stop here."
        )
    first = await state.redis.set(f"coagent:agents:guard:{room_id}:{minute}", 1, ex=120, nx=True)
    return notice, bool(first)


async def answer_mention(
    state: AppState, room_id: uuid.UUID, message_id: int, agent_user_id: uuid.UUID, depth: int
) -> str:
    """One agent's reply to one message (the worker's job). Idempotent: a reply already stored
    for the pair ends the job; the reply is written once, complete. Returns what happened."""
    settings = state.settings
    async with state.session_factory() as session:
        message = await session.get(Message, message_id)
        if message is None or message.room_id != room_id or message.deleted_at is not None:
            return "message gone"
        if await _reply_exists(session, message_id, agent_user_id):
            return "already answered"
        identity = await session.get(User, agent_user_id)
        if identity is None or await rooms.room_member(session, room_id, agent_user_id) is None:
            return "agent gone"
        config = (
            await session.execute(select(AgentConfig).where(AgentConfig.user_id == agent_user_id))
        ).scalar_one_or_none()
        try:
            spec = spec_of(config, settings) if config else analytics_spec(settings, identity.id)
        except SecretsUnavailable as error:
            log.warning("agent %s cannot read its API key: %s", identity.full_name, error)
            spec = AgentSpec(identity.full_name, "", settings.llm_chat_model, [])
        author = await session.get(User, message.author_id) if message.author_id else None
        speaker = author.full_name if author is not None else "someone"
        text = message.content

    tripped = await _guard_trips(state, room_id, depth)
    if tripped is not None:
        notice, post = tripped
        log.warning("loop guard in room %s (depth %d): %s", room_id, depth, notice)
        if post:
            guard = {"model": spec.model, "offline": True, "error": "loop_guard"}
            await store_reply(state, identity, room_id, message_id, notice, guard)
        return "loop guard"

    pending_id = uuid.uuid4().hex
    base = {"room_id": str(room_id), "pending_id": pending_id, "reply_to": message_id}
    await state.broadcaster.publish(
        room_id,
        {
            **base,
            "type": "agent.typing",
            "author_id": str(identity.id),
            "author_name": identity.full_name,
        },
    )

    async def on_delta(delta: str) -> None:
        await state.broadcaster.publish(room_id, {**base, "type": "message.delta", "delta": delta})

    content, meta = await run_reply(state, room_id, spec, speaker, text, message_id, on_delta)
    meta["pending_id"] = pending_id
    stored = await store_reply(state, identity, room_id, message_id, content, meta)
    if stored is None:
        return "already answered"
    if "error" not in meta:
        await respond_to_mentions(state, room_id, stored, content, depth + 1)
    return "answered" if "error" not in meta else "error reply"


async def run_reply(
    state: AppState,
    room_id: uuid.UUID,
    spec: AgentSpec,
    speaker: str,
    text: str,
    message_id: int,
    on_delta: DeltaSink,
) -> tuple[str, dict[str, Any]]:
    """One agent turn on a stored room message, as ``answer_mention`` runs it (the room's
    history up to the message, the agent's model or its tools offline, the time limit), for
    callers that stream and store the reply themselves (``serving.a2a``). Returns the reply to
    store and its meta (``model``, ``offline``, ``tool_calls``, ``citations``); when the model
    fails, a short apology and ``error`` (the exception's class) instead."""
    meta: dict[str, Any] = {"model": spec.model}
    try:
        result = await _turn(state, room_id, spec, speaker, text, message_id, on_delta)
        content = result.reply or "I have nothing to add."
        meta |= {
            "offline": result.offline,
            "tool_calls": [t.model_dump() for t in _tool_calls(result)],
            "citations": result.citations,
        }
    except (AgentLLMError, TimeoutError, DomainError) as error:
        log.warning("agent %s failed on message %s: %r", spec.name, message_id, error)
        content = f"Sorry, I couldn't answer that: my language model failed ({_reason(error)})."
        meta |= {"offline": not has_model(state.settings, spec), "error": type(error).__name__}
    return content, meta


async def _turn(
    state: AppState,
    room_id: uuid.UUID,
    spec: AgentSpec,
    speaker: str,
    text: str,
    up_to_message: int | None,
    on_delta: DeltaSink,
) -> AgentResult:
    """One agent turn: the room's history up to the message, the agent's model (or its tools
    offline), within the reply timeout. Model failures and timeouts raise."""
    settings = state.settings
    question = _question(text) or text
    llm = agent_llm(settings, spec)
    try:
        history = await recent_history(
            state.platform, room_id, up_to_message, settings.agent_history_tokens
        )
        return await asyncio.wait_for(
            run_turn(
                state.platform,
                room_id,
                spec,
                question,
                build_messages(spec, history, speaker, question),
                llm,
                on_delta,
                settings.agent_max_tool_rounds,
            ),
            settings.agent_timeout_seconds,
        )
    finally:
        if llm is not None:
            await llm.aclose()


async def store_reply(
    state: AppState,
    identity: User,
    room_id: uuid.UUID,
    message_id: int,
    content: str,
    meta: dict[str, Any],
) -> int | None:
    """The reply's id, or None when another run of the job stored it first."""
    content = content[: state.settings.max_message_chars]
    async with state.session_factory() as session:
        try:
            out = await post_message(
                session,
                state,
                Permissions(session),
                identity,
                room_id,
                content,
                reply_to=message_id,
                meta=meta,
            )
        except IntegrityError:
            await session.rollback()
            return None
    return out.id
