"""agent replies (reply_to, meta) and per-agent endpoints with encrypted keys

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("reply_to", sa.BigInteger(), nullable=True))
    op.add_column(
        "messages", sa.Column("meta", postgresql.JSONB(astext_type=sa.Text()), nullable=True)
    )
    op.create_index(
        "uq_messages_agent_reply",
        "messages",
        ["reply_to", "author_id"],
        unique=True,
        postgresql_where="reply_to IS NOT NULL",
    )
    op.add_column("agent_configs", sa.Column("base_url", sa.String(length=500), nullable=True))
    op.add_column("agent_configs", sa.Column("api_key_encrypted", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("agent_configs", "api_key_encrypted")
    op.drop_column("agent_configs", "base_url")
    op.drop_index("uq_messages_agent_reply", table_name="messages")
    op.drop_column("messages", "meta")
    op.drop_column("messages", "reply_to")
