"""vector_points: indexes on the payload's speaker and time, for filtered BM25 and dense search

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

A filtered search ("what did Liam say about …", "… last week") first finds the points its
filter allows, then joins their scores. Without these indexes that meant reading the row of
every scored point (every posting of a common term) to test its payload.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The expressions are the ones pgvector_store._filter_sql writes (the planner matches them).
    op.execute(
        "CREATE INDEX ix_vector_points_speaker ON vector_points "
        "(collection, room_id, (payload->>'speaker')) INCLUDE (point_id)"
    )
    op.execute(
        "CREATE INDEX ix_vector_points_ts ON vector_points "
        "(collection, room_id, ((payload->>'ts')::float)) INCLUDE (point_id)"
    )


def downgrade() -> None:
    op.drop_index("ix_vector_points_ts", table_name="vector_points")
    op.drop_index("ix_vector_points_speaker", table_name="vector_points")
