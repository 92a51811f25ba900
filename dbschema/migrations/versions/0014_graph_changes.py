"""graph_changes: the entities and communities the reports step has yet to see

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07

Without it the reports step read the whole graph and hashed every community after any change
(2 s at 100k messages for one new message, most refreshes rewriting no report at all).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "graph_changes",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("room_id", sa.String(length=64), nullable=False),
        sa.Column("entity_name", sa.Text(), nullable=True),
        sa.Column("community_id", sa.String(length=64), nullable=True),
        sa.Column(
            "changed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_index("ix_graph_changes_room", "graph_changes", ["room_id", "id"])
    # Rooms built before: their next reports run hashes every community (a whole-room row).
    op.execute("INSERT INTO graph_changes (room_id) SELECT DISTINCT room_id FROM graph_communities")


def downgrade() -> None:
    op.drop_index("ix_graph_changes_room", table_name="graph_changes")
    op.drop_table("graph_changes")
