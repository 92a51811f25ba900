"""The MCP server through the SDK's own clients: streamable HTTP against a live uvicorn server
(``/api/v1/mcp``), and stdio against ``coagent mcp`` in a subprocess. The room is the sample
dialogue whose graph a real Dagster run built (``built_room``)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
from mcp import ClientSession, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from knowledge import rooms
from knowledge.chat import messages_by_ids
from knowledge.graph import normalize_name
from knowledge.platform import Platform
from knowledge.retrieval.pipeline import load_aliases
from knowledge.settings import Settings
from serving.auth.security import ACCESS_COOKIE, CSRF_COOKIE, CSRF_HEADER
from serving.auth.service import revoke_user_sessions
from tests.serving.conftest import LiveServer, Person, committed_person, committed_room

TOOLS = {"list_rooms", "query_room", "search_messages", "list_communities", "get_entity"}
ROOM_TOOLS: list[tuple[str, dict[str, Any]]] = [
    ("query_room", {"question": "What did Menenius say about the belly?"}),
    ("search_messages", {"question": "Who rebelled against the belly?"}),
    ("list_communities", {}),
    ("get_entity", {"name": "Menenius"}),
]


def mcp_url(server: LiveServer) -> str:
    return f"{server.url}/api/v1/mcp"


def bearer(person: Person) -> dict[str, str]:
    return {"Authorization": f"Bearer {person.cookies[ACCESS_COOKIE]}"}


@asynccontextmanager
async def mcp_session(
    server: LiveServer,
    headers: dict[str, str] | None = None,
    cookies: dict[str, str] | None = None,
) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(headers=headers, cookies=cookies, timeout=60) as http,
        streamable_http_client(mcp_url(server), http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def member(platform: Platform, settings: Settings, room_id: str) -> Person:
    person = await committed_person(platform, settings)
    async with platform.session() as session:
        await rooms.add_member(session, uuid.UUID(room_id), person.user.id)
        await session.commit()
    return person


def data(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def error_text(result: CallToolResult) -> str:
    assert result.is_error, result.structured_content
    assert result.structured_content is None
    assert len(result.content) == 1 and isinstance(result.content[0], TextContent)
    text = result.content[0].text
    # The SDK puts "Error executing tool <name>: " before the tool's message.
    return text.split(": ", 1)[1] if text.startswith("Error executing tool ") else text


async def assert_messages_of_room(
    platform: Platform, room_id: str, items: list[dict[str, Any]]
) -> None:
    """Every message id exists, live, in this room, and its excerpt is that message's text."""
    ids = [int(i["id"]) for i in items if i.get("kind", "message") == "message"]
    assert ids and len(ids) == len(set(ids))
    async with platform.session() as session:
        found = {m.id: m for m in await messages_by_ids(session, room_id, ids)}
    assert set(found) == set(ids)
    for item in items:
        if item.get("kind", "message") == "message":
            head = " ".join(found[int(item["id"])].content.split())[:40]
            assert item["excerpt"].startswith(head), (item, head)


async def test_a_member_lists_the_tools_searches_and_queries_the_room(
    live: LiveServer, platform: Platform, api_settings: Settings, built_room: str
) -> None:
    person = await member(platform, api_settings, built_room)
    async with mcp_session(live, headers=bearer(person)) as mcp:
        listed = (await mcp.list_tools()).tools
        assert {t.name for t in listed} == TOOLS
        for tool in listed:
            assert tool.description and tool.output_schema
            assert tool.annotations is not None and tool.annotations.read_only_hint is True
        schema = next(t for t in listed if t.name == "query_room").input_schema
        assert set(schema["required"]) == {"room_id", "question"}

        rooms_seen = data(await mcp.call_tool("list_rooms", {}))
        assert [r["id"] for r in rooms_seen["items"]] == [built_room]

        found = data(
            await mcp.call_tool(
                "search_messages",
                {"room_id": built_room, "question": "Who rebelled against the belly?", "top_k": 5},
            )
        )
        assert found["room_id"] == built_room and found["route"] == "local"
        assert 1 <= len(found["evidence"]) <= 5
        assert all(e["signals"] and 0 < e["score"] <= 1 for e in found["evidence"])
        await assert_messages_of_room(platform, built_room, found["evidence"])
        assert any("belly" in e["excerpt"].lower() for e in found["evidence"])

        answer = data(
            await mcp.call_tool(
                "query_room",
                {"room_id": built_room, "question": "What did Menenius say about the belly?"},
            )
        )
        assert answer["answer"] and answer["route"] == "local"
        assert answer["citations"]
        evidence_ids = {(e["kind"], e["id"]) for e in answer["evidence"]}
        assert {(c["kind"], c["id"]) for c in answer["citations"]} <= evidence_ids
        await assert_messages_of_room(platform, built_room, answer["citations"])
        await assert_messages_of_room(platform, built_room, answer["evidence"])

        # Bad arguments are tool errors, not crashes.
        too_many = await mcp.call_tool(
            "search_messages", {"room_id": built_room, "question": "x", "top_k": 500}
        )
        assert "top_k" in error_text(too_many)
        blank = await mcp.call_tool("query_room", {"room_id": built_room, "question": "   "})
        assert "invalid_input" in error_text(blank)


