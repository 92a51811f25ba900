"""lexical_terms.version: a term's postings version, for the readers' postings cache

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02

Every write that adds, removes or rewrites a posting of a term gives the term a new version
from one sequence (never reused, so a term deleted and created again cannot match an old
version). The vector store keeps the postings of the terms it has scored in memory and reads a
term's postings again only when its version moved: a query then reads one statistics row per
term instead of every posting of its common terms.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE SEQUENCE lexical_term_version")
    op.add_column(
        "lexical_terms",
        sa.Column(
            "version",
            sa.BigInteger,
            server_default=sa.text("nextval('lexical_term_version')"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("lexical_terms", "version")
    op.execute("DROP SEQUENCE lexical_term_version")
