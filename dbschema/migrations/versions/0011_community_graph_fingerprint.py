"""graph_communities.graph_fingerprint, drift, baseline_weight: the graph the communities were detected on

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Null for communities detected before: the next detection runs (warm-started) and sets it.
    op.add_column(
        "graph_communities", sa.Column("graph_fingerprint", sa.String(length=64), nullable=True)
    )
    op.add_column(
        "graph_communities",
        sa.Column("drift", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column(
        "graph_communities",
        sa.Column("baseline_weight", sa.Float(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_column("graph_communities", "baseline_weight")
    op.drop_column("graph_communities", "drift")
    op.drop_column("graph_communities", "graph_fingerprint")
