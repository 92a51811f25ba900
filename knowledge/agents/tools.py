"""The tools a room agent may call: the room's knowledge, read-only, scoped to its room.

Each tool is an OpenAI function spec plus an executor returning a JSON-able result and the
citations it carries (message or artifact ids that exist in the room).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from knowledge import artifacts
from knowledge.errors import DomainError
from knowledge.platform import Platform
from knowledge.search import answer_question, find_evidence
from knowledge.text import excerpt

TOOL_NAMES = ("graph_query", "search_messages", "list_artifacts", "read_artifact")
_ARTIFACT_CHARS = 6000
_EXCERPT_CHARS = 300


@dataclass
class ToolResult:
    tool: str
    arguments: dict[str, Any]
    output: dict[str, Any]
    citations: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


Executor = Callable[[Platform, uuid.UUID, dict[str, Any]], Awaitable[ToolResult]]


def _spec(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


SPECS: dict[str, dict[str, Any]] = {
    "graph_query": _spec(
        "graph_query",
        "Answer a question about this room from its knowledge graph; returns an answer and "
        "the messages it cites.",
        {"question": {"type": "string"}},
        ["question"],
    ),
    "search_messages": _spec(
        "search_messages",
        "Find the room's messages and artifact passages that best match a query (ranked "
        "evidence, no answer).",
        {"query": {"type": "string"}, "top_k": {"type": "integer", "minimum": 1, "maximum": 20}},
        ["query"],
    ),
    "list_artifacts": _spec(
        "list_artifacts", "List the documents shared in this room (id, title, version).", {}, []
    ),
    "read_artifact": _spec(
        "read_artifact",
        "Read one shared document of this room by its id.",
        {"artifact_id": {"type": "string"}},
        ["artifact_id"],
    ),
}


def _text_arg(args: dict[str, Any], *names: str) -> str:
    for name in names:
        value = args.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise DomainError(f"the tool needs a {names[0]}")


async def graph_query(platform: Platform, room_id: uuid.UUID, args: dict[str, Any]) -> ToolResult:
    question = _text_arg(args, "question", "query")
    answer = await answer_question(platform, str(room_id), question)
    citations = [
        {"kind": c.kind, "id": c.id, "speaker": c.speaker, "excerpt": c.excerpt}
        for c in answer.citations
    ]
    return ToolResult(
        "graph_query",
        {"question": question},
        {"answer": answer.answer, "route": answer.route.value, "citations": citations},
        citations,
    )


async def search_messages(
    platform: Platform, room_id: uuid.UUID, args: dict[str, Any]
) -> ToolResult:
    query = _text_arg(args, "query", "question")
    top_k = args.get("top_k")
    top_k = min(max(int(top_k), 1), 20) if isinstance(top_k, int | float) else 8
    retrieval = await find_evidence(platform, str(room_id), query, top_k)
    evidence = [
        {
            "kind": e.kind,
            "id": e.id,
            "speaker": e.speaker,
            "time": e.time.isoformat() if e.time else None,
            "excerpt": excerpt(e.text, _EXCERPT_CHARS),
        }
        for e in retrieval.evidence
    ]
    return ToolResult(
        "search_messages", {"query": query, "top_k": top_k}, {"evidence": evidence}, evidence
    )


async def list_artifacts(
    platform: Platform, room_id: uuid.UUID, args: dict[str, Any]
) -> ToolResult:
    async with platform.session() as session:
        found, total = await artifacts.list_artifacts(session, room_id, 50, 0)
    items = [{"id": str(a.id), "title": a.title, "version": a.version} for a in found]
    return ToolResult("list_artifacts", {}, {"artifacts": items, "total": total})


async def read_artifact(platform: Platform, room_id: uuid.UUID, args: dict[str, Any]) -> ToolResult:
    artifact_id = _text_arg(args, "artifact_id", "id")
    async with platform.session() as session:
        artifact = await artifacts.get_artifact(session, room_id, artifact_id)
    content = artifact.content
    output = {
        "id": str(artifact.id),
        "title": artifact.title,
        "version": artifact.version,
        "content": content[:_ARTIFACT_CHARS],
        "truncated": len(content) > _ARTIFACT_CHARS,
    }
    citation = {"kind": "artifact", "id": str(artifact.id), "speaker": None}
    citation["excerpt"] = excerpt(content, _EXCERPT_CHARS)
    return ToolResult("read_artifact", {"artifact_id": artifact_id}, output, [citation])


EXECUTORS: dict[str, Executor] = {
    "graph_query": graph_query,
    "search_messages": search_messages,
    "list_artifacts": list_artifacts,
    "read_artifact": read_artifact,
}


async def call_tool(
    platform: Platform, room_id: uuid.UUID, allowed: list[str], name: str, args: dict[str, Any]
) -> ToolResult:
    """Run one tool the agent is allowed to use; a bad call is a result the model can read,
    not an exception."""
    if name not in allowed or name not in EXECUTORS:
        return ToolResult(name, args, {"error": f"no tool named {name!r}"}, error="unknown tool")
    try:
        return await EXECUTORS[name](platform, room_id, args)
    except DomainError as error:
        return ToolResult(name, args, {"error": str(error)}, error=str(error))