async def test_communities_and_entities_are_the_rooms(
    live: LiveServer, platform: Platform, api_settings: Settings, built_room: str
) -> None:
    person = await member(platform, api_settings, built_room)
    stored = await platform.graph.get_communities(built_room)
    reports = {r.community_id: r for r in await platform.graph.get_reports(built_room)}
    graph = await platform.graph.get_graph(built_room)
    aliases = await load_aliases(platform, built_room)
    async with mcp_session(live, headers=bearer(person)) as mcp:
        page = data(await mcp.call_tool("list_communities", {"room_id": built_room, "limit": 3}))
        assert page["total"] == len(stored) > 3 and len(page["items"]) == 3
        by_id = {c.id: c for c in stored}
        for item in page["items"]:
            community = by_id[item["id"]]
            assert item["level"] == community.level
            assert item["size"] == len(community.entity_names) >= 1
            assert item["title"] == reports[item["id"]].title and item["summary"]
        levels = [i["level"] for i in page["items"]]
        assert levels == sorted(levels)
        deepest = max(c.level for c in stored)
        level_page = data(
            await mcp.call_tool(
                "list_communities", {"room_id": built_room, "level": deepest, "limit": 200}
            )
        )
        assert level_page["total"] == sum(1 for c in stored if c.level == deepest)
        assert {i["level"] for i in level_page["items"]} == {deepest}

        # The entity with the most relationships, asked for in another casing.
        degree: dict[str, int] = {}
        for rel in graph.relationships:
            for name in rel.pair:
                degree[name] = degree.get(name, 0) + 1
        hub = max(graph.entities, key=lambda e: (degree.get(e.name, 0), e.name))
        entity = data(
            await mcp.call_tool(
                "get_entity", {"room_id": built_room, "name": f"  {hub.display_name.upper()} "}
            )
        )
        assert entity["name"] == hub.name and entity["display_name"] == hub.display_name
        assert entity["type"] == hub.type and entity["description"] == hub.description
        assert entity["mentions"] == hub.mentions
        pairs = {rel.pair for rel in graph.relationships}
        assert len(entity["relationships"]) == min(degree[hub.name], 25)
        for rel in entity["relationships"]:
            assert tuple(sorted((hub.name, rel["name"]))) in pairs
        weights = [r["weight"] for r in entity["relationships"]]
        assert weights == sorted(weights, reverse=True)
        assert entity["source_messages"]
        await assert_messages_of_room(platform, built_room, entity["source_messages"])
        forms = [hub.name, *entity["aliases"]]
        assert any(
            any(f in " ".join(m["excerpt"].lower().split()) for f in forms)
            or normalize_name(m["speaker"] or "") in forms
            for m in entity["source_messages"]
        )

        # By an alias: the canonical entity, which lists the alias.
        assert aliases, "entity resolution merged no names in the sample room"
        alias, canonical = sorted(aliases.items())[0]
        by_alias = data(await mcp.call_tool("get_entity", {"room_id": built_room, "name": alias}))
        assert by_alias["name"] == canonical and alias in by_alias["aliases"]

        unknown = await mcp.call_tool(
            "get_entity", {"room_id": built_room, "name": "Zebulon Quagmire"}
        )
        assert error_text(unknown).startswith("not_found: no entity named 'Zebulon Quagmire'")


