"""Every room agent as an A2A agent, under ``/api/v1/a2a``:

- ``GET  /api/v1/a2a/rooms/{room_id}/agents/{agent_id}/.well-known/agent-card.json`` — its card
  (``agent_id``: a configured agent's id, or ``analytics`` for the room's Analytics Agent);
- ``POST /api/v1/a2a/rooms/{room_id}/agents/{agent_id}`` — JSON-RPC 2.0: ``SendMessage`` /
  ``SendStreamingMessage`` (A2A 1.0, what the SDK's client sends) and ``message/send`` /
  ``message/stream`` (A2A 0.3), ``GetTask`` / ``tasks/get``, ``ListTasks``, ``CancelTask`` /
  ``tasks/cancel``, ``SubscribeToTask``.

Every request carries the caller's access token, as ``Authorization: Bearer <token>`` or as
the ``coagent_access`` login cookie (then a POST must also send ``X-CSRF-Token``, as everywhere
in the API). The token is checked by ``serving.auth.service.authenticate`` (signature, expiry,
login session not revoked, account active), then the room by ``authorize_room``: the card needs
``room:read``, a call ``message:post`` (the exchange is posted in the room as the caller; see
``serving.a2a.executor``), and the agent must exist in the room. A refusal is the API's error
(401, 403, 404) before the SDK sees the request: no task, no message, no model call.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from a2a.auth.user import User as A2AUser
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes import DefaultServerCallContextBuilder, create_jsonrpc_routes
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentProvider,
    AgentSkill,
    APIKeySecurityScheme,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)
from a2a.utils.constants import (
    AGENT_CARD_WELL_KNOWN_PATH,
    PROTOCOL_VERSION_0_3,
    PROTOCOL_VERSION_1_0,
    TransportProtocol,
)
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from knowledge.agents.runtime import AgentSpec
from knowledge.agents.tools import SPECS
from knowledge.errors import DomainError
from serving.a2a.executor import (
    ANALYTICS,
    CALLER_KEY,
    OWNER_KEY,
    Caller,
    RecentTaskStore,
    RoomAgentExecutor,
    task_owner,
)
from serving.agents.service import ANALYTICS_NAME, analytics_spec, find_agent
from serving.auth import service as auth_service
from serving.auth.security import (
    ACCESS_COOKIE,
    CSRF_COOKIE,
    CSRF_HEADER,
    SAFE_METHODS,
    csrf_matches,
)
from serving.errors import ApiError, Forbidden, NotFound, Unauthorized, error_response, status_for
from serving.permissions import Action, Permissions
from serving.rooms.service import authorize_room
from serving.state import AppState

_BEARER = "bearer"
_COOKIE = "cookie"


class _CallerUser(A2AUser):
    def __init__(self, caller: Caller) -> None:
        self._caller = caller

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def user_name(self) -> str:
        return str(self._caller.user_id)


class _CallContextBuilder(DefaultServerCallContextBuilder):
    """The SDK's call context, carrying the caller the route authenticated."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        caller = request.scope[CALLER_KEY]
        context.state[CALLER_KEY] = caller
        context.state[OWNER_KEY] = caller.owner
        context.user = _CallerUser(caller)
        return context


