"""room_chunks.position: a stable, sortable place of each chunk in its room

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("room_chunks", sa.Column("position", sa.String(length=80), nullable=True))
    # Chunks written before keep their order; the next refresh rewrites their positions.
    op.execute("UPDATE room_chunks SET position = 'p' || lpad(ordinal::text, 12, '0')")
    op.alter_column("room_chunks", "position", nullable=False)
    op.drop_index("ix_room_chunks_room_id", table_name="room_chunks")
    op.create_index("ix_room_chunks_room_position", "room_chunks", ["room_id", "position"])


def downgrade() -> None:
    op.drop_index("ix_room_chunks_room_position", table_name="room_chunks")
    op.create_index("ix_room_chunks_room_id", "room_chunks", ["room_id"])
    op.drop_column("room_chunks", "position")
