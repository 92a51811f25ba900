"""One agent reply: system prompt + the room's recent history + tool calls, streamed.

With a model: up to ``max_rounds`` tool rounds through function calling (or the JSON fallback),
then the answer, streamed through ``on_delta``. Without one (no LLM configured): the agent
answers through its tools directly and says so. Framework-free: the API's worker and the
sandbox both call ``run_turn``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from knowledge import chat
from knowledge.agents.llm import AgentLLM, AssistantTurn
from knowledge.agents.tools import SPECS, ToolResult, call_tool
from knowledge.platform import Platform
from knowledge.tokens import count_tokens

DeltaSink = Callable[[str], Awaitable[None]]

AGENT_RULES = (
    "You are {name}, an AI participant in a CoAgent Studio chat room. Use your tools to look "
    "up what was said in the room before answering questions about it, and cite the messages "
    "you rely on as [#id]. Be brief."
)
OFFLINE_NOTE = "(answered from the room's knowledge graph; no language model is configured)"
_HISTORY_MESSAGES = 50


@dataclass
class AgentSpec:
    name: str
    system_prompt: str
    model: str
    tools: list[str]
    user_id: uuid.UUID | None = None
    base_url: str | None = None
    api_key: str | None = None


@dataclass
class AgentResult:
    reply: str
    tool_calls: list[ToolResult] = field(default_factory=list)
    offline: bool = True

    @property
    def citations(self) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        for call in self.tool_calls:
            for citation in call.citations:
                seen.setdefault(f"{citation['kind']}:{citation['id']}", citation)
        return list(seen.values())


async def recent_history(
    platform: Platform, room_id: uuid.UUID, up_to_message: int | None, budget_tokens: int
) -> list[str]:
    """The room's latest messages (up to and including ``up_to_message``), oldest first, as
    ``[#id] speaker (time): text`` lines within ``budget_tokens``."""
    before = up_to_message + 1 if up_to_message is not None else None
    async with platform.session() as session:
        records, _ = await chat.list_messages(session, room_id, _HISTORY_MESSAGES, before, None)
    lines: list[str] = []
    used = 0
    for record in sorted(records, key=lambda r: r.id, reverse=True):
        line = f"[#{record.id}] {record.author_name} ({_when(record.created_at)}): {record.content}"
        cost = count_tokens(line)
        if used + cost > budget_tokens and lines:
            break
        lines.append(line)
        used += cost
    return lines[::-1]


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def build_messages(
    spec: AgentSpec, history: list[str], speaker: str, text: str
) -> list[dict[str, Any]]:
    system = AGENT_RULES.format(name=spec.name)
    if spec.system_prompt.strip():
        system = f"{spec.system_prompt.strip()}\n\n{system}"
    user = (
        "Recent messages in the room:\n"
        + ("\n".join(history) or "(none)")
        + f"\n\nMessage to you from {speaker}: {text}"
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


async def run_turn(
    platform: Platform,
    room_id: uuid.UUID,
    spec: AgentSpec,
    question: str,
    messages: list[dict[str, Any]],
    llm: AgentLLM | None,
    on_delta: DeltaSink,
    max_rounds: int = 4,
) -> AgentResult:
    if llm is None:
        return await _offline_turn(platform, room_id, spec, question, on_delta)
    tools = [SPECS[name] for name in spec.tools if name in SPECS]
    conversation = list(messages)
    results: list[ToolResult] = []
    for _ in range(max_rounds):
        turn = await llm.turn(conversation, tools, on_delta)
        if not turn.tool_calls:
            return AgentResult(turn.content.strip(), results, offline=False)
        conversation.append(_assistant_message(turn))
        for call in turn.tool_calls:
            result = await call_tool(platform, room_id, spec.tools, call.name, call.arguments)
            results.append(result)
            conversation.append(
                {
                    "role": "tool",
                    "tool_call_id": call.id,
                    "content": json.dumps(result.output, default=str)[:12_000],
                }
            )
    # Out of tool rounds: one last turn without tools so the model must answer.
    turn = await llm.turn(conversation, [], on_delta)
    return AgentResult(turn.content.strip(), results, offline=False)


def _assistant_message(turn: AssistantTurn) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": turn.content or None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for call in turn.tool_calls
        ],
    }


async def _offline_turn(
    platform: Platform, room_id: uuid.UUID, spec: AgentSpec, question: str, on_delta: DeltaSink
) -> AgentResult:
    """No model: the agent's best tool answers directly."""
    if "graph_query" in spec.tools:
        result = await call_tool(
            platform, room_id, spec.tools, "graph_query", {"question": question}
        )
        text = str(result.output.get("answer") or result.output.get("error") or "")
    elif "search_messages" in spec.tools:
        result = await call_tool(
            platform, room_id, spec.tools, "search_messages", {"query": question, "top_k": 3}
        )
        found = result.output.get("evidence") or []
        text = "\n".join(f"[#{e['id']}] {e['speaker']}: {e['excerpt']}" for e in found) or (
            "Nothing in this room matches that yet."
        )
    else:
        reply = (
            f"{spec.name} has no language model configured and no search tool, so it cannot "
            "answer yet. Give it the graph_query or search_messages tool."
        )
        await on_delta(reply)
        return AgentResult(reply)
    reply = f"{text}\n\n{OFFLINE_NOTE}"
    for piece in _pieces(reply):
        await on_delta(piece)
    return AgentResult(reply, [result])


def _pieces(text: str, size: int = 80) -> list[str]:
    """An offline reply in word-aligned pieces, so clients render it like a streamed one."""
    pieces: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if len(candidate) > size and current:
            pieces.append(current + " ")
            current = word
        else:
            current = candidate
    if current:
        pieces.append(current)
    return pieces
