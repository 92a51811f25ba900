"""Units of evidence: messages and artifact passages, loaded from the relational store.

A unit id is ``m:<message id>`` or ``a:<chunk id>`` (the evidence index's point ids). Loading
always goes back to the source tables, filtered by room and liveness, so a unit that no longer
exists (deleted since the last refresh) or belongs to another room is never returned.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text

from knowledge.chat import AGENT_SPEAKER
from knowledge.errors import NotFoundError
from knowledge.indexing import message_unit_id, passage_unit_id
from knowledge.platform import Platform
from knowledge.rooms import parse_room_id

MESSAGE = "message"
ARTIFACT = "artifact"


@dataclass(frozen=True)
class Unit:
    unit_id: str
    kind: str  # MESSAGE or ARTIFACT
    ref: str  # the message id, or the artifact id of the passage
    speaker: str | None
    time: datetime | None
    text: str
    #: Neighbouring turns (message ids), for context: the previous and the next live message.
    previous_id: int | None = None
    next_id: int | None = None


def message_id_of(unit_id: str) -> int | None:
    if unit_id.startswith("m:"):
        try:
            return int(unit_id[2:])
        except ValueError:
            return None
    return None


#: Driven by the ids (one primary-key probe each), so the plan does not depend on the table's
#: statistics: a bulk-loaded room has none, and a room-wide scan filtered by id read every
#: message of the room.
_MESSAGES_SQL = text(
    """
    WITH asked AS MATERIALIZED (
        SELECT m.id FROM unnest(CAST(:ids AS bigint[])) AS x(id) CROSS JOIN LATERAL (
            SELECT id FROM messages
            WHERE id = x.id AND room_id = :room_id AND deleted_at IS NULL OFFSET 0
        ) m
    ), wanted AS MATERIALIZED (
        SELECT id FROM asked
        UNION
        -- The neighbouring turns too, when asked for (one round trip, not two).
        SELECT t.id FROM asked a CROSS JOIN LATERAL (
            (SELECT p.id FROM messages p
             WHERE p.room_id = :room_id AND p.id < a.id AND p.deleted_at IS NULL
             ORDER BY p.id DESC LIMIT 1)
            UNION ALL
            (SELECT n.id FROM messages n
             WHERE n.room_id = :room_id AND n.id > a.id AND n.deleted_at IS NULL
             ORDER BY n.id LIMIT 1)
        ) t
        WHERE :neighbours
    )
    SELECT m.id, m.content, m.created_at, u.full_name, m.author_kind::text,
           prev.id AS previous_id, nxt.id AS next_id
    FROM wanted w
    CROSS JOIN LATERAL (
        SELECT * FROM messages
        WHERE id = w.id AND room_id = :room_id AND deleted_at IS NULL
        OFFSET 0  -- a fence: one probe per id
    ) m
    LEFT JOIN users u ON u.id = m.author_id
    LEFT JOIN LATERAL (
        SELECT p.id FROM messages p
        WHERE p.room_id = m.room_id AND p.id < m.id AND p.deleted_at IS NULL
        ORDER BY p.id DESC LIMIT 1
    ) prev ON true
    LEFT JOIN LATERAL (
        SELECT n.id FROM messages n
        WHERE n.room_id = m.room_id AND n.id > m.id AND n.deleted_at IS NULL
        ORDER BY n.id LIMIT 1
    ) nxt ON true
    """
)

_PASSAGES_SQL = text(
    """
    SELECT c.id, c.artifact_id, c.text, a.updated_at
    FROM room_chunks c
    JOIN artifacts a ON a.id::text = c.artifact_id AND a.deleted_at IS NULL
    WHERE c.room_id = :room_key AND c.id = ANY(:ids) AND a.room_id = :room_id
    """
)


async def load_units(
    platform: Platform, room_id: str, unit_ids: Sequence[str], neighbours: bool = False
) -> dict[str, Unit]:
    """The live units of the room among ``unit_ids`` (others are silently absent), and with
    ``neighbours`` the messages' neighbouring turns too."""
    room_uuid = parse_room_id(room_id)
    message_ids = sorted({mid for u in unit_ids if (mid := message_id_of(u)) is not None})
    chunk_ids = sorted({u[2:] for u in unit_ids if u.startswith("a:")})
    out: dict[str, Unit] = {}
    async with platform.session() as session:
        if message_ids:
            rows = await session.execute(
                _MESSAGES_SQL, {"room_id": room_uuid, "ids": message_ids, "neighbours": neighbours}
            )
            for mid, content, created_at, name, kind, previous_id, next_id in rows:
                uid = message_unit_id(mid)
                out[uid] = Unit(
                    unit_id=uid,
                    kind=MESSAGE,
                    ref=str(mid),
                    speaker=name or (AGENT_SPEAKER if kind == "agent" else "Unknown"),
                    time=created_at,
                    text=content,
                    previous_id=previous_id,
                    next_id=next_id,
                )
        if chunk_ids:
            rows = await session.execute(
                _PASSAGES_SQL, {"room_key": str(room_uuid), "room_id": room_uuid, "ids": chunk_ids}
            )
            for chunk_id, artifact_id, body, updated_at in rows:
                uid = passage_unit_id(chunk_id)
                out[uid] = Unit(
                    unit_id=uid,
                    kind=ARTIFACT,
                    ref=str(artifact_id),
                    speaker=None,
                    time=updated_at,
                    text=body,
                )
    return out


@dataclass(frozen=True)
class RoomProfile:
    """What a question is planned against: the room's timeline end, speakers and aliases."""

    #: The time of the room's last live message.
    last_time: datetime | None
    #: Display names of the room's members (the people and agents who speak in it), sorted.
    speakers: list[str]
    #: alias -> canonical entity name (written by entity resolution).
    aliases: dict[str, str]


_PROFILE_SQL = text(
    """
    SELECT
        (SELECT max(created_at) FROM messages WHERE room_id = r.id AND deleted_at IS NULL),
        ARRAY(
            SELECT DISTINCT u.full_name FROM room_members rm JOIN users u ON u.id = rm.user_id
            WHERE rm.room_id = r.id AND u.full_name <> ''
        ),
        (SELECT coalesce(json_object_agg(a.alias, a.canonical), '{}'::json)
         FROM entity_aliases a WHERE a.room_id = :room_key)
    FROM rooms r WHERE r.id = :room_id
    """
)


async def room_profile(platform: Platform, room_id: str) -> RoomProfile:
    """The room's profile, in one round trip (every question reads it); a room that does not
    exist is a ``NotFoundError``."""
    room_uuid = parse_room_id(room_id)
    async with platform.session() as session:
        row = (
            await session.execute(_PROFILE_SQL, {"room_id": room_uuid, "room_key": room_id})
        ).first()
    if row is None:
        raise NotFoundError(f"room {room_id} does not exist")
    last, speakers, aliases = row
    if isinstance(aliases, str):
        aliases = json.loads(aliases)
    return RoomProfile(last, sorted(name for name in speakers if name), dict(aliases))
