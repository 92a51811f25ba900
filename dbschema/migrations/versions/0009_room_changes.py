"""room_changes: which messages and artifacts changed since each index step last ran

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "room_changes",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("room_id", sa.String(length=64), nullable=False),
        # The index step that has yet to see the change ("chunks", "evidence").
        sa.Column("consumer", sa.String(length=20), nullable=False),
        # Both null: the whole room (a rename, a migration, a rebuild request).
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("artifact_id", sa.String(length=64), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    )
    op.create_index("ix_room_changes_room_consumer", "room_changes", ["room_id", "consumer", "id"])


def downgrade() -> None:
    op.drop_index("ix_room_changes_room_consumer", table_name="room_changes")
    op.drop_table("room_changes")