async def test_anonymous_and_bad_tokens_never_reach_the_tools(
    live: LiveServer, platform: Platform, api_settings: Settings, built_room: str
) -> None:
    # The SDK client reports the refused initialize as an error response (the 401 below).
    with pytest.raises(ExceptionGroup) as refused:
        async with mcp_session(live) as mcp:
            await mcp.call_tool("search_messages", {"room_id": built_room, "question": "the belly"})
    assert refused.group_contains(MCPError, match="error response")

    person = await member(platform, api_settings, built_room)
    token = person.cookies[ACCESS_COOKIE]
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    }
    headers = {"Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(base_url=live.url, timeout=30, headers=headers) as http:
        anonymous = await http.post("/api/v1/mcp", json=initialize)
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "not_authenticated"
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        for header, code in (
            (f"Bearer {token[:-3]}abc", "invalid_token"),
            (f"Basic {token}", "invalid_token"),
            ("Bearer", "invalid_token"),
        ):
            response = await http.post(
                "/api/v1/mcp", json=initialize, headers={"Authorization": header}
            )
            assert response.status_code == 401, header
            assert response.json()["error"]["code"] == code
        accepted = await http.post("/api/v1/mcp", json=initialize, headers=bearer(person))
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["result"]["serverInfo"]["name"] == "coagent"

        # A logged-out (revoked) session's token stops working at once.
        async with platform.session() as session:
            await revoke_user_sessions(session, person.user.id, "test")
            await session.commit()
        revoked = await http.post("/api/v1/mcp", json=initialize, headers=bearer(person))
        assert revoked.status_code == 401
        assert revoked.json()["error"]["code"] == "session_revoked"


async def test_a_non_member_gets_an_error_and_no_data(
    live: LiveServer, platform: Platform, api_settings: Settings, built_room: str
) -> None:
    outsider = await committed_person(platform, api_settings)
    own_room = await committed_room(platform, outsider)  # a member elsewhere
    async with mcp_session(live, headers=bearer(outsider)) as mcp:
        visible = data(await mcp.call_tool("list_rooms", {}))
        assert [r["id"] for r in visible["items"]] == [own_room]
        for tool, arguments in ROOM_TOOLS:
            result = await mcp.call_tool(tool, {"room_id": built_room, **arguments})
            text = error_text(result)
            assert text.startswith(f"forbidden: you may not read room {built_room}"), (tool, text)
        missing = await mcp.call_tool(
            "search_messages", {"room_id": str(uuid.uuid4()), "question": "the belly"}
        )
        assert error_text(missing).startswith("not_found:")
        garbage = await mcp.call_tool("list_communities", {"room_id": "'; drop table rooms"})
        assert error_text(garbage).startswith("not_found:")
        # Their own room answers (it is empty).
        empty = data(await mcp.call_tool("list_communities", {"room_id": own_room}))
        assert empty["total"] == 0


async def test_cookie_authentication_needs_the_csrf_header(
    live: LiveServer, platform: Platform, api_settings: Settings, built_room: str
) -> None:
    person = await member(platform, api_settings, built_room)
    cookies = dict(person.cookies)
    async with mcp_session(
        live, cookies=cookies, headers={CSRF_HEADER: cookies[CSRF_COOKIE]}
    ) as mcp:
        found = data(
            await mcp.call_tool(
                "search_messages", {"room_id": built_room, "question": "the belly", "top_k": 2}
            )
        )
        assert found["evidence"]
    async with httpx.AsyncClient(base_url=live.url, timeout=30, cookies=cookies) as http:
        forged = await http.post(
            "/api/v1/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Accept": "application/json, text/event-stream"},
        )
        assert forged.status_code == 403
        assert forged.json()["error"]["code"] == "csrf_failed"


def _stdio(email: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "coagent.cli", "mcp", "--user", email],
        env=dict(os.environ),
    )


async def test_coagent_mcp_over_stdio(
    platform: Platform, api_settings: Settings, built_room: str
) -> None:
    person = await member(platform, api_settings, built_room)
    other_room = await committed_room(platform, await committed_person(platform, api_settings))
    with open(os.devnull, "w") as errlog:
        async with (
            stdio_client(_stdio(person.user.email.upper()), errlog=errlog) as (read, write),
            ClientSession(read, write) as mcp,
        ):
            await mcp.initialize()
            assert {t.name for t in (await mcp.list_tools()).tools} == TOOLS
            found = data(
                await mcp.call_tool(
                    "search_messages",
                    {"room_id": built_room, "question": "What did Menenius say about the belly?"},
                )
            )
            await assert_messages_of_room(platform, built_room, found["evidence"])
            refused = await mcp.call_tool("get_entity", {"room_id": other_room, "name": "x"})
            assert error_text(refused).startswith(f"forbidden: you may not read room {other_room}")


def test_coagent_mcp_refuses_an_unknown_user() -> None:
    for args in (["--user", "nobody@nowhere.test"], []):
        done = subprocess.run(
            [sys.executable, "-m", "coagent.cli", "mcp", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={k: v for k, v in os.environ.items() if k != "COAGENT_MCP_USER"},
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 2, done
        assert done.stdout == ""
        assert done.stderr.startswith("error: "), done.stderr
        assert ("nobody@nowhere.test" in done.stderr) == bool(args)
