"""Agents as participants: a mention is answered by the worker (off the request path), streamed
over the room WebSocket, stored once with its tool calls; per-agent endpoints and keys; LLM
failures; the JSON tool protocol; the loop guard. Real API (uvicorn), real worker (arq on the
tests' Redis), the local OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from cryptography.fernet import Fernet
from redis.asyncio import Redis
from sqlalchemy import select, text
from websockets.asyncio.client import ClientConnection, connect

from dbschema.models import AgentConfig, Message, UserRole
from knowledge.agents.runtime import OFFLINE_NOTE
from knowledge.platform import Platform, redis_url
from knowledge.settings import Settings
from realtime.outbox import OutboxRelay
from realtime.publisher import EventPublisher
from serving.agents import queue
from serving.agents.service import answer_mention
from serving.chat.broadcast import Broadcaster
from serving.graph.dagster import DagsterGateway
from serving.state import AppState, platform_sessions
from tests.llm_server import FakeOpenAI
from tests.serving import agent_worker as agent_helpers
from tests.serving.agent_worker import WorkerThread, member_of
from tests.serving.conftest import LiveServer, Person, committed_person

RECV_TIMEOUT = 30  # hang guards, not timing assertions
SECRET = "sk-agent-secret-0123456789"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def agent_settings(api_settings: Settings) -> Settings:
    return api_settings.model_copy(
        update={"fernet_secret_key": Fernet.generate_key().decode(), "agent_max_depth": 2}
    )


@pytest.fixture(scope="module")
def server(agent_settings: Settings) -> Iterator[LiveServer]:
    live = LiveServer(agent_settings)
    live.start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def worker(agent_settings: Settings, server: LiveServer) -> Iterator[WorkerThread]:
    thread = WorkerThread(agent_settings).start()
    yield thread
    thread.stop()


@pytest.fixture(autouse=True)
def _reset(fake: FakeOpenAI) -> None:
    fake.reset()


async def create_agent(
    server: LiveServer, admin: Person, room_id: str, fake: FakeOpenAI, **extra: Any
) -> dict[str, Any]:
    return await agent_helpers.create_agent(
        server,
        admin,
        room_id,
        fake,
        model="tutor-model-1",
        api_key=SECRET,
        prefix="helper",
        **extra,
    )


async def socket(server: LiveServer, person: Person, room_id: str) -> ClientConnection:
    url = f"{server.ws_url}/api/v1/rooms/{room_id}/ws"
    ws = await connect(url, additional_headers={"Cookie": person.cookie_header}, open_timeout=30)
    first = json.loads(await asyncio.wait_for(ws.recv(), RECV_TIMEOUT))
    assert first["type"] == "ready", first
    return ws


async def frames_until_reply(ws: ClientConnection, author_id: str) -> list[dict[str, Any]]:
    """Frames up to and including the agent's stored reply (pings skipped)."""
    seen: list[dict[str, Any]] = []
    while True:
        data = json.loads(await asyncio.wait_for(ws.recv(), RECV_TIMEOUT))
        if data["type"] == "ping":
            continue
        seen.append(data)
        if data["type"] == "message.created" and data["message"]["author_id"] == author_id:
            return seen


async def post(server: LiveServer, person: Person, room_id: str, content: str) -> dict[str, Any]:
    async with person.http(server) as client:
        response = await client.post(f"/api/v1/rooms/{room_id}/messages", json={"content": content})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def replies_to(platform: Platform, message_id: int) -> list[Message]:
    async with platform.session() as session:
        found = await session.execute(select(Message).where(Message.reply_to == message_id))
        return list(found.scalars())


@pytest.fixture
async def people(
    platform: Platform, agent_settings: Settings, built_room: str
) -> AsyncIterator[tuple[Person, Person]]:
    admin = await member_of(platform, agent_settings, built_room, UserRole.admin)
    member = await member_of(platform, agent_settings, built_room, UserRole.student)
    yield admin, member


