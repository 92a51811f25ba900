"""Wiring: settings → database URL → engine, stores, extractor and embedder.

``open_platform`` is what Dagster resources, the API and the CLI all use, so there is one place
where the embedded defaults and the configured services are chosen.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from knowledge.embedded import embedded_postgres_url, embedded_redis_url
from knowledge.embeddings import Embedder, HashingEmbedder, OpenAIEmbedder
from knowledge.extraction import Extractor, FastExtractor
from knowledge.extraction.llm import LLMExtractor
from knowledge.llm.cache import LLMCache
from knowledge.llm.provider import LLMProvider
from knowledge.reports import ExtractiveReportWriter, LLMReportWriter, ReportWriter
from knowledge.settings import Settings, get_settings
from knowledge.stores.base import GraphStore, VectorStore


def database_url(settings: Settings) -> str:
    """The PostgreSQL URL to use, starting the embedded server when none is configured."""
    return settings.configured_database_url() or embedded_postgres_url(settings.coagent_data_dir)


def redis_url(settings: Settings) -> str:
    return settings.redis_url or embedded_redis_url(settings.coagent_data_dir)


def with_driver(url: str, driver: str) -> str:
    """``postgresql://…`` → ``postgresql+<driver>://…`` (psycopg for us, psycopg2 for Dagster)."""
    parsed = make_url(url)
    return parsed.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


def sync_engine(settings: Settings | None = None) -> Engine:
    settings = settings or get_settings()
    return create_engine(with_driver(database_url(settings), "psycopg"), pool_pre_ping=True)


def async_engine(settings: Settings) -> AsyncEngine:
    return create_async_engine(
        with_driver(database_url(settings), "psycopg"), pool_pre_ping=True, pool_size=5
    )


@dataclass
class Platform:
    settings: Settings
    engine: AsyncEngine
    graph: GraphStore
    vectors: VectorStore
    extractor: Extractor
    embedder: Embedder
    report_writer: ReportWriter
    # Set when an LLM is configured (OPENAI_API_KEY); None in the offline mode.
    llm: LLMProvider | None = None
    # The embeddings-only provider when EMBEDDING_BASE_URL is set (the embedder's provider).
    embedding_llm: LLMProvider | None = None

    def session(self) -> AsyncSession:
        # Objects stay readable after commit: callers use ids and fields after the transaction.
        return AsyncSession(self.engine, expire_on_commit=False)


def _provider(
    settings: Settings, engine: AsyncEngine, api_key: str, base_url: str | None
) -> LLMProvider:
    """A provider with the configured models, cache, concurrency, timeout and retries."""
    return LLMProvider(
        api_key=api_key,
        base_url=base_url,
        chat_model=settings.llm_chat_model,
        embedding_model=settings.llm_embedding_model,
        embedding_dim=settings.llm_embedding_dim,
        cache=LLMCache(engine),
        concurrency=settings.llm_concurrency,
        timeout=settings.llm_timeout_seconds,
        max_retries=settings.llm_max_retries,
        backoff=settings.llm_backoff_seconds,
        reasks=settings.llm_reasks,
    )


def make_llm(settings: Settings, engine: AsyncEngine) -> LLMProvider | None:
    if not settings.uses_llm:
        return None
    return _provider(settings, engine, settings.openai_api_key or "", settings.llm_base_url)


def make_embedding_llm(
    settings: Settings, engine: AsyncEngine, llm: LLMProvider | None = None
) -> LLMProvider | None:
    """An embeddings-only provider on EMBEDDING_BASE_URL (own key, same cache and limits), or
    None. Its usage is counted with the chat LLM's when there is one."""
    if not settings.embedding_base_url:
        return None
    # Local servers take no key; the OpenAI client needs a non-empty one. (Its chat model is
    # never asked: this provider only embeds.)
    provider = _provider(
        settings, engine, settings.embedding_api_key or "none", settings.embedding_base_url
    )
    if llm is not None:
        provider.usage = llm.usage
    return provider


def make_embedder(
    settings: Settings, llm: LLMProvider | None, embedding_llm: LLMProvider | None = None
) -> Embedder:
    """The embeddings-only provider's model when EMBEDDING_BASE_URL is set, else the LLM's,
    else the offline hashing embedder."""
    provider = embedding_llm or llm
    if provider is not None:
        return OpenAIEmbedder(provider, settings.embedding_batch_tokens)
    return HashingEmbedder(settings.offline_embedding_dim)


def make_extractor(settings: Settings, llm: LLMProvider | None) -> Extractor:
    if llm is not None:
        return LLMExtractor(llm, settings.llm_entity_types, settings.llm_gleanings)
    return FastExtractor()


def make_report_writer(settings: Settings, llm: LLMProvider | None) -> ReportWriter:
    if llm is not None:
        return LLMReportWriter(llm, settings.llm_context_tokens)
    return ExtractiveReportWriter()


def make_stores(settings: Settings, engine: AsyncEngine) -> tuple[GraphStore, VectorStore]:
    """Configured services where set, else the embedded PostgreSQL stores (imports are lazy so
    the embedded default never needs the service clients)."""
    graph: GraphStore
    vectors: VectorStore

    # Graph store: Neo4j (APOC + GDS) when NEO4J_URI is set, else the PostgreSQL tables.
    if settings.neo4j_uri:
        from knowledge.stores.neo4j_graph import Neo4jGraphStore

        graph = Neo4jGraphStore.from_settings(settings)
    else:
        from knowledge.stores.postgres_graph import PostgresGraphStore

        graph = PostgresGraphStore(engine)

    # Vector store: Qdrant when QDRANT_URL (a server URL, or a folder for qdrant-client's
    # one-process local mode) or QDRANT_HOST is set, else pgvector.
    location = settings.qdrant_url or (
        f"http://{settings.qdrant_host}:{settings.qdrant_port}" if settings.qdrant_host else None
    )
    if location:
        from knowledge.stores.qdrant_store import QdrantVectorStore

        vectors = QdrantVectorStore(location, api_key=settings.qdrant_api_key)
    else:
        from knowledge.stores.pgvector_store import PgVectorStore

        vectors = PgVectorStore(engine)
    return graph, vectors


@asynccontextmanager
async def open_platform(settings: Settings | None = None) -> AsyncIterator[Platform]:
    settings = settings or get_settings()
    engine = async_engine(settings)
    graph, vectors = make_stores(settings, engine)
    llm = embedding_llm = None
    try:
        llm = make_llm(settings, engine)
        embedding_llm = make_embedding_llm(settings, engine, llm)
        yield Platform(
            settings=settings,
            engine=engine,
            graph=graph,
            vectors=vectors,
            extractor=make_extractor(settings, llm),
            embedder=make_embedder(settings, llm, embedding_llm),
            report_writer=make_report_writer(settings, llm),
            llm=llm,
            embedding_llm=embedding_llm,
        )
    finally:
        for provider in (llm, embedding_llm):
            if provider is not None:
                await provider.aclose()
        for store in (graph, vectors):
            close = getattr(store, "close", None)
            if close is not None:
                await close()
        await engine.dispose()
