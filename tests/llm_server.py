"""A local OpenAI-compatible HTTP server for tests and benchmarks (real HTTP on 127.0.0.1).

Deterministic answers for every structured output the platform asks for: extraction output
comes from running the offline extractor on the text between the prompt's BEGIN/END markers,
so a graph built through it looks like a real one. Embeddings are hashing vectors.

Fault injection, per request content:
- ``FAULT-429`` in the text: the first request with that content gets 429 + ``Retry-After``;
- ``FAULT-500``: the first gets a 500;
- ``FAULT-SLOW``: the first is answered after ``slow_seconds`` (longer than the client timeout);
- ``FAULT-MALFORMED``: the first answer is not JSON; ``FAULT-INVALID``: the first answer is JSON
  that does not fit the schema;
- ``FAULT-ALWAYS-BAD``: every answer is malformed (a permanently bad chunk).
Plus ``latency`` seconds on every call, and ``rejects_json_schema`` to act like a server
without ``response_format: json_schema``.

``RerankOutput`` (the LLM listwise rerank) is answered with the passages in reverse order, and
every rerank prompt's passages are kept in ``rerank_prompts``.

A streamed request that is not an agent turn (the streamed answer) gets "Answer: " and the
first two numbered context items, cited as [n], in pieces.
``chat_authorizations`` keeps each chat request's ``Authorization`` header.

Agent turns (a request with ``tools``, a ``tool`` message, or the JSON tool protocol in the
prompt): the first turn calls ``graph_query`` (else ``search_messages``, else the first tool)
with the question after "Message to you from …:"; once a tool result is in the conversation
the answer quotes it and cites its first message ids as ``[#id]``. ``stream: true`` answers as
Server-Sent Events chunks (content in small pieces, tool-call arguments split in two).
``rejects_tools`` answers 400 to any request with ``tools`` (a server without function calling);
``chat_status`` (e.g. 500) fails every chat request; ``agent_requests`` keeps each agent
request body.

``POST /rerank`` (and ``/v1/rerank``) is a cross-encoder stand-in, the API of TEI / vLLM / Jina /
Cohere: document ``i`` of ``n`` scores ``i / n`` (the reverse of the order sent), and the results
come back sorted by score, best first, as real servers do. ``rerank_shape`` picks the reply:
``"results"`` (Jina / Cohere / vLLM: ``{"results": [{"index", "relevance_score"}]}``) or ``"tei"``
(``[{"index", "score"}]``); ``rerank_status`` (e.g. 500) and ``rerank_delay`` (seconds) inject
faults; ``rerank_requests`` keeps each request's body and ``Authorization`` header.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from knowledge.embeddings import HashingEmbedder
from knowledge.extraction.fast import FastExtractor
from knowledge.llm.prompts import BEGIN, END
from knowledge.tokens import count_tokens

_FAULTS = ("FAULT-429", "FAULT-500", "FAULT-SLOW", "FAULT-MALFORMED", "FAULT-INVALID")


class FakeOpenAI:
    def __init__(self, latency: float = 0.0, slow_seconds: float = 3.0) -> None:
        self.latency = latency
        self.slow_seconds = slow_seconds
        self.rejects_json_schema = False
        self.calls: Counter[str] = Counter()
        self.faults_served: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self._seen: set[tuple[str, str]] = set()
        self.rerank_shape = "results"
        self.rerank_status = 200
        self.rerank_delay = 0.0
        self.rerank_requests: list[dict[str, Any]] = []
        self.rerank_prompts: list[list[str]] = []
        self.rejects_tools = False
        self.chat_status = 200
        self.stream_delay = 0.0
        self.agent_requests: list[dict[str, Any]] = []
        self.chat_authorizations: list[str | None] = []
        self._extractor = FastExtractor()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.faults_served.clear()
            self.max_in_flight = 0
            self._seen.clear()
            self.rerank_requests.clear()
            self.rerank_prompts.clear()
            self.rerank_shape = "results"
            self.rerank_status = 200
            self.rerank_delay = 0.0
            self.rejects_tools = False
            self.chat_status = 200
            self.stream_delay = 0.0
            self.agent_requests.clear()
            self.chat_authorizations.clear()

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    # --- behaviour ----------------------------------------------------------------------------

    def _first_time(self, fault: str, content: str) -> bool:
        key = (fault, hashlib.sha256(content.encode()).hexdigest())
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
            self.faults_served[fault] += 1
            return True

    def _fault_for(self, content: str) -> str | None:
        if "FAULT-ALWAYS-BAD" in content:
            with self._lock:
                self.faults_served["FAULT-ALWAYS-BAD"] += 1
            return "FAULT-MALFORMED"
        # Keyed on the text being processed, so a re-ask (which appends messages) is the
        # "second time" for that text.
        subject = _between_markers(content) or content
        for fault in _FAULTS:
            if fault in subject and self._first_time(fault, subject):
                return fault
        return None

    def chat(self, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        messages = body.get("messages", [])
        content = "\n".join(str(m.get("content", "")) for m in messages)
        if self.chat_status != 200:
            return self.chat_status, {}, {"error": {"message": "the model is down"}}
        if body.get("tools") and self.rejects_tools:
            return 400, {}, {"error": {"message": "tools are not supported by this model"}}
        if _is_agent_turn(body, content):
            with self._lock:
                self.agent_requests.append(body)
            return self._agent_turn(body, messages)
        if body.get("stream"):
            # A streamed plain-text answer: the first numbered context items, cited as [n].
            items = re.findall(r"^\[(\d+)\] (.*)$", _between_markers(content), re.MULTILINE)
            text = " ".join(f"{t[:80]} [{n}]" for n, t in items[:2]) or "No answer in context."
            return 200, {}, {"__stream__": _stream_chunks(body, f"Answer: {text}", None)}
        response_format = body.get("response_format") or {}
        if self.rejects_json_schema and response_format.get("type") == "json_schema":
            return 400, {}, {"error": {"message": "response_format json_schema is not supported"}}
        fault = self._fault_for(content)
        if fault == "FAULT-429":
            return 429, {"Retry-After": "0.2"}, {"error": {"message": "rate limited"}}
        if fault == "FAULT-500":
            return 500, {}, {"error": {"message": "internal error"}}
        if fault == "FAULT-SLOW":
            # The client gives up after its timeout and moves on: from then on this request
            # no longer counts as one of its concurrent calls.
            with self._lock:
                self.in_flight -= 1
            self._local.abandoned = True
            time.sleep(self.slow_seconds)
        schema_name = _schema_name(body, content)
        if fault == "FAULT-MALFORMED":
            text = '{"entities": [ this is not json'
        elif fault == "FAULT-INVALID":
            text = json.dumps({"entities": [{"type": "PERSON"}], "relationships": "none"})
        else:
            text = json.dumps(self._answer(schema_name, messages))
        usage = {
            "prompt_tokens": count_tokens(content),
            "completion_tokens": count_tokens(text),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return (
            200,
            {},
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 0,
                "model": body.get("model", "fake"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            },
        )

    def _answer(self, schema: str, messages: list[dict[str, Any]]) -> Any:
        user = str(messages[-1].get("content", "")) if messages else ""
        body = _between_markers(user) or user
        if schema == "ExtractionOutput":
            if "MISSED" in user:
                return {"entities": [], "relationships": []}
            extraction = self._extractor.extract_one(body)
            return {
                "entities": [
                    {"name": e.name, "type": e.type, "description": e.description}
                    for e in extraction.entities
                ],
                "relationships": [
                    {
                        "source": r.source,
                        "target": r.target,
                        "description": r.description,
                        "strength": max(1, min(10, int(r.weight))),
                    }
                    for r in extraction.relationships
                ]
                # one relationship to an entity that was not listed: it must be dropped
                + [
                    {
                        "source": extraction.entities[0].name,
                        "target": "Nobody Listed",
                        "description": "dangling",
                        "strength": 1,
                    }
                ]
                if extraction.entities
                else [],
            }
        if schema == "EntitySummary":
            items = [line[2:] for line in user.splitlines() if line.startswith("- ")]
            return {"description": " ".join(items)[:400]}
        if schema == "ReportOutput":
            names = re.findall(r"^- ([^(\n]+) \(", body, flags=re.MULTILINE)[:3]
            title = " & ".join(n.strip() for n in names) or "Community"
            return {
                "title": title,
                "summary": f"The community around {title}.",
                "findings": [
                    {"summary": f"{n.strip()} matters", "explanation": "It is central."}
                    for n in names
                ],
                "rating": min(10.0, 2.0 + len(body) / 500),
                "rating_explanation": "Size of the community.",
            }
        if schema == "KeyPoints":
            first = body.splitlines()[0] if body else ""
            return {"points": [{"description": first[:200], "score": 50 + len(first) % 50}]}
        if schema == "AnswerOutput":
            items = re.findall(r"^\[(\d+)\] (.*)$", body, flags=re.MULTILINE)
            used = [int(n) for n, _ in items[:3]]
            summary = " ".join(text[:120] for _, text in items[:3]) or "No answer in context."
            return {"answer": f"Answer: {summary}", "sources": used}
        if schema == "RerankOutput":
            passages = re.findall(r"^\[(\d+)\] (.*)$", body, flags=re.MULTILINE)
            with self._lock:
                self.rerank_prompts.append([text for _, text in passages])
            return {"ranking": [int(n) for n, _ in passages][::-1]}
        if schema == "SameEntity":
            # Entity resolution's adjudication: the same when both names begin with one word.
            names = re.findall(r"^[AB]: (.+?) — ", user, flags=re.MULTILINE)
            first = {n.split()[0].lower() for n in names if n.split()}
            return {"same": len(names) == 2 and len(first) == 1, "reason": "first word"}
        if schema == "RouteDecision":
            is_global = bool(re.search(r"\b(main|themes?|overall|summar)", user, re.IGNORECASE))
            return {"route": "global" if is_global else "local", "reason": "keywords"}
        return {}

    def _agent_turn(
        self, body: dict[str, Any], messages: list[dict[str, Any]]
    ) -> tuple[int, dict[str, str], Any]:
        tools = [t["function"]["name"] for t in body.get("tools") or []]
        json_protocol = (
            JSON_PROTOCOL_MARK in str(messages[0].get("content", "")) if messages else False
        )
        if json_protocol:
            tools = re.findall(r"^- (\w+): ", str(messages[0].get("content", "")), re.MULTILINE)
        results = [m for m in messages if m.get("role") == "tool"] + [
            m for m in messages if str(m.get("content") or "").startswith("Tool result: ")
        ]
        call: dict[str, Any] | None = None
        text = ""
        if results:
            raw = str(results[-1].get("content", "")).removeprefix("Tool result: ")
            text = _answer_from_tool(raw)
            # "RELAY: @name" in an agent's system prompt: its answers mention that agent.
            system = " ".join(str(m.get("content")) for m in messages if m.get("role") == "system")
            relay = re.search(r"RELAY: (@[\w.-]+)", system)
            if relay:
                text = f"{text} {relay.group(1)}"
        elif tools:
            asked = ""
            for m in messages:
                found = re.search(
                    r"Message to you from [^:]+: (.*)", str(m.get("content") or ""), re.S
                )
                if found:
                    asked = found.group(1).strip()
            name = next((t for t in ("graph_query", "search_messages") if t in tools), tools[0])
            key = "question" if name == "graph_query" else "query"
            call = {"name": name, "arguments": json.dumps({key: asked})}
        else:
            text = "I could not look anything up."
        if json_protocol:
            reply = (
                json.dumps({"tool": call["name"], "arguments": json.loads(call["arguments"])})
                if call
                else json.dumps({"answer": text})
            )
            return 200, {}, _completion(body, {"role": "assistant", "content": reply}, "stop")
        if body.get("stream"):
            return 200, {}, {"__stream__": _stream_chunks(body, text, call)}
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if call is not None:
            message["tool_calls"] = [{"id": "call_1", "type": "function", "function": call}]
        return 200, {}, _completion(body, message, "tool_calls" if call else "stop")

    def rerank(
        self, body: dict[str, Any], authorization: str | None
    ) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            self.rerank_requests.append({"body": body, "authorization": authorization})
        if self.rerank_delay:
            time.sleep(self.rerank_delay)
        if self.rerank_status != 200:
            return self.rerank_status, {}, {"error": {"message": "rerank failed"}}
        documents = body.get("documents") or body.get("texts") or []
        n = len(documents)
        scored = sorted(((i / n, i) for i in range(n)), reverse=True)
        if self.rerank_shape == "tei":
            return 200, {}, [{"index": i, "score": s} for s, i in scored]
        results = [{"index": i, "relevance_score": s} for s, i in scored]
        return 200, {}, {"model": body.get("model"), "results": results}

    def embeddings(self, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        inputs = body.get("input", [])
        if isinstance(inputs, str):
            inputs = [inputs]
        dim = int(body.get("dimensions") or 1536)
        embedder = HashingEmbedder(dim)
        data = [
            {"object": "embedding", "index": i, "embedding": embedder.embed_one(text)}
            for i, text in enumerate(inputs)
        ]
        tokens = sum(count_tokens(t) for t in inputs)
        return (
            200,
            {},
            {
                "object": "list",
                "data": data,
                "model": body.get("model"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with fake._lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    if fake.latency:
                        time.sleep(fake.latency)
                    if self.path.endswith("/chat/completions"):
                        kind = "chat"
                        with fake._lock:
                            fake.chat_authorizations.append(self.headers.get("Authorization"))
                        status, headers, payload = fake.chat(body)
                    elif self.path.endswith("/embeddings"):
                        kind = "embeddings"
                        status, headers, payload = fake.embeddings(body)
                    elif self.path.endswith("/rerank"):
                        kind = "rerank"
                        status, headers, payload = fake.rerank(
                            body, self.headers.get("Authorization")
                        )
                    else:
                        kind = "other"
                        status, headers, payload = 404, {}, {"error": {"message": "not found"}}
                    with fake._lock:
                        fake.calls[kind] += 1
                    if isinstance(payload, dict) and "__stream__" in payload:
                        self._stream(payload["__stream__"])
                        return
                    raw = json.dumps(payload).encode()
                    try:
                        self.send_response(status)
                        for key, value in headers.items():
                            self.send_header(key, value)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(raw)))
                        self.end_headers()
                        self.wfile.write(raw)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the client gave up (timeout): that is the point of FAULT-SLOW
                finally:
                    if not getattr(fake._local, "abandoned", False):
                        with fake._lock:
                            fake.in_flight -= 1
                    fake._local.abandoned = False

            def _stream(self, chunks: list[dict[str, Any]]) -> None:
                self.close_connection = True
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for chunk in chunks:
                        if fake.stream_delay:
                            time.sleep(fake.stream_delay)
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                        self.wfile.flush()
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler


JSON_PROTOCOL_MARK = "Reply with exactly one JSON object"


def _is_agent_turn(body: dict[str, Any], content: str) -> bool:
    messages = body.get("messages") or []
    return (
        bool(body.get("tools"))
        or any(m.get("role") == "tool" for m in messages)
        or JSON_PROTOCOL_MARK in content
        or "Message to you from " in content
    )


def _answer_from_tool(raw: str) -> str:
    try:
        result = json.loads(raw)
    except ValueError:
        return f"The tool said: {raw[:200]}"
    cited = result.get("citations") or result.get("evidence") or []
    ids = [str(c["id"]) for c in cited if c.get("kind") == "message"][:2]
    summary = str(result.get("answer") or "").strip()
    if not summary and cited:
        summary = str(cited[0].get("excerpt", ""))
    if not summary:
        summary = str(result.get("error") or "nothing found")
    marks = " ".join(f"[#{i}]" for i in ids)
    return f"From the room: {summary[:240]} {marks}".strip()


def _completion(body: dict[str, Any], message: dict[str, Any], finish: str) -> dict[str, Any]:
    text = str(message.get("content") or "")
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", "fake"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": count_tokens(text), "total_tokens": 10},
    }


def _stream_chunks(
    body: dict[str, Any], text: str, call: dict[str, Any] | None
) -> list[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    chunks = [chunk({"role": "assistant", "content": ""})]
    if call is not None:
        half = len(call["arguments"]) // 2
        first = {"name": call["name"], "arguments": call["arguments"][:half]}
        chunks.append(
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "call_1", "type": "function", "function": first}
                    ]
                }
            )
        )
        rest = {"arguments": call["arguments"][half:]}
        chunks.append(chunk({"tool_calls": [{"index": 0, "function": rest}]}))
        chunks.append(chunk({}, "tool_calls"))
        return chunks
    words = text.split(" ")
    for i in range(0, len(words), 3):
        piece = " ".join(words[i : i + 3]) + (" " if i + 3 < len(words) else "")
        chunks.append(chunk({"content": piece}))
    chunks.append(chunk({}, "stop"))
    return chunks


def _schema_name(body: dict[str, Any], content: str) -> str:
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        return str(response_format.get("json_schema", {}).get("name", ""))
    # JSON mode: instructor puts the schema in the system message.
    for name in (
        "ExtractionOutput",
        "EntitySummary",
        "ReportOutput",
        "KeyPoints",
        "AnswerOutput",
        "RouteDecision",
        "RerankOutput",
        "SameEntity",
    ):
        if f'"title": "{name}"' in content or f'"{name}"' in content:
            return name
    return ""


def _between_markers(text: str) -> str:
    start = text.find(BEGIN)
    end = text.find(END)
    if start < 0 or end < 0:
        return ""
    return text[start + len(BEGIN) : end].strip()


def serve_forever(host_port: int = 8765) -> None:  # pragma: no cover - manual use
    """``python -m tests.llm_server`` runs one for manual demos."""
    fake = FakeOpenAI()
    fake._server.server_close()
    fake._server = ThreadingHTTPServer(("127.0.0.1", host_port), fake._handler())
    print(f"fake OpenAI-compatible server on http://127.0.0.1:{host_port}/v1")
    fake._server.serve_forever()


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(asyncio.to_thread(serve_forever))
