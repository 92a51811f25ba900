"""graph_*: per-chunk mentions and merged rows the delta graph build keeps

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05

The graph build applies the added and removed chunks' extractions to these instead of merging
every chunk again (``knowledge.indexing.graph``). A room without a ``graph_build_rooms`` row is
built in full on its next refresh, which fills them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _room() -> sa.Column:
    return sa.Column("room_id", sa.String(length=64), primary_key=True)


def upgrade() -> None:
    text_array = postgresql.ARRAY(sa.Text())
    op.create_table(
        "graph_build_rooms",
        _room(),
        sa.Column("extractor", sa.String(length=100), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("speakers", text_array, nullable=False),
        sa.Column("dirty", sa.Boolean(), nullable=False),
        sa.Column("entity_types", postgresql.JSONB(), nullable=False),
    )
    op.create_table(
        "graph_build_chunks",
        _room(),
        sa.Column("chunk_id", sa.String(length=64), primary_key=True),
        sa.Column("position", sa.String(length=80), nullable=False),
        sa.Column("merged", sa.Boolean(), nullable=False),
        sa.Column("words", text_array, nullable=False),
        sa.Column("dropped", sa.Integer(), nullable=False),
    )
    op.create_table(
        "graph_room_words",
        _room(),
        sa.Column("word", sa.Text(), primary_key=True),
        sa.Column("chunks", sa.Integer(), nullable=False),
    )
    op.create_table(
        "graph_entity_mentions",
        _room(),
        sa.Column("chunk_id", sa.String(length=64), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("position", sa.String(length=80), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
    )
    op.create_index(
        "ix_graph_entity_mentions_room_name", "graph_entity_mentions", ["room_id", "name"]
    )
    op.create_table(
        "graph_relationship_mentions",
        _room(),
        sa.Column("chunk_id", sa.String(length=64), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("position", sa.String(length=80), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
    )
    op.create_index(
        "ix_graph_relationship_mentions_room_pair",
        "graph_relationship_mentions",
        ["room_id", "source", "target"],
    )
    op.create_table(
        "graph_merged_entities",
        _room(),
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("descriptions", text_array, nullable=False),
        sa.Column("source_chunk_ids", text_array, nullable=False),
        sa.Column("mentions", sa.Integer(), nullable=False),
    )
    op.create_table(
        "graph_merged_relationships",
        _room(),
        sa.Column("source", sa.Text(), primary_key=True),
        sa.Column("target", sa.Text(), primary_key=True),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("descriptions", text_array, nullable=False),
        sa.Column("source_chunk_ids", text_array, nullable=False),
    )
    op.create_index(
        "ix_graph_merged_relationships_room_target",
        "graph_merged_relationships",
        ["room_id", "target"],
    )


def downgrade() -> None:
    op.drop_index(
        "ix_graph_merged_relationships_room_target", table_name="graph_merged_relationships"
    )
    op.drop_table("graph_merged_relationships")
    op.drop_table("graph_merged_entities")
    op.drop_index(
        "ix_graph_relationship_mentions_room_pair", table_name="graph_relationship_mentions"
    )
    op.drop_table("graph_relationship_mentions")
    op.drop_index("ix_graph_entity_mentions_room_name", table_name="graph_entity_mentions")
    op.drop_table("graph_entity_mentions")
    op.drop_table("graph_room_words")
    op.drop_table("graph_build_chunks")
    op.drop_table("graph_build_rooms")
