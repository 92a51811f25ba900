"""ASGI middleware: request body size limit (413 before the body reaches a route), input
hygiene (422 for text PostgreSQL cannot store, anywhere in a request), and an ``Allow`` header
that lists every method a path serves (OPTIONS answers 204 with it; a 405 carries it)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import error_body
from serving.schemas import unstorable


class _BodyTooLarge(HTTPException):
    """Raised from ``receive``; an HTTPException so that FastAPI's body parsing re-raises it
    and the error handlers turn it into the usual 413 error shape."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body is larger than {max_bytes} bytes")


class BodySizeLimitMiddleware:
    """Refuse bodies over ``max_bytes``: by Content-Length up front, else while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._reply(send, 400, "Content-Length is not a number", "bad_request")
                    return
                if declared > self.max_bytes:
                    await self._reply_too_large(send)
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._reply_too_large(send)

    async def _reply_too_large(self, send: Send) -> None:
        await self._reply(
            send,
            413,
            f"the request body is larger than {self.max_bytes} bytes",
            "payload_too_large",
        )

    @staticmethod
    async def _reply(send: Send, status: int, message: str, code: str, details: Any = None) -> None:
        body = json.dumps(error_body(status, message, code, details)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


# input hygiene

#: A ``\u0000`` or ``\uD800``-``\uDFFF`` escape in JSON text (an odd run of backslashes
#: before the ``u``). Only when one occurs is the body parsed here to find the bad string.
_SUSPECT_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")
_WS_POLICY_VIOLATION = 1008


class _Refused(Exception):
    def __init__(self, loc: list[str], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


class InputHygieneMiddleware:
    """Refuse with 422 (before any route runs) text that PostgreSQL cannot store: a NUL
    character or invalid UTF-8 (e.g. an encoded lone surrogate) in the path, in the query
    string, in a JSON body (``\\u0000`` / lone-surrogate escapes) or in a form body; and a
    JSON or form body that is not UTF-8. psycopg raises on a NUL before the query reaches the
    database, so this is checked centrally rather than per field. A WebSocket handshake with
    such a path or query is refused (HTTP 403)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            _check_url(scope)
        except _Refused as refused:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": _WS_POLICY_VIOLATION})
            else:
                await _reply_refused(send, refused)
            return
        kind = _body_kind(scope) if scope["type"] == "http" else None
        if kind is None:
            await self.app(scope, receive, send)
            return
        body, more = await _read_body(receive)
        if more is not None:  # the client went away mid-body
            await self.app(scope, _replay(body, more, receive), send)
            return
        try:
            _check_body(kind, body)
        except _Refused as refused:
            await _reply_refused(send, refused)
            return
        await self.app(scope, _replay(body, None, receive), send)


def _check_url(scope: Scope) -> None:
    raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
    _check_bytes(unquote_to_bytes(raw_path.split(b"?", 1)[0]), ["path"])
    if "\x00" in scope.get("path", ""):
        raise _Refused(["path"], "NUL characters are not allowed")
    query = scope.get("query_string", b"")
    if query:
        _check_pairs(query, "query")


def _check_bytes(value: bytes, loc: list[str]) -> str:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused(loc, "not valid UTF-8 (or an encoded lone surrogate)") from None
    if "\x00" in text:
        raise _Refused(loc, "NUL characters are not allowed")
    return text


def _check_pairs(encoded: bytes, where: str) -> None:
    try:
        pairs = parse_qsl(
            encoded.decode("latin-1"), keep_blank_values=True, encoding="utf-8", errors="strict"
        )
    except UnicodeDecodeError:
        raise _Refused([where], "not valid UTF-8 (or an encoded lone surrogate)") from None
    for name, value in pairs:
        for text in (name, value):
            if "\x00" in text:
                raise _Refused([where, name.replace("\x00", "")], "NUL characters are not allowed")


