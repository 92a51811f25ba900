"""lexical_rooms, lexical_terms: the BM25 statistics of each room's points, kept with the postings; the postings' key covers tf and doc_len

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07

BM25 in SQL needs the room's number of points, their average length and each query term's
document frequency. Counted at query time they cost O(room) per query (a scan of the room's
points, every posting of every query term); kept by the store in the transaction that writes
the postings, they are one row each. The postings' primary key now carries ``tf`` and
``doc_len`` (``INCLUDE``): a query reads a term's postings from the index alone instead of one
heap page per posting (a common term of a 100k-message room has ~10k postings spread over the
whole table).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_KEY = "collection, room_id, term, point_id"


def upgrade() -> None:
    op.execute(
        "ALTER TABLE lexical_postings DROP CONSTRAINT lexical_postings_pkey, "
        f"ADD CONSTRAINT lexical_postings_pkey PRIMARY KEY ({_KEY}) INCLUDE (tf, doc_len)"
    )
    op.create_table(
        "lexical_rooms",
        sa.Column("collection", sa.String(length=64), primary_key=True),
        sa.Column("room_id", sa.String(length=64), primary_key=True),
        sa.Column("n_docs", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("total_terms", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_table(
        "lexical_terms",
        sa.Column("collection", sa.String(length=64), primary_key=True),
        sa.Column("room_id", sa.String(length=64), primary_key=True),
        sa.Column("term", sa.Text(), primary_key=True),
        sa.Column("df", sa.Integer(), nullable=False),
    )
    # Points written before this revision: counted once here.
    op.execute(
        """
        INSERT INTO lexical_rooms (collection, room_id, n_docs, total_terms)
        SELECT collection, room_id, count(*), coalesce(sum(n_terms), 0)
        FROM vector_points WHERE collection IN ('evidence', 'entities')
        GROUP BY collection, room_id
        """
    )
    op.execute(
        """
        INSERT INTO lexical_terms (collection, room_id, term, df)
        SELECT collection, room_id, term, count(*) FROM lexical_postings
        GROUP BY collection, room_id, term
        """
    )


def downgrade() -> None:
    op.execute(
        "ALTER TABLE lexical_postings DROP CONSTRAINT lexical_postings_pkey, "
        f"ADD CONSTRAINT lexical_postings_pkey PRIMARY KEY ({_KEY})"
    )
    op.drop_table("lexical_terms")
    op.drop_table("lexical_rooms")