def _token(request: Request) -> tuple[str, bool]:
    """(the access token, whether it came from the cookie)."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(
                "the Authorization header must be 'Bearer <access token>'", "invalid_token"
            )
        return token, False
    token = request.cookies.get(ACCESS_COOKIE) or ""
    if not token:
        raise Unauthorized(
            "log in first: send your access token as 'Authorization: Bearer <token>' "
            f"(or the {ACCESS_COOKIE} cookie)"
        )
    return token, True


def _agent_id(raw: str) -> uuid.UUID | None:
    if raw == ANALYTICS:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"no agent {raw!r}: use an agent's id or {ANALYTICS!r}") from None


async def _authorize(request: Request, action: Action) -> tuple[Caller, AgentSpec, str]:
    """The caller, the agent's spec (no secrets) and the room's name; raises the API's
    401 / 403 / 404."""
    state: AppState = request.app.state.coagent
    token, from_cookie = _token(request)
    async with state.session_factory() as session:
        user, _ = await auth_service.authenticate(session, state.settings, token)
        if (
            from_cookie
            and request.method not in SAFE_METHODS
            and not csrf_matches(request.cookies.get(CSRF_COOKIE), request.headers.get(CSRF_HEADER))
        ):
            raise Forbidden(
                f"the {CSRF_HEADER} header must repeat the {CSRF_COOKIE} cookie", "csrf_failed"
            )
        room_id: uuid.UUID = request.path_params["room_id"]
        agent_id = _agent_id(request.path_params["agent_id"])
        room = await authorize_room(session, Permissions(session), user, room_id, action)
        if agent_id is None:
            spec = analytics_spec(state.settings)
        else:
            config = await find_agent(session, room.id, agent_id)
            spec = AgentSpec(config.name, "", config.model, list(config.tools))
        return Caller(state, user.id, room.id, agent_id), spec, room.name


def _refusal(error: ApiError | DomainError) -> Response:
    status = status_for(error)
    if isinstance(error, ApiError):
        message, code = error.message, error.code
    else:
        message, code = str(error), {404: "not_found"}.get(status, "invalid_input")
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = f'Bearer realm="coagent", error="{code}"'
    return error_response(status, message, code, None, headers)


def agent_card(spec: AgentSpec, room_name: str, rpc_url: str, api_url: str) -> AgentCard:
    """The card of one room agent: its tools as skills, the bearer token (or login cookie)
    as the way in."""
    skills = [
        AgentSkill(
            id=name,
            name=name.replace("_", " "),
            description=str(SPECS[name]["function"]["description"]),
            tags=["room", "knowledge graph" if name == "graph_query" else name.split("_")[-1]],
            input_modes=["text/plain"],
            output_modes=["text/plain", "application/json"],
        )
        for name in spec.tools
        if name in SPECS
    ] or [
        AgentSkill(
            id="chat",
            name="chat",
            description=f"Talk with {spec.name} in the room.",
            tags=["room", "chat"],
        )
    ]
    who = "the room's Analytics Agent" if spec.name == ANALYTICS_NAME else "an agent"
    return AgentCard(
        name=spec.name,
        description=(
            f"{spec.name}, {who} of the CoAgent Studio room “{room_name}”. It answers from what "
            "was said in the room and cites the messages it used. Every exchange is posted in "
            "the room: your message as you, the reply as the agent."
        ),
        version="1.0.0",
        provider=AgentProvider(organization="CoAgent Studio", url=api_url),
        supported_interfaces=[
            AgentInterface(
                url=rpc_url,
                protocol_binding=TransportProtocol.JSONRPC.value,
                protocol_version=version,
            )
            for version in (PROTOCOL_VERSION_1_0, PROTOCOL_VERSION_0_3)
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        security_schemes={
            _BEARER: SecurityScheme(
                http_auth_security_scheme=HTTPAuthSecurityScheme(
                    scheme="bearer",
                    bearer_format="JWT",
                    description="The access token of a CoAgent Studio login "
                    "(POST /api/v1/auth/login); the caller must be a member of the room.",
                )
            ),
            _COOKIE: SecurityScheme(
                api_key_security_scheme=APIKeySecurityScheme(
                    location="cookie",
                    name=ACCESS_COOKIE,
                    description=f"The login cookie; a POST must also send {CSRF_HEADER} "
                    f"with the value of the {CSRF_COOKIE} cookie.",
                )
            ),
        },
        security_requirements=[
            SecurityRequirement(schemes={_BEARER: StringList()}),
            SecurityRequirement(schemes={_COOKIE: StringList()}),
        ],
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain", "application/json"],
        skills=skills,
    )


class A2AHttp:
    """The A2A routes (``routes``, to add to the app) and ``running()``, to enter in the app's
    lifespan (drains running tasks at shutdown)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.tasks = RecentTaskStore(task_owner)
        self.handler = DefaultRequestHandler(
            agent_executor=RoomAgentExecutor(),
            task_store=self.tasks,
            # What the SDK's handler checks (streaming, push notifications); each agent's own
            # card is built per request.
            agent_card=agent_card(
                AgentSpec("CoAgent Studio room agent", "", "", []),
                "any",
                f"http://localhost{prefix}",
                "http://localhost",
            ),
        )
        agent = f"{prefix}/rooms/{{room_id:uuid}}/agents/{{agent_id}}"
        [sdk_route] = create_jsonrpc_routes(
            self.handler,
            rpc_url=agent,
            context_builder=_CallContextBuilder(),
            enable_v0_3_compat=True,
        )
        self._dispatch = sdk_route.endpoint
        self.routes = [
            Route(agent + AGENT_CARD_WELL_KNOWN_PATH, self.card, methods=["GET"]),
            Route(agent, self.rpc, methods=["POST"]),
        ]

    async def card(self, request: Request) -> Response:
        try:
            _, spec, room_name = await _authorize(request, Action.ROOM_READ)
        except (ApiError, DomainError) as error:
            return _refusal(error)
        api_url = str(request.base_url).rstrip("/")
        path = request.url.path.removesuffix(AGENT_CARD_WELL_KNOWN_PATH)
        card = agent_card(spec, room_name, api_url + path, api_url)
        return JSONResponse(agent_card_to_dict(card), headers={"Cache-Control": "no-store"})

    async def rpc(self, request: Request) -> Response:
        try:
            caller, _, _ = await _authorize(request, Action.MESSAGE_POST)
        except (ApiError, DomainError) as error:
            return _refusal(error)
        request.scope[CALLER_KEY] = caller
        response: Response = await self._dispatch(request)
        return response

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self.handler.aclose()
