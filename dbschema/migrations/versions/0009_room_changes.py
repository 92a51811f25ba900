"""room_changes: which messages and artifacts changed since each index step last ran

Triggers on ``messages``, ``artifacts`` and ``users`` write the rows in the transaction of the
change, whatever writes it (the API, an import, a test, plain SQL). They are statement-level
triggers over transition tables, so a bulk import of 100k rows costs one pass, not 100k
trigger calls; a statement that touches more than ``WHOLE_ROOM_AFTER`` messages of one room
writes one whole-room row per index step instead of one row per message (the step then
rebuilds the room, which is what so large a change costs anyway).

Also: a GIN index on ``room_chunks.message_ids`` (an edit or delete finds its chunks),
``room_chunks.copies`` (how often the chunker emitted the chunk's text: repeated texts share one
id, the first is stored), an index on ``messages (room_id, created_at, id)`` (re-chunking reads
messages in time order from a point) and one on ``messages (author_id)`` (a renamed user's
rooms). Every existing room gets a whole-room row per step, so it is re-indexed once.

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

#: The index steps that consume room_changes (``knowledge.indexing.changes``).
CONSUMERS = ("chunks", "evidence")
WHOLE_ROOM_AFTER = 1000

_CONSUMERS_SQL = ", ".join(f"('{c}')" for c in CONSUMERS)

_FUNCTIONS = f"""
CREATE FUNCTION room_changes_consumers() RETURNS TABLE (consumer text)
LANGUAGE sql IMMUTABLE AS $$ VALUES {_CONSUMERS_SQL} $$;

-- Changed messages as parallel arrays (room, message): one row per step and message, or one
-- whole-room row per step for a room with more than WHOLE_ROOM_AFTER of them. Rooms that no
-- longer exist (a room deletion cascading to its messages) get nothing.
CREATE FUNCTION room_changes_add_messages(p_rooms uuid[], p_ids bigint[]) RETURNS void
LANGUAGE sql AS $$
    WITH changed AS (
        SELECT DISTINCT u.room_id, u.message_id
        FROM unnest(p_rooms, p_ids) AS u(room_id, message_id)
    ), per_room AS (
        SELECT c.room_id, count(*) AS n FROM changed c
        WHERE EXISTS (SELECT 1 FROM rooms r WHERE r.id = c.room_id)
        GROUP BY c.room_id
    )
    INSERT INTO room_changes (room_id, consumer, message_id)
    SELECT c.room_id::text, k.consumer, c.message_id
    FROM changed c JOIN per_room p USING (room_id) CROSS JOIN room_changes_consumers() k
    WHERE p.n <= {WHOLE_ROOM_AFTER}
    UNION ALL
    SELECT p.room_id::text, k.consumer, NULL
    FROM per_room p CROSS JOIN room_changes_consumers() k
    WHERE p.n > {WHOLE_ROOM_AFTER}
$$;

CREATE FUNCTION room_changes_add_artifacts(p_rooms uuid[], p_ids uuid[]) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO room_changes (room_id, consumer, artifact_id)
    SELECT DISTINCT u.room_id::text, k.consumer, u.artifact_id::text
    FROM unnest(p_rooms, p_ids) AS u(room_id, artifact_id)
    CROSS JOIN room_changes_consumers() k
    WHERE EXISTS (SELECT 1 FROM rooms r WHERE r.id = u.room_id)
$$;

CREATE FUNCTION room_changes_messages_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM room_changes_add_messages(array_agg(room_id), array_agg(id)) FROM new_rows;
    RETURN NULL;
END $$;

CREATE FUNCTION room_changes_messages_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM room_changes_add_messages(array_agg(room_id), array_agg(id)) FROM old_rows;
    RETURN NULL;
END $$;

-- What the chunks and the evidence read of a message: its text, whether it is live, its place
-- in time, its speaker (author, or "Agent" by kind) and its room (a move changes both rooms).
CREATE FUNCTION room_changes_messages_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM room_changes_add_messages(array_agg(x.room_id), array_agg(x.id)) FROM (
        SELECT n.room_id, n.id
        FROM new_rows n JOIN old_rows o USING (id)
        WHERE (n.content, n.deleted_at, n.created_at, n.author_id, n.author_kind, n.room_id)
              IS DISTINCT FROM
              (o.content, o.deleted_at, o.created_at, o.author_id, o.author_kind, o.room_id)
        UNION ALL
        SELECT o.room_id, o.id
        FROM new_rows n JOIN old_rows o USING (id)
        WHERE n.room_id IS DISTINCT FROM o.room_id
    ) x;
    RETURN NULL;
END $$;

