"""The A2A agent executor: one task = one exchange with a room agent, posted in the room.

A task goes ``submitted`` → ``working`` → ``completed`` (or ``failed`` when the agent's model
fails or times out; ``rejected`` when the message cannot be posted: no text, too long, an agent
whose API key cannot be read). The reply is the task's ``reply`` artifact: a text part (the
reply exactly as stored in the room) and a data part (the room message ids, the tool calls,
the citations). ``message/stream`` also sends the reply while the agent writes it, as appended
chunks of that artifact; the final chunk (``append: false``, ``lastChunk: true``) replaces them
with the stored text.

**Why the caller's message is posted as the caller.** An A2A call is the caller talking to a
room agent, exactly like an @mention in the chat, only from another program: the room must see
who asked what (the agent's reply would otherwise answer nobody), the question is then part of
the room's history, indexed and answerable like any message, and the room's rules apply to it
(the caller must be allowed to post there; the text limits are the chat's). The caller's access
token names a person, so the message is theirs. The agent's reply is posted as the agent,
``reply_to`` the caller's message, with its tool calls and citations in ``meta`` (as a mention
reply is), and is streamed to the room's WebSocket as ``agent.typing`` / ``message.delta``
frames on the way. The caller's message does not trigger @mention replies: the addressed agent
answers it, once.
"""

from __future__ import annotations

import json
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events import EventQueue
from a2a.server.tasks import InMemoryTaskStore, TaskStore, TaskUpdater
from a2a.types import a2a_pb2
from a2a.types.a2a_pb2 import Part, Task, TaskState, TaskStatus
from google.protobuf import struct_pb2
from google.protobuf.json_format import ParseDict

from dbschema.models import User
from knowledge import rooms
from knowledge.agents.runtime import AgentSpec
from knowledge.agents.secrets import SecretsUnavailable
from knowledge.errors import DomainError
from serving.agents.service import (
    analytics_identity,
    analytics_spec,
    find_agent,
    run_reply,
    spec_of,
    store_reply,
)
from serving.chat.service import post_message
from serving.errors import ApiError, Unprocessable
from serving.permissions import Permissions
from serving.state import AppState

#: Where the authenticated caller travels: the request's ASGI scope, then the SDK's call context.
CALLER_KEY = "coagent.a2a_caller"
#: The task owner (tasks are scoped to one caller at one agent endpoint).
OWNER_KEY = "coagent.a2a_owner"
ANALYTICS = "analytics"
REPLY_ARTIFACT = "reply"
STREAMING_METHODS = frozenset({"SendStreamingMessage", "message/stream"})


@dataclass(frozen=True)
class Caller:
    """An authenticated room member calling one agent of the room."""

    state: AppState
    user_id: uuid.UUID
    room_id: uuid.UUID
    agent_id: uuid.UUID | None  # None: the Analytics Agent

    @property
    def agent_key(self) -> str:
        return ANALYTICS if self.agent_id is None else str(self.agent_id)

    @property
    def owner(self) -> str:
        return f"{self.user_id}/{self.room_id}/{self.agent_key}"


def caller_of(context: ServerCallContext) -> Caller:
    caller = context.state.get(CALLER_KEY)
    if not isinstance(caller, Caller):  # the routes always set it; never a silent default
        raise RuntimeError("an A2A call without an authenticated caller")
    return caller


def task_owner(context: ServerCallContext) -> str:
    return str(context.state.get(OWNER_KEY) or caller_of(context).owner)


class RecentTaskStore(TaskStore):
    """The SDK's in-memory task store, keeping the latest ``limit`` tasks (oldest evicted), each
    visible only to its owner. Tasks live in the API process that ran them; the exchange itself
    is durable as the room's messages."""

    def __init__(self, owner: Callable[[ServerCallContext], str], limit: int = 2000) -> None:
        self._owner = owner
        self._inner = InMemoryTaskStore(owner_resolver=owner)
        self._order: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.limit = limit

    def __len__(self) -> int:
        return len(self._order)

    async def save(self, task: Task, context: ServerCallContext) -> None:
        await self._inner.save(task, context)
        key = (self._owner(context), task.id)
        self._order[key] = None
        self._order.move_to_end(key)
        while len(self._order) > self.limit:
            (owner, task_id), _ = self._order.popitem(last=False)
            await self._inner.delete(task_id, ServerCallContext(state={OWNER_KEY: owner}))

    async def get(self, task_id: str, context: ServerCallContext) -> Task | None:
        return await self._inner.get(task_id, context)

    async def list(
        self, params: a2a_pb2.ListTasksRequest, context: ServerCallContext
    ) -> a2a_pb2.ListTasksResponse:
        return await self._inner.list(params, context)

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        await self._inner.delete(task_id, context)
        self._order.pop((self._owner(context), task_id), None)


@dataclass
class _Exchange:
    actor: User
    identity: User
    spec: AgentSpec
    message_id: int


