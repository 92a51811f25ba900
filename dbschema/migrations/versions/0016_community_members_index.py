"""graph_communities: a GIN index on the members, for "the communities holding these entities"

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-10

The reports step reads only the communities a change touches (those holding a changed
entity) and the global route only the communities of its best reports; both used to read
every community of the room (thousands at 100k messages, with their member lists) and filter
in Python.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_graph_communities_members",
        "graph_communities",
        ["entity_names"],
        postgresql_using="gin",
    )


def downgrade() -> None:
    op.drop_index("ix_graph_communities_members", table_name="graph_communities")
