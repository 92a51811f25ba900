"""An agent's chat model: one streamed turn with tools, on any OpenAI-compatible endpoint.

- Native function calling (``tools``) and streamed deltas when the server has them.
- A server that refuses ``tools`` (HTTP 400 naming them) is switched, once and for good, to a
  JSON protocol in the prompt: the model answers ``{"tool": …, "arguments": {…}}`` or
  ``{"answer": "…"}``. Its answer is then delivered as one delta.
- Retries (connection errors, 429, 5xx) are the SDK's, bounded, and happen before the first
  delta, so a retried turn never streams twice.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import openai
from openai.types.chat import ChatCompletionChunk

log = logging.getLogger(__name__)

DeltaSink = Callable[[str], Awaitable[None]]

JSON_PROTOCOL = (
    "You can call tools. Reply with exactly one JSON object and nothing else: either "
    '{"tool": "<name>", "arguments": {...}} to call one tool, or {"answer": "<your reply>"} '
    "when you are ready to answer. Tools:\n"
)


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass
class AssistantTurn:
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)


class AgentLLMError(Exception):
    """The model could not be reached or gave no usable turn (after the SDK's retries)."""


def _arguments(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _refuses_tools(error: openai.BadRequestError) -> bool:
    return bool(re.search(r"\btools?\b|function", str(error), re.IGNORECASE))


class AgentLLM:
    def __init__(
        self,
        api_key: str,
        base_url: str | None,
        model: str,
        timeout: float,
        max_retries: int,
    ) -> None:
        self.model = model
        self.native_tools = True
        self.client = openai.AsyncOpenAI(
            api_key=api_key or "unused",
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
        )

    async def aclose(self) -> None:
        await self.client.close()

    async def turn(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]],
        on_delta: DeltaSink,
    ) -> AssistantTurn:
        try:
            if tools and not self.native_tools:
                return await self._json_turn(messages, tools, on_delta)
            try:
                return await self._native_turn(messages, tools, on_delta)
            except openai.BadRequestError as error:
                if not tools or not _refuses_tools(error):
                    raise
                log.warning("%s refuses tools (%s): using the JSON protocol", self.model, error)
                self.native_tools = False
                return await self._json_turn(messages, tools, on_delta)
        except openai.APIError as error:
            raise AgentLLMError(f"{type(error).__name__}: {str(error)[:200]}") from error

    async def _native_turn(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]],
        on_delta: DeltaSink,
    ) -> AssistantTurn:
        extra: dict[str, Any] = {"tools": list(tools)} if tools else {}
        stream = cast(
            "openai.AsyncStream[ChatCompletionChunk]",
            await self.client.chat.completions.create(
                model=self.model,
                messages=list(messages),  # type: ignore[arg-type]
                stream=True,
                **extra,
            ),
        )
        content: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        async for chunk in stream:
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            if delta.content:
                content.append(delta.content)
                await on_delta(delta.content)
            for piece in delta.tool_calls or []:
                call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                if piece.id:
                    call["id"] = piece.id
                if piece.function is not None:
                    call["name"] += piece.function.name or ""
                    call["arguments"] += piece.function.arguments or ""
        return AssistantTurn(
            "".join(content),
            [
                ToolCall(c["id"] or f"call_{i}", c["name"], _arguments(c["arguments"]))
                for i, c in sorted(calls.items())
                if c["name"]
            ],
        )

    async def _json_turn(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]],
        on_delta: DeltaSink,
    ) -> AssistantTurn:
        described = "\n".join(
            f"- {t['function']['name']}: {t['function'].get('description', '')} "
            f"arguments: {json.dumps(t['function'].get('parameters', {}))}"
            for t in tools
        )
        prompt = [{"role": "system", "content": JSON_PROTOCOL + described}]
        response = await self.client.chat.completions.create(
            model=self.model,
            messages=prompt + [_plain(m) for m in messages],  # type: ignore[arg-type]
        )
        text = (response.choices[0].message.content or "").strip() if response.choices else ""
        parsed = _json_object(text)
        if parsed is not None and isinstance(parsed.get("tool"), str):
            args = parsed.get("arguments")
            return AssistantTurn(
                "", [ToolCall("json_0", parsed["tool"], args if isinstance(args, dict) else {})]
            )
        answer = str(parsed.get("answer", "")) if parsed is not None else text
        if answer:
            await on_delta(answer)
        return AssistantTurn(answer)


def _plain(message: dict[str, Any]) -> dict[str, str]:
    """A native-protocol message as plain text, for servers without tools."""
    role = message.get("role", "user")
    if role == "tool":
        return {"role": "user", "content": f"Tool result: {message.get('content', '')}"}
    if role == "assistant" and message.get("tool_calls"):
        calls = [
            {"tool": c["function"]["name"], "arguments": _arguments(c["function"]["arguments"])}
            for c in message["tool_calls"]
        ]
        return {"role": "assistant", "content": json.dumps(calls[0] if len(calls) == 1 else calls)}
    return {"role": str(role), "content": str(message.get("content") or "")}


def _json_object(text: str) -> dict[str, Any] | None:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        value = json.loads(text[start : end + 1])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
