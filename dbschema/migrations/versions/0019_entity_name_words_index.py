"""graph_entities: a GIN index on the words of each name

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02

A question reads the entity names its words can name ("Zenobia" names "zenobia of
palmyra") instead of every name of the room: 12.7k names were read for each question of a
room of 100k messages.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX ix_graph_entities_name_words ON graph_entities "
        "USING gin (string_to_array(name, ' '))"
    )


def downgrade() -> None:
    op.drop_index("ix_graph_entities_name_words", table_name="graph_entities")
