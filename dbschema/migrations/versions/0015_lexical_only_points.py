"""vector_points: a point may have no dense vector (lexical-only chunks, evidence, entities)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-09

With the offline hashing embedder nothing searches the chunk, evidence and entity
collections by vector (DESIGN.md: offline retrieval is lexical), yet inserting each message
into the HNSW index was most of a full build (7 of 11 s of the evidence step at 10k
messages). Such points now store no embedding (NULL, ``dim`` 0): the partial HNSW indexes
(``WHERE dim = N``) leave them out, and BM25 reads their postings as before.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("vector_points", "embedding", nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM vector_points WHERE embedding IS NULL")
    op.alter_column("vector_points", "embedding", nullable=False)