async def test_a_mention_streams_a_reply_that_used_graph_query_and_cites_real_messages(
    server: LiveServer,
    worker: WorkerThread,
    fake: FakeOpenAI,
    platform: Platform,
    built_room: str,
    people: tuple[Person, Person],
) -> None:
    admin, member = people
    agent = await create_agent(server, admin, built_room, fake)
    ws = await socket(server, member, built_room)
    try:
        question = await post(
            server, member, built_room, f"@{agent['name']} what does Menenius say about the belly?"
        )
        frames = await frames_until_reply(ws, agent["user_id"])
    finally:
        await ws.close()
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "message.created" and frames[0]["message"]["id"] == question["id"]
    typing = next(f for f in frames if f["type"] == "agent.typing")
    deltas = [f for f in frames if f["type"] == "message.delta"]
    reply = frames[-1]["message"]
    assert kinds.index("agent.typing") < kinds.index("message.delta") < len(kinds) - 1
    assert {d["pending_id"] for d in deltas} == {typing["pending_id"]}
    assert reply["agent"]["pending_id"] == typing["pending_id"]
    assert "".join(d["delta"] for d in deltas).strip() == reply["content"]
    assert reply["reply_to"] == question["id"] and reply["author_kind"] == "agent"
    calls = reply["agent"]["tool_calls"]
    assert calls[0]["tool"] == "graph_query" and reply["agent"]["offline"] is False
    cited = [c["id"] for c in reply["agent"]["citations"] if c["kind"] == "message"]
    assert cited, reply
    async with member.http(server) as client:
        for message_id in cited:
            found = await client.get(f"/api/v1/rooms/{built_room}/messages/{message_id}")
            assert found.status_code == 200, message_id
    assert f"[#{cited[0]}]" in reply["content"]
    # The agent's own model, prompt and key; the room's history is in the prompt.
    first = fake.agent_requests[0]
    assert first["model"] == "tutor-model-1" and first["stream"] is True
    assert "You are a careful tutor." in first["messages"][0]["content"]
    assert f"[#{question['id']}]" in first["messages"][1]["content"]
    assert {t["function"]["name"] for t in first["tools"]} == {"graph_query", "search_messages"}
    assert set(fake.chat_authorizations) == {f"Bearer {SECRET}"}
    assert len(await replies_to(platform, question["id"])) == 1


async def test_the_api_key_is_stored_encrypted_never_returned_and_rotates(
    server: LiveServer,
    worker: WorkerThread,
    fake: FakeOpenAI,
    platform: Platform,
    built_room: str,
    people: tuple[Person, Person],
) -> None:
    admin, member = people
    agent = await create_agent(server, admin, built_room, fake)
    assert agent["has_api_key"] is True and "api_key" not in agent
    base = f"/api/v1/rooms/{built_room}/agents"
    async with admin.http(server) as client:
        bodies = [
            (await client.get(base)).text,
            (await client.get(f"{base}/{agent['id']}")).text,
            (await client.patch(f"{base}/{agent['id']}", json={"api_key": "sk-rotated-42"})).text,
            (await client.get("/openapi.json")).text,
        ]
    assert not any(SECRET in b or "sk-rotated-42" in b for b in bodies)
    async with platform.session() as session:
        stored = (
            await session.execute(
                select(AgentConfig.api_key_encrypted).where(
                    AgentConfig.id == uuid.UUID(agent["id"])
                )
            )
        ).scalar_one()
        dump = (
            await session.execute(text("select row_to_json(a)::text from agent_configs a"))
        ).all()
    assert stored and "sk-rotated-42" not in stored
    assert not any("sk-rotated-42" in row[0] or SECRET in row[0] for row in dump)
    question = await post(server, member, built_room, f"@{agent['name']} who is Coriolanus?")

    await wait_for_reply(platform, question["id"])
    assert set(fake.chat_authorizations) == {"Bearer sk-rotated-42"}
    async with admin.http(server) as client:
        cleared = await client.patch(f"{base}/{agent['id']}", json={"api_key": ""})
    assert cleared.json()["has_api_key"] is False


async def test_a_failing_model_gives_a_short_error_reply_once(
    server: LiveServer,
    worker: WorkerThread,
    fake: FakeOpenAI,
    platform: Platform,
    agent_settings: Settings,
    built_room: str,
    people: tuple[Person, Person],
) -> None:
    admin, member = people
    agent = await create_agent(server, admin, built_room, fake)
    fake.chat_status = 500
    question = await post(server, member, built_room, f"@{agent['name']} who is Aufidius?")

    await wait_for_reply(platform, question["id"])
    [reply] = await replies_to(platform, question["id"])
    assert reply.content.startswith("Sorry, I couldn't answer that")
    assert reply.meta is not None and reply.meta["error"] == "AgentLLMError"
    assert "the model is down" not in reply.content  # the reason is logged, not posted
    # The job runs again (a retry, a duplicate enqueue): still one reply.
    room_id, agent_user = uuid.UUID(built_room), uuid.UUID(agent["user_id"])
    async with local_state(agent_settings, platform) as state:
        outcome = await answer_mention(state, room_id, question["id"], agent_user, 0)
        again = await queue.enqueue_reply(state.redis, room_id, question["id"], agent_user, 0)
    assert outcome == "already answered"
    assert again is False
    assert len(await replies_to(platform, question["id"])) == 1