CREATE FUNCTION room_changes_artifacts_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM room_changes_add_artifacts(array_agg(room_id), array_agg(id)) FROM new_rows;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM room_changes_add_artifacts(array_agg(room_id), array_agg(id)) FROM old_rows;
    ELSE
        PERFORM room_changes_add_artifacts(array_agg(x.room_id), array_agg(x.id)) FROM (
            SELECT n.room_id, n.id FROM new_rows n JOIN old_rows o USING (id)
            WHERE (n.title, n.content, n.deleted_at, n.room_id)
                  IS DISTINCT FROM (o.title, o.content, o.deleted_at, o.room_id)
            UNION ALL
            SELECT o.room_id, o.id FROM new_rows n JOIN old_rows o USING (id)
            WHERE n.room_id IS DISTINCT FROM o.room_id
        ) x;
    END IF;
    RETURN NULL;
END $$;

-- A speaker's name is in the text of every chunk and evidence point of their messages: each
-- room they wrote in is re-indexed as a whole.
CREATE FUNCTION room_changes_users_renamed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO room_changes (room_id, consumer)
    SELECT r.room_id::text, k.consumer
    FROM (
        SELECT DISTINCT m.room_id
        FROM new_rows n JOIN old_rows o USING (id) JOIN messages m ON m.author_id = n.id
        WHERE n.full_name IS DISTINCT FROM o.full_name
    ) r CROSS JOIN room_changes_consumers() k;
    RETURN NULL;
END $$;

CREATE TRIGGER room_changes_messages_insert AFTER INSERT ON messages
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION room_changes_messages_inserted();
CREATE TRIGGER room_changes_messages_update AFTER UPDATE ON messages
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION room_changes_messages_updated();
CREATE TRIGGER room_changes_messages_delete AFTER DELETE ON messages
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION room_changes_messages_deleted();
CREATE TRIGGER room_changes_artifacts_insert AFTER INSERT ON artifacts
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION room_changes_artifacts_written();
CREATE TRIGGER room_changes_artifacts_update AFTER UPDATE ON artifacts
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION room_changes_artifacts_written();
CREATE TRIGGER room_changes_artifacts_delete AFTER DELETE ON artifacts
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION room_changes_artifacts_written();
CREATE TRIGGER room_changes_users_update AFTER UPDATE ON users
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION room_changes_users_renamed();
"""

_TRIGGERS = (
    ("room_changes_messages_insert", "messages"),
    ("room_changes_messages_update", "messages"),
    ("room_changes_messages_delete", "messages"),
    ("room_changes_artifacts_insert", "artifacts"),
    ("room_changes_artifacts_update", "artifacts"),
    ("room_changes_artifacts_delete", "artifacts"),
    ("room_changes_users_update", "users"),
)
_FUNCTION_NAMES = (
    "room_changes_users_renamed()",
    "room_changes_artifacts_written()",
    "room_changes_messages_updated()",
    "room_changes_messages_deleted()",
    "room_changes_messages_inserted()",
    "room_changes_add_artifacts(uuid[], uuid[])",
    "room_changes_add_messages(uuid[], bigint[])",
    "room_changes_consumers()",
)


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
    op.add_column(
        "room_chunks",
        sa.Column("copies", sa.Integer(), nullable=False, server_default=sa.text("1")),
    )
    op.create_index(
        "ix_room_chunks_message_ids", "room_chunks", ["message_ids"], postgresql_using="gin"
    )
    op.create_index(
        "ix_room_chunks_copies",
        "room_chunks",
        ["room_id"],
        postgresql_where=sa.text("copies > 1"),
    )
    op.create_index("ix_messages_room_created", "messages", ["room_id", "created_at", "id"])
    op.create_index("ix_messages_author_id", "messages", ["author_id"])
    op.execute(_FUNCTIONS)
    # Every room indexed so far is re-indexed once, as a whole.
    op.execute(
        "INSERT INTO room_changes (room_id, consumer) "
        "SELECT r.id::text, k.consumer FROM rooms r CROSS JOIN room_changes_consumers() k"
    )


def downgrade() -> None:
    for trigger, table in _TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
    for function in _FUNCTION_NAMES:
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    op.drop_index("ix_messages_author_id", table_name="messages")
    op.drop_index("ix_messages_room_created", table_name="messages")
    op.drop_index("ix_room_chunks_copies", table_name="room_chunks")
    op.drop_index("ix_room_chunks_message_ids", table_name="room_chunks")
    op.drop_column("room_chunks", "copies")
    op.drop_index("ix_room_changes_room_consumer", table_name="room_changes")
    op.drop_table("room_changes")
