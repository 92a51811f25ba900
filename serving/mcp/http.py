"""The MCP server over streamable HTTP at ``/api/v1/mcp``, authenticated like the API.

Each request carries the caller's access token, as ``Authorization: Bearer <token>`` or as
the ``coagent_access`` login cookie (then, like every cookie-authenticated POST/DELETE of the
API, with ``X-CSRF-Token``). The token is checked by ``serving.auth.service.authenticate``
(signature, expiry, login session not revoked, account active); without a valid one the
request is answered 401 with the API's error body before it reaches the MCP transport. The
tools then check the room named in each call (``serving.mcp.service``).

The transport is stateless (every request stands alone, JSON responses), so any API process
behind a load balancer can answer any request, and nothing outlives a request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import HTTPConnection
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.auth import service as auth_service
from serving.auth.security import (
    ACCESS_COOKIE,
    CSRF_COOKIE,
    CSRF_HEADER,
    SAFE_METHODS,
    csrf_matches,
)
from serving.errors import ApiError, Forbidden, Unauthorized, error_response
from serving.mcp.server import build_server
from serving.mcp.service import Caller, RoomKnowledge
from serving.state import AppState

#: Where the authenticated caller travels from the guard to the tools (the ASGI scope of the
#: request the SDK hands to each tool call as ``ctx.request_context.request``).
SCOPE_KEY = "coagent.mcp_caller"


def caller_of_request(ctx: Context[Any]) -> Caller:
    request = ctx.request_context.request
    scope = getattr(request, "scope", None)
    caller = scope.get(SCOPE_KEY) if isinstance(scope, dict) else None
    if not isinstance(caller, Caller):
        raise ToolError("not_authenticated: this request carries no authenticated user")
    return caller


async def authenticate(conn: HTTPConnection) -> Caller:
    """The caller of an MCP request: bearer token first, else the access cookie."""
    state: AppState = conn.app.state.coagent
    header = conn.headers.get("authorization")
    from_cookie = header is None
    if header is not None:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(
                "the Authorization header must be 'Bearer <access token>'", "invalid_token"
            )
    else:
        token = conn.cookies.get(ACCESS_COOKIE) or ""
        if not token:
            raise Unauthorized(
                "log in first: send your access token as 'Authorization: Bearer <token>' "
                f"(or the {ACCESS_COOKIE} cookie)"
            )
    async with state.session_factory() as session:
        user, _ = await auth_service.authenticate(session, state.settings, token)
    if (
        from_cookie
        and conn.scope["method"] not in SAFE_METHODS
        and not csrf_matches(conn.cookies.get(CSRF_COOKIE), conn.headers.get(CSRF_HEADER))
    ):
        raise Forbidden(
            f"the {CSRF_HEADER} header must repeat the {CSRF_COOKIE} cookie", "csrf_failed"
        )
    knowledge = RoomKnowledge(state.settings, state.platform, state.session_factory)
    return Caller(knowledge, user.id)


class _AuthGuard:
    """ASGI: authenticate, then hand the request to the SDK's transport."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            scope[SCOPE_KEY] = await authenticate(HTTPConnection(scope))
        except ApiError as error:
            headers = dict(error.headers or {})
            if error.status_code == 401:
                headers["WWW-Authenticate"] = f'Bearer realm="coagent", error="{error.code}"'
            response = error_response(error.status_code, error.message, error.code, None, headers)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class McpHttp:
    """The MCP server's streamable HTTP endpoint: ``route`` to add to the app, and
    ``running()`` to enter in the app's lifespan (the SDK's session manager)."""

    def __init__(self, path: str) -> None:
        self.server = build_server(caller_of_request)
        transport = self.server.streamable_http_app(
            streamable_http_path=path,
            stateless_http=True,
            json_response=True,
            # The SDK's DNS-rebinding guard allows only localhost Host headers; the API runs
            # under any host name, and every request here must carry the caller's token
            # (a cookie-authenticated POST also the CSRF header), which a rebound page has not.
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        self.route = Route(path, endpoint=_AuthGuard(transport), include_in_schema=False)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The SDK's session manager, in a task of its own: it holds an anyio task group,
        which must be left in the task that entered it, and a lifespan may be entered and
        left from different tasks (pytest's session-scoped fixtures do)."""
        started, stop = asyncio.Event(), asyncio.Event()

        async def run() -> None:
            async with self.server.session_manager.run():
                started.set()
                await stop.wait()

        task = asyncio.create_task(run(), name="mcp-session-manager")
        ready = asyncio.create_task(started.wait())
        try:
            await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError("the MCP session manager stopped while starting")
        try:
            yield
        finally:
            stop.set()
            await task