async def test_a_server_without_function_calling_gets_the_json_tool_protocol(
    server: LiveServer,
    worker: WorkerThread,
    fake: FakeOpenAI,
    platform: Platform,
    built_room: str,
    people: tuple[Person, Person],
) -> None:
    admin, member = people
    agent = await create_agent(server, admin, built_room, fake)
    fake.rejects_tools = True
    question = await post(server, member, built_room, f"@{agent['name']} who is Volumnia?")

    await wait_for_reply(platform, question["id"])
    [reply] = await replies_to(platform, question["id"])
    assert reply.meta is not None and "error" not in reply.meta, reply.content
    assert [c["tool"] for c in reply.meta["tool_calls"]] == ["graph_query"]
    assert reply.content.startswith("From the room:")


async def test_agents_mentioning_each_other_are_stopped_by_the_loop_guard(
    server: LiveServer,
    worker: WorkerThread,
    fake: FakeOpenAI,
    platform: Platform,
    built_room: str,
    people: tuple[Person, Person],
) -> None:
    admin, member = people
    suffix = uuid.uuid4().hex[:6]
    alpha, beta = f"alpha{suffix}", f"beta{suffix}"
    await create_agent(server, admin, built_room, fake, name=alpha, system_prompt=f"RELAY: @{beta}")
    second = await create_agent(
        server, admin, built_room, fake, name=beta, system_prompt=f"RELAY: @{alpha}"
    )
    question = await post(server, member, built_room, f"@{alpha} who is Menenius?")

    async def guarded() -> bool:
        async with platform.session() as session:
            found = await session.execute(
                select(Message.content).where(
                    Message.id > question["id"], Message.room_id == uuid.UUID(built_room)
                )
            )
            return any(c.startswith("Loop guard") for c in found.scalars())

    await wait(guarded)
    await asyncio.sleep(1.0)  # nothing more may follow the notice
    async with platform.session() as session:
        found = await session.execute(
            select(Message).where(
                Message.id > question["id"], Message.room_id == uuid.UUID(built_room)
            )
        )
        after = list(found.scalars())
    # depth 0 (alpha), 1 (beta), 2 (alpha): agent_max_depth=2, then beta's notice.
    assert len(after) == 4, [m.content for m in after]
    assert after[-1].content.startswith("Loop guard") and after[-1].author_id == uuid.UUID(
        second["user_id"]
    )


async def test_an_outsider_cannot_reach_an_agent(
    server: LiveServer,
    worker: WorkerThread,
    fake: FakeOpenAI,
    platform: Platform,
    agent_settings: Settings,
    built_room: str,
    people: tuple[Person, Person],
) -> None:
    admin, _ = people
    agent = await create_agent(server, admin, built_room, fake)
    outsider = await committed_person(platform, agent_settings)
    async with outsider.http(server) as client:
        posted = await client.post(
            f"/api/v1/rooms/{built_room}/messages", json={"content": f"@{agent['name']} hi"}
        )
        tried = await client.post(
            f"/api/v1/rooms/{built_room}/agents/{agent['id']}/sandbox", json={"message": "hi"}
        )
    assert posted.status_code in (403, 404) and tried.status_code in (403, 404)
    assert fake.agent_requests == []


@asynccontextmanager
async def local_state(settings: Settings, platform: Platform) -> AsyncIterator[AppState]:
    """An AppState on this test's event loop (the same database and Redis as the worker)."""
    redis = Redis.from_url(redis_url(settings))
    sessions = platform_sessions(platform)
    try:
        yield AppState(
            settings=settings,
            platform=platform,
            redis=redis,
            events=EventPublisher(redis),
            outbox=OutboxRelay(sessions, EventPublisher(redis)),
            broadcaster=Broadcaster(redis),
            dagster=DagsterGateway(settings),
            session_factory=sessions,
        )
    finally:
        await redis.aclose()


async def wait_for_reply(platform: Platform, message_id: int) -> None:
    async def answered() -> bool:
        return bool(await replies_to(platform, message_id))

    await wait(answered)


async def wait(predicate: Any, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.1)


async def test_offline_the_analytics_agent_answers_through_its_tools_and_says_so(
    server: LiveServer,
    worker: WorkerThread,
    fake: FakeOpenAI,
    platform: Platform,
    built_room: str,
    people: tuple[Person, Person],
) -> None:
    _, member = people
    silent = await post(server, member, built_room, "mail me at someone@example.com, @nobody")
    question = await post(server, member, built_room, "@analytics what are the main themes?")

    await wait_for_reply(platform, question["id"])
    [reply] = await replies_to(platform, question["id"])
    assert "main threads" in reply.content and OFFLINE_NOTE in reply.content
    assert reply.meta is not None and reply.meta["offline"] is True
    assert [c["tool"] for c in reply.meta["tool_calls"]] == ["graph_query"]
    assert await replies_to(platform, silent["id"]) == []
    assert fake.total_calls == 0