def _body_kind(scope: Scope) -> str | None:
    if scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
        return None
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            if media == b"application/json" or media.endswith(b"+json"):
                return "json"
            if media == b"application/x-www-form-urlencoded":
                return "form"
            return None
    return None


async def _read_body(receive: Receive) -> tuple[bytes, Message | None]:
    """The whole body, and the message that interrupted it (a disconnect), if any."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), message
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), None


def _replay(body: bytes, interrupted: Message | None, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            if interrupted is not None:
                return interrupted
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _check_body(kind: str, body: bytes) -> None:
    if kind == "form":
        _check_pairs(body, "body")
        return
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused(["body"], "the JSON body is not valid UTF-8") from None
    if _SUSPECT_ESCAPE.search(body) is None:
        return
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return  # not JSON: the route's own parsing answers 422
    _check_json(document, ["body"])


def _check_json(value: Any, loc: list[str]) -> None:
    stack = [(value, loc)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            problem = unstorable(item)
            if problem is not None:
                raise _Refused(where, problem)
        elif isinstance(item, dict):
            for key, child in item.items():
                problem = unstorable(key)
                if problem is not None:
                    raise _Refused(where, f"a key: {problem}")
                stack.append((child, [*where, key]))
        elif isinstance(item, list):
            stack.extend((child, [*where, str(i)]) for i, child in enumerate(item))


async def _reply_refused(send: Send, refused: _Refused) -> None:
    details = [{"loc": refused.loc, "message": refused.message, "type": "value_error"}]
    await BodySizeLimitMiddleware._reply(
        send, 422, "the request is not valid", "validation_error", details
    )


# Allow


class AllowHeaderMiddleware:
    """Methods per path as the OpenAPI schema documents them.

    A request whose path is a documented path but whose method is not documented for it is
    answered here: ``OPTIONS`` with 204 and ``Allow`` listing the path's methods, any other
    method with 405 and the same ``Allow`` (the router alone would name only the first route
    it matched, or hand ``DELETE /users/me`` to ``/users/{user_id}``). When several documented
    paths match, the most specific (fewest parameters) wins. Undocumented paths (WebSocket,
    MCP, docs) are left to the router."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._table: list[tuple[re.Pattern[str], int, frozenset[str]]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        allowed = self._allowed(scope)
        method = scope["method"]
        if allowed is None or method in allowed:
            await self.app(scope, receive, send)
            return
        allow = ", ".join(sorted(allowed | {"OPTIONS"})).encode()
        if method == "OPTIONS":
            await send(
                {"type": "http.response.start", "status": 204, "headers": [(b"allow", allow)]}
            )
            await send({"type": "http.response.body", "body": b""})
            return
        body = b""
        if method != "HEAD":
            body = json.dumps(
                error_body(405, f"{method} is not allowed here", "method_not_allowed")
            ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 405,
                "headers": [
                    (b"allow", allow),
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _allowed(self, scope: Scope) -> frozenset[str] | None:
        """The documented methods of the most specific documented path matching the request
        (None: not a documented path)."""
        table = self._table if self._table is not None else self._build(scope)
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        best: int | None = None
        methods: set[str] = set()
        for pattern, params, documented in table:
            if (best is None or params <= best) and pattern.fullmatch(path):
                if best is None or params < best:
                    best, methods = params, set()
                methods |= documented
        return frozenset(methods) if best is not None else None

    def _build(self, scope: Scope) -> list[tuple[re.Pattern[str], int, frozenset[str]]]:
        openapi = getattr(scope.get("app"), "openapi", None)
        paths = openapi().get("paths", {}) if callable(openapi) else {}
        table = []
        for template, operations in paths.items():
            parts = re.split(r"(\{[^}/]+\})", template)
            regex = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)
            documented = frozenset(m.upper() for m in operations if m.upper() in _HTTP_METHODS)
            table.append((re.compile(regex), template.count("{"), documented))
        self._table = table
        return table


_HTTP_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"})