async def _begin(caller: Caller, text: str, a2a: dict[str, Any]) -> _Exchange:
    """Resolve the agent and post the caller's message in the room (as the caller)."""
    state = caller.state
    async with state.session_factory() as session:
        actor = await session.get(User, caller.user_id)
        if actor is None:
            raise Unprocessable("the caller's account no longer exists")
        if caller.agent_id is None:
            identity = await analytics_identity(session)
            # The Analytics Agent joins a room on first use, as on its first @mention.
            if await rooms.room_member(session, caller.room_id, identity.id) is None:
                await rooms.set_room_member(session, caller.room_id, identity.id, "agent")
            spec = analytics_spec(state.settings, identity.id)
        else:
            config = await find_agent(session, caller.room_id, caller.agent_id)
            found = await session.get(User, config.user_id)
            if found is None:
                raise Unprocessable("this agent has no identity in the room")
            identity = found
            try:
                spec = spec_of(config, state.settings)
            except SecretsUnavailable as error:
                raise Unprocessable(
                    f"{config.name} cannot read its API key: {error}", "secrets_unavailable"
                ) from None
        posted = await post_message(
            session,
            state,
            Permissions(session),
            actor,
            caller.room_id,
            text,
            meta={"a2a": {**a2a, "agent": spec.name, "agent_id": caller.agent_key}},
        )
    return _Exchange(actor, identity, spec, posted.id)


def _struct(value: dict[str, Any]) -> struct_pb2.Value:
    return ParseDict(json.loads(json.dumps(value, default=str)), struct_pb2.Value())


class RoomAgentExecutor(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        caller = caller_of(context.call_context)
        state = caller.state
        task_id, context_id = str(context.task_id), str(context.context_id)
        if context.current_task is None:
            history = [context.message] if context.message is not None else []
            await event_queue.enqueue_event(
                Task(
                    id=task_id,
                    context_id=context_id,
                    status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED),
                    history=history,
                )
            )
        updater = TaskUpdater(event_queue, task_id, context_id)
        text = context.get_user_input().strip()
        if not text:
            await updater.reject(_say(updater, "send the message to the agent as a text part"))
            return
        a2a = {"task_id": task_id, "context_id": context_id}
        try:
            exchange = await _begin(caller, text, a2a)
        except (ApiError, DomainError) as error:
            message = error.message if isinstance(error, ApiError) else str(error)
            await updater.reject(_say(updater, message))
            return
        await updater.start_work()

        streaming = context.call_context.state.get("method") in STREAMING_METHODS
        pending_id = uuid.uuid4().hex
        frame: dict[str, Any] = {
            "room_id": str(caller.room_id),
            "pending_id": pending_id,
            "reply_to": exchange.message_id,
        }
        await state.broadcaster.publish(
            caller.room_id,
            {
                **frame,
                "type": "agent.typing",
                "author_id": str(exchange.identity.id),
                "author_name": exchange.identity.full_name,
            },
        )
        chunks = 0

        async def on_delta(delta: str) -> None:
            nonlocal chunks
            if not delta:
                return
            await state.broadcaster.publish(
                caller.room_id, {**frame, "type": "message.delta", "delta": delta}
            )
            if streaming:
                await updater.add_artifact(
                    [Part(text=delta)],
                    artifact_id=REPLY_ARTIFACT,
                    name=REPLY_ARTIFACT,
                    append=chunks > 0,
                    last_chunk=False,
                )
                chunks += 1

        content, meta = await run_reply(
            state,
            caller.room_id,
            exchange.spec,
            exchange.actor.full_name,
            text,
            exchange.message_id,
            on_delta,
        )
        meta |= {"pending_id": pending_id, "a2a": a2a}
        stored = await store_reply(
            state, exchange.identity, caller.room_id, exchange.message_id, content, meta
        )
        if "error" in meta or stored is None:
            await updater.failed(_say(updater, content))
            return
        details = {
            "room_id": str(caller.room_id),
            "message_id": str(exchange.message_id),
            "reply_id": str(stored),
            "agent": exchange.spec.name,
            "model": meta["model"],
            "offline": meta["offline"],
            "tool_calls": meta["tool_calls"],
            "citations": meta["citations"],
        }
        await updater.add_artifact(
            [
                Part(text=content[: state.settings.max_message_chars]),
                Part(data=_struct(details), media_type="application/json"),
            ],
            artifact_id=REPLY_ARTIFACT,
            name=REPLY_ARTIFACT,
            append=False,
            last_chunk=True,
        )
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        """The SDK has cancelled ``execute`` already: the reply is not stored."""
        updater = TaskUpdater(event_queue, str(context.task_id), str(context.context_id))
        await updater.cancel()


def _say(updater: TaskUpdater, text: str) -> a2a_pb2.Message:
    return updater.new_agent_message([Part(text=text)])
