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
from realtime.publisher import EventPublisher
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
from serving.errors import install_error_handlers
from serving.evaluation.router import router as evaluation_router
from serving.graph.dagster import DagsterGateway
from serving.graph.router import router as graph_router
from serving.middleware import BodySizeLimitMiddleware
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
        broadcaster = Broadcaster(redis)
        dagster = DagsterGateway(settings)
        state = AppState(
            settings=settings,
            platform=platform,
            redis=redis,
            events=EventPublisher(redis, maxlen=settings.events_stream_maxlen),
            broadcaster=broadcaster,
            dagster=dagster,
            session_factory=platform_sessions(platform),
        )
        try:
            async with platform.session() as session:
                await auth_service.ensure_superuser(session, settings)
            async with platform.session() as session:
                await agents_service.analytics_identity(session)
                await session.commit()
            await broadcaster.start()
            app.state.coagent = state
            yield
        finally:
            await broadcaster.stop()
            await redis.aclose()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(dagster.close)


DEFAULT_SECRET = "change-me-in-production"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    if settings.secret_key == DEFAULT_SECRET:
        log.warning("SECRET_KEY is the default: set a long random SECRET_KEY in production")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async for _ in _start(app, settings):
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
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=True,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Content-Type", CSRF_HEADER],
    )

    api = APIRouter(prefix=API_PREFIX)

    @api.get("/health", response_model=Health, tags=["health"])
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
    return app
