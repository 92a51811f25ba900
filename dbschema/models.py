"""PostgreSQL schema as SQLAlchemy 2 models.

Two groups of tables: the product's own (users, courses, rooms, members, messages, artifacts)
and those of the embedded graph and vector stores (``room_chunks``, ``graph_*``,
``vector_points``), used when Neo4j / Qdrant are not configured.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.schema import Computed
from sqlalchemy.sql import text as sql_text


class Base(DeclarativeBase):
    pass


class UserRole(enum.StrEnum):
    super_admin = "super_admin"
    admin = "admin"
    teacher = "teacher"
    student = "student"
    agent = "agent"


class AuthorKind(enum.StrEnum):
    human = "human"
    agent = "agent"


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(cls, name=name, values_callable=lambda e: [m.value for m in e])


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    hashed_password: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[UserRole] = mapped_column(_enum(UserRole, "user_role"), default=UserRole.student)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Course(Base):
    __tablename__ = "courses"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    owner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CourseMember(Base):
    __tablename__ = "course_members"

    course_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("courses.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(32), default="member")


class Room(Base):
    __tablename__ = "rooms"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    course_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("courses.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class RoomMember(Base):
    __tablename__ = "room_members"

    room_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(32), default="member")
    joined_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_room_id_id", "room_id", "id"),
        # Room order (the chunker's), and a user's messages (a rename re-chunks their rooms).
        Index("ix_messages_room_created", "room_id", "created_at", "id"),
        Index("ix_messages_author_id", "author_id"),
        # An agent answers a message once, however often its job runs.
        Index(
            "uq_messages_agent_reply",
            "reply_to",
            "author_id",
            unique=True,
            postgresql_where="reply_to IS NOT NULL",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    room_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"))
    author_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    author_kind: Mapped[AuthorKind] = mapped_column(
        _enum(AuthorKind, "author_kind"), default=AuthorKind.human
    )
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    edited_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: The message an agent reply answers (None for everything else).
    reply_to: Mapped[int | None] = mapped_column(BigInteger)
    #: An agent reply's tool calls, citations, model and whether it was offline.
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (Index("ix_artifacts_room_id", "room_id"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    room_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(300))
    content: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# --- derived data: chunks and the embedded graph / vector stores -------------------------------
# Room ids are kept as plain text here: these tables are keyed by Dagster partition keys and are
# wiped and rebuilt by the pipeline, so they carry no foreign keys into the product tables.


class RoomChunk(Base):
    """A token-bounded chunk of a room's messages or of one artifact."""

    __tablename__ = "room_chunks"
    __table_args__ = (
        Index("ix_room_chunks_room_position", "room_id", "position"),
        # An edit or deletion finds the chunks of a message (0009).
        Index("ix_room_chunks_message_ids", "message_ids", postgresql_using="gin"),
        Index("ix_room_chunks_copies", "room_id", postgresql_where="copies > 1"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(64))
    ordinal: Mapped[int] = mapped_column(Integer)
    #: Sorts in room order and stays put when other chunks change (``knowledge.chunking``).
    position: Mapped[str] = mapped_column(String(80))
    text: Mapped[str] = mapped_column(Text)
    n_tokens: Mapped[int] = mapped_column(Integer)
    message_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), default=list)
    artifact_id: Mapped[str | None] = mapped_column(String(64))
    #: How many times the chunker emitted this text in the room (identical texts share one id;
    #: the first is stored). Above 1, a refresh of the room's conversation re-chunks it whole.
    copies: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class RoomChange(Base):
    """A message or artifact that changed, not yet seen by one index step (``consumer``).

    Written by triggers on ``messages``, ``artifacts`` and ``users`` in the same transaction
    as the change, so no change is missed whatever commit order or clock; a step deletes the
    rows it consumed in the transaction that writes its result."""

    __tablename__ = "room_changes"
    __table_args__ = (Index("ix_room_changes_room_consumer", "room_id", "consumer", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(64))
    consumer: Mapped[str] = mapped_column(String(20))
    #: Both null: the whole room.
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    artifact_id: Mapped[str | None] = mapped_column(String(64))
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class GraphChange(Base):
    """An entity or community that changed since the reports step last ran (migration 0014).

    The graph step writes the names of the entities it rewrites or deletes (and both ends of
    each relationship it rewrites or deletes), the communities step the ids of the communities
    whose members changed, each before it writes the change; a row with neither stands for
    the whole room (a full build). The reports step hashes only the communities these rows
    touch, and deletes the rows it read once its reports are written."""

    __tablename__ = "graph_changes"
    __table_args__ = (Index("ix_graph_changes_room", "room_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(64))
    entity_name: Mapped[str | None] = mapped_column(Text)
    community_id: Mapped[str | None] = mapped_column(String(64))
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ChunkExtraction(Base):
    """What one extractor found in one chunk; a chunk is extracted once per extractor."""

    __tablename__ = "chunk_extractions"
    __table_args__ = (Index("ix_chunk_extractions_room_id", "room_id"),)

    chunk_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    extractor: Mapped[str] = mapped_column(String(100), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class GraphEntity(Base):
    __tablename__ = "graph_entities"
    # The words of each name (migration 0019): the entities a question's word can name.
    __table_args__ = (
        Index(
            "ix_graph_entities_name_words",
            sql_text("string_to_array(name, ' ')"),
            postgresql_using="gin",
        ),
    )

    room_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    display_name: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    source_chunk_ids: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    mentions: Mapped[int] = mapped_column(Integer, default=0)


class GraphRelationship(Base):
    """An undirected, weighted relationship; ``source < target`` by name."""

    __tablename__ = "graph_relationships"
    __table_args__ = (Index("ix_graph_relationships_room_target", "room_id", "target"),)

    room_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(Text, primary_key=True)
    target: Mapped[str] = mapped_column(Text, primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    source_chunk_ids: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)


class EntityAlias(Base):
    """A name merged into another entity of the same room by entity resolution.

    Rewritten by every graph build from the current extractions, so removing the messages an
    alias came from removes the merge. ``source_chunk_ids``: the chunks that named the alias.
    """

    __tablename__ = "entity_aliases"

    room_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    alias: Mapped[str] = mapped_column(Text, primary_key=True)
    canonical: Mapped[str] = mapped_column(Text)
    method: Mapped[str] = mapped_column(String(32))
    score: Mapped[float] = mapped_column(Float)
    source_chunk_ids: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)


class GraphBuildRoom(Base):
    """What the room's stored graph was last built from (``knowledge.indexing.graph``): the
    extractor, the speakers, and ``dirty`` while a delta build is part-way (the next build of a
    dirty room is a full one)."""

    __tablename__ = "graph_build_rooms"

    room_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    extractor: Mapped[str] = mapped_column(String(100))
    #: The graph store, vector store, embedder and LLM it was written with (another target
    #: gets a full build).
    target: Mapped[str] = mapped_column(Text, default="")
    speakers: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    dirty: Mapped[bool] = mapped_column(Boolean, default=False)
    #: How many stored (resolved) entities have each type.
    entity_types: Mapped[dict[str, int]] = mapped_column(JSONB, default=dict)


class GraphBuildChunk(Base):
    """A chunk the graph build has seen: its position, the words it writes in lower case
    (entity resolution's ordinary words) and whether its extraction is in the mentions."""

    __tablename__ = "graph_build_chunks"

    room_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    chunk_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[str] = mapped_column(String(80))
    merged: Mapped[bool] = mapped_column(Boolean, default=False)
    words: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    #: The extraction's dropped relationships (when merged).
    dropped: Mapped[int] = mapped_column(Integer, default=0)


class GraphRoomWord(Base):
    """A word the room writes in lower case, and in how many of its chunks."""

    __tablename__ = "graph_room_words"

    room_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    word: Mapped[str] = mapped_column(Text, primary_key=True)
    chunks: Mapped[int] = mapped_column(Integer)


class GraphEntityMention(Base):
    """One entity of one merged chunk's extraction (``knowledge.graph.EntityMention``)."""

    __tablename__ = "graph_entity_mentions"
    __table_args__ = (Index("ix_graph_entity_mentions_room_name", "room_id", "name"),)

    room_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    chunk_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    position: Mapped[str] = mapped_column(String(80))
    name: Mapped[str] = mapped_column(Text)
    display_name: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")


class GraphRelationshipMention(Base):
    """One counted relationship of one merged chunk's extraction (``source < target``)."""

    __tablename__ = "graph_relationship_mentions"
    __table_args__ = (
        Index("ix_graph_relationship_mentions_room_pair", "room_id", "source", "target"),
    )

    room_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    chunk_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    position: Mapped[str] = mapped_column(String(80))
    source: Mapped[str] = mapped_column(Text)
    target: Mapped[str] = mapped_column(Text)
    weight: Mapped[float] = mapped_column(Float)
    description: Mapped[str] = mapped_column(Text, default="")


class GraphMergedEntity(Base):
    """An entity merged from the mentions, before entity resolution."""

    __tablename__ = "graph_merged_entities"

    room_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    display_name: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(64))
    descriptions: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    source_chunk_ids: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    mentions: Mapped[int] = mapped_column(Integer)
    #: type -> mentions of that type (0017): with it the row is the whole state of the merge,
    #: so new mentions fold into it. None on rows written before; those merge from mentions.
    type_counts: Mapped[dict[str, int] | None] = mapped_column(JSONB)


class GraphMergedRelationship(Base):
    """A relationship merged from the mentions, before entity resolution."""

    __tablename__ = "graph_merged_relationships"
    __table_args__ = (Index("ix_graph_merged_relationships_room_target", "room_id", "target"),)

    room_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(Text, primary_key=True)
    target: Mapped[str] = mapped_column(Text, primary_key=True)
    weight: Mapped[float] = mapped_column(Float)
    descriptions: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    source_chunk_ids: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)


class GraphCommunity(Base):
    __tablename__ = "graph_communities"
    #: "The communities holding these entities" (``entity_names && …``, migration 0016).
    __table_args__ = (
        Index("ix_graph_communities_members", "entity_names", postgresql_using="gin"),
    )

    room_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    level: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[str | None] = mapped_column(String(64))
    entity_names: Mapped[list[str]] = mapped_column(ARRAY(Text))
    #: ``knowledge.communities.graph_fingerprint`` of the graph they were detected on (0011).
    graph_fingerprint: Mapped[str | None] = mapped_column(String(64))
    #: Entities placed or removed incrementally since Leiden last ran (0011).
    drift: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: The graph's total relationship weight when Leiden last ran (0011).
    baseline_weight: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")


class GraphCommunityReport(Base):
    __tablename__ = "graph_community_reports"

    room_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    community_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    level: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text)
    findings: Mapped[list[dict[str, str]]] = mapped_column(JSONB, default=list)
    rank: Mapped[float] = mapped_column(Float)
    content_hash: Mapped[str] = mapped_column(String(64))
    source_chunk_ids: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    generated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class VectorPoint(Base):
    """One point of the embedded vector store: dense vector + full-text vector per room."""

    __tablename__ = "vector_points"
    __table_args__ = (
        UniqueConstraint("collection", "room_id", "point_id", name="uq_vector_points_key"),
        Index("ix_vector_points_tsv", "tsv", postgresql_using="gin"),
        # The payload filters of a search (migration 0013; the expressions pgvector_store
        # writes).
        Index(
            "ix_vector_points_speaker",
            "collection",
            "room_id",
            sql_text("(payload->>'speaker')"),
            postgresql_include=["point_id"],
        ),
        Index(
            "ix_vector_points_ts",
            "collection",
            "room_id",
            sql_text("((payload->>'ts')::float)"),
            postgresql_include=["point_id"],
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    collection: Mapped[str] = mapped_column(String(64))
    room_id: Mapped[str] = mapped_column(String(64))
    point_id: Mapped[str] = mapped_column(Text)
    # Dimension-free column: each embedder's dimension gets its own partial HNSW index. NULL
    # (``dim`` 0) for a lexical-only point (migration 0015).
    embedding: Mapped[list[float] | None] = mapped_column(Vector(), nullable=True)
    dim: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    tsv: Mapped[Any] = mapped_column(
        TSVECTOR, Computed("to_tsvector('english', text)", persisted=True)
    )
    # Number of BM25 terms (knowledge.lexical.analyze) of the text, for length normalisation.
    n_terms: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class LexicalPosting(Base):
    """One term of one point, for BM25 in SQL (the embedded store's inverted index).

    Keyed by term first so that a query reads only the postings of its own terms; the key
    carries ``tf`` and ``doc_len`` (``INCLUDE``, migration 0012), so those reads are
    index-only.
    """

    __tablename__ = "lexical_postings"
    __table_args__ = (Index("ix_lexical_postings_point", "collection", "room_id", "point_id"),)

    collection: Mapped[str] = mapped_column(String(64), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    term: Mapped[str] = mapped_column(Text, primary_key=True)
    point_id: Mapped[str] = mapped_column(Text, primary_key=True)
    tf: Mapped[int] = mapped_column(Integer)
    doc_len: Mapped[int] = mapped_column(Integer)


class LexicalRoom(Base):
    """The BM25 statistics of a room's points in a lexical collection (migration 0012): how
    many points and their total length in terms, kept by the store with every write."""

    __tablename__ = "lexical_rooms"

    collection: Mapped[str] = mapped_column(String(64), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    n_docs: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    total_terms: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class LexicalTerm(Base):
    """A term's document frequency among a room's points (its postings count), and the version
    of its postings (migration 0018: new from one sequence whenever one of them changes)."""

    __tablename__ = "lexical_terms"

    collection: Mapped[str] = mapped_column(String(64), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    term: Mapped[str] = mapped_column(Text, primary_key=True)
    df: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(
        BigInteger, server_default=sql_text("nextval('lexical_term_version')")
    )


# --- serving: auth sessions, artifact history, agent configs (migration 0002) -----------------


class AuthSession(Base):
    """One login: the family of refresh tokens issued from it, revoked as a whole."""

    __tablename__ = "auth_sessions"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_reason: Mapped[str | None] = mapped_column(String(64))


class RefreshToken(Base):
    """An opaque refresh token, stored as its SHA-256; used once, then replaced (rotation)."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("auth_sessions.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ArtifactVersion(Base):
    """Every saved state of an artifact; ``artifacts`` holds the current one."""

    __tablename__ = "artifact_versions"

    artifact_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(300))
    content: Mapped[str] = mapped_column(Text)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AgentConfig(Base):
    """An AI agent configured for one room; it speaks as its own ``agent`` user."""

    __tablename__ = "agent_configs"
    __table_args__ = (UniqueConstraint("room_id", "name", name="uq_agent_configs_room_name"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    room_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    system_prompt: Mapped[str] = mapped_column(Text, default="")
    model: Mapped[str] = mapped_column(String(200))
    tools: Mapped[list[str]] = mapped_column(ARRAY(String(64)), default=list)
    #: The agent's own OpenAI-compatible endpoint and key (Fernet token); None: the server's.
    base_url: Mapped[str | None] = mapped_column(String(500))
    api_key_encrypted: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    @property
    def has_api_key(self) -> bool:
        return self.api_key_encrypted is not None


class LLMCacheEntry(Base):
    """A completed LLM call, keyed by a hash of (model, messages, output schema, parameters).

    Re-running the pipeline over unchanged inputs answers from here: 0 LLM calls.
    """

    __tablename__ = "llm_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    response: Mapped[Any] = mapped_column(JSONB)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# --- evaluation: golden questions (migration 0005) ---------------------------------------------


class GoldenQuestion(Base):
    """A question with the messages that answer it, for measuring a room's retrieval.

    The last evaluation is not stored here: the ``golden_questions_recall`` asset check records
    it in the Dagster instance (metadata of the check evaluation, per room partition).
    """

    __tablename__ = "golden_questions"
    __table_args__ = (
        CheckConstraint(
            "cardinality(gold_message_ids) >= 1", name="ck_golden_questions_gold_not_empty"
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    room_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("rooms.id", ondelete="CASCADE"), index=True
    )
    question: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(32), default="single-hop", server_default="single-hop")
    gold_message_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    #: The insertion time (clock_timestamp: questions added in one transaction keep their order).
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp()
    )


# --- transactional outbox of graphrag:events (migration 0006) ---------------------------------


class EventOutbox(Base):
    """A change event, written in the same transaction as the change it announces.

    ``realtime.outbox`` appends unsent rows to ``graphrag:events`` (the stream entry carries
    ``outbox_id``) and marks them sent; sent rows are pruned after a while. No foreign key on
    ``room_id``: a ``room.deleted`` event outlives its room.
    """

    __tablename__ = "event_outbox"
    __table_args__ = (
        # What the relay scans: only the unsent rows.
        Index("ix_event_outbox_unsent", "id", postgresql_where="sent_at IS NULL"),
        Index("ix_event_outbox_sent_at", "sent_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    room_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    event_type: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(64))
    #: The whole event (``BaseEvent.model_dump(mode="json")``).
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp()
    )
    #: Failed deliveries so far, and the last error (Redis down…).
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: The id of the entry in ``graphrag:events``.
    stream_id: Mapped[str | None] = mapped_column(String(32))
