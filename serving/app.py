"""``create_app(settings)``: the FastAPI application (``coagent serve`` runs it with uvicorn).

Everything is under ``/api/v1``; OpenAPI at ``/api/v1/openapi.json``, Swagger UI at ``/docs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from pydantic import BaseModel
from redis.asyncio import Redis

from knowledge.platform import database_url, open_platform, redis_url
from knowledge.settings import Settings, get_settings
from realtime.outbox import OutboxRelay
from realtime.publisher import EventPublisher
from serving.a2a.http import A2AHttp
from serving.agents import service as agents_service
from serving.agents.router import router as agents_router
from serving.artifacts.router import router as artifacts_router
from serving.auth import service as auth_service
from serving.auth.router import router as auth_router
from serving.auth.security import API_PREFIX, CSRF_HEADER
from serving.chat.broadcast import Broadcaster
from serving.chat.router import router as chat_router
from serving.chat.websocket import router as websocket_router
from serving.courses.router import router as courses_router
from serving.errors import MALFORMED_RESPONSES, install_error_handlers
from serving.evaluation.router import router as evaluation_router
from serving.graph.dagster import DagsterGateway
from serving.graph.router import router as graph_router
from serving.mcp.http import McpHttp
from serving.middleware import (
    AllowHeaderMiddleware,
    BodySizeLimitMiddleware,
    InputHygieneMiddleware,
)
from serving.rooms.router import router as rooms_router
from serving.state import AppState, platform_sessions
from serving.users.router import router as users_router

log = logging.getLogger(__name__)

DESCRIPTION = """
The CoAgent Studio API: users, courses, rooms, chat (HTTP + WebSocket), artifacts, agents and
the per-room knowledge graph.

**Authentication.** `POST /api/v1/auth/login` sets three cookies: `coagent_access` (a short-lived
JWT, HttpOnly), `coagent_refresh` (opaque, HttpOnly, rotated on every
`POST /api/v1/auth/refresh`) and `coagent_csrf` (readable). Every POST/PUT/PATCH/DELETE made with
the cookies must send the `X-CSRF-Token` header with the value of `coagent_csrf`.

**Errors** always have the shape `{"error": {"code": "...", "message": "...", "details": [...]}}`.
"""


class Health(BaseModel):
    status: str
    websocket_connections: int


async def _start(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    # Starting the embedded PostgreSQL / Redis blocks: do it off the event loop.
    await asyncio.to_thread(database_url, settings)
    redis_location = await asyncio.to_thread(redis_url, settings)
    async with open_platform(settings) as platform:
        redis = Redis.from_url(redis_location)
        # The relay's own client: a Redis that hangs costs a request at most these seconds.
        relay_redis = Redis.from_url(redis_location, socket_timeout=5, socket_connect_timeout=5)
        broadcaster = Broadcaster(redis)
        dagster = DagsterGateway(settings)
        sessions = platform_sessions(platform)
        relay = OutboxRelay(
            sessions, EventPublisher(relay_redis, maxlen=settings.events_stream_maxlen)
        )
        state = AppState(
            settings=settings,
            platform=platform,
            redis=redis,
            events=EventPublisher(redis, maxlen=settings.events_stream_maxlen),
            outbox=relay,
            broadcaster=broadcaster,
            dagster=dagster,
            session_factory=sessions,
        )
        try:
            async with platform.session() as session:
                await auth_service.ensure_superuser(session, settings)
            async with platform.session() as session:
                await agents_service.analytics_identity(session)
                await session.commit()
            await broadcaster.start()
            # Sends what earlier processes left in the outbox, then whatever requests could not.
            relay.start()
            app.state.coagent = state
            yield
        finally:
            await relay.stop()
            await broadcaster.stop()
            await relay_redis.aclose()
            await redis.aclose()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(dagster.close)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # COAGENT_ENV=production: refuse to start (InsecureSettingsError lists every problem).
    settings.check_production()
    for problem in settings.production_problems():
        log.warning("development settings: %s", problem)

    # MCP over streamable HTTP (serving/mcp): its session manager runs inside the lifespan.
    mcp = McpHttp(f"{API_PREFIX}/mcp")
    # Room agents over A2A (serving/a2a): running tasks are drained at shutdown.
    a2a = A2AHttp(f"{API_PREFIX}/a2a")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async for _ in _start(app, settings):
            async with mcp.running(), a2a.running():
                yield

    app = FastAPI(
        title="CoAgent Studio API",
        version="1.0.0",
        description=DESCRIPTION,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # The last added runs first: CORS, body size limit, input hygiene, Allow, the routes.
    app.add_middleware(AllowHeaderMiddleware)
    app.add_middleware(InputHygieneMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=True,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Content-Type", CSRF_HEADER],
    )

    api = APIRouter(prefix=API_PREFIX)

    @api.get("/health", response_model=Health, tags=["health"], responses=MALFORMED_RESPONSES)
    async def health() -> Health:
        state: AppState = app.state.coagent
        return Health(status="ok", websocket_connections=state.broadcaster.local_connections())

    for router in (
        auth_router,
        users_router,
        courses_router,
        rooms_router,
        chat_router,
        artifacts_router,
        agents_router,
        graph_router,
        evaluation_router,
        websocket_router,
    ):
        api.include_router(router)
    app.include_router(api)
    app.router.routes.append(mcp.route)
    app.router.routes.extend(a2a.routes)
    return app
