"""graph_merged_entities.type_counts: the counted types of a merged entity's mentions

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02

With the type counts stored, a merged entity is the whole state of the fold of its mentions,
so the delta graph build folds a refresh's new mentions into it (and takes the mentions of
re-chunked tail chunks back out) instead of reading every mention of a busy entity again.
Rows written before this revision have none and are merged from their mentions once.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("graph_merged_entities", sa.Column("type_counts", JSONB, nullable=True))


def downgrade() -> None:
    op.drop_column("graph_merged_entities", "type_counts")
