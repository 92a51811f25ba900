"""BM25 postings for the embedded vector store; entity aliases

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "vector_points",
        sa.Column("n_terms", sa.Integer(), server_default="0", nullable=False),
    )
    op.create_table(
        "lexical_postings",
        sa.Column("collection", sa.String(length=64), nullable=False),
        sa.Column("room_id", sa.String(length=64), nullable=False),
        sa.Column("term", sa.Text(), nullable=False),
        sa.Column("point_id", sa.Text(), nullable=False),
        sa.Column("tf", sa.Integer(), nullable=False),
        sa.Column("doc_len", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("collection", "room_id", "term", "point_id"),
    )
    op.create_index(
        "ix_lexical_postings_point", "lexical_postings", ["collection", "room_id", "point_id"]
    )
    op.create_table(
        "entity_aliases",
        sa.Column("room_id", sa.String(length=64), nullable=False),
        sa.Column("alias", sa.Text(), nullable=False),
        sa.Column("canonical", sa.Text(), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("source_chunk_ids", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("room_id", "alias"),
    )


def downgrade() -> None:
    op.drop_table("entity_aliases")
    op.drop_index("ix_lexical_postings_point", table_name="lexical_postings")
    op.drop_table("lexical_postings")
    op.drop_column("vector_points", "n_terms")
