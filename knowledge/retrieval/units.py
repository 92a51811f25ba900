"""Units of evidence: messages and artifact passages, loaded from the relational store.

A unit id is ``m:<message id>`` or ``a:<chunk id>`` (the evidence index's point ids). Loading
always goes back to the source tables, filtered by room and liveness, so a unit that no longer
exists (deleted since the last refresh) or belongs to another room is never returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text

from knowledge.chat import AGENT_SPEAKER, room_speakers
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


_MESSAGES_SQL = text(
    """
    SELECT m.id, m.content, m.created_at, u.full_name, m.author_kind::text,
           prev.id AS previous_id, nxt.id AS next_id
    FROM messages m
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
    WHERE m.room_id = :room_id AND m.id = ANY(:ids) AND m.deleted_at IS NULL
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


async def load_units(platform: Platform, room_id: str, unit_ids: Sequence[str]) -> dict[str, Unit]:
    """The live units of the room among ``unit_ids`` (others are silently absent)."""
    room_uuid = parse_room_id(room_id)
    message_ids = sorted({mid for u in unit_ids if (mid := message_id_of(u)) is not None})
    chunk_ids = sorted({u[2:] for u in unit_ids if u.startswith("a:")})
    out: dict[str, Unit] = {}
    async with platform.session() as session:
        if message_ids:
            rows = await session.execute(_MESSAGES_SQL, {"room_id": room_uuid, "ids": message_ids})
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


async def room_timeline(platform: Platform, room_id: str) -> tuple[datetime | None, list[str]]:
    """The time of the room's last live message and the display names of its speakers."""
    room_uuid = parse_room_id(room_id)
    async with platform.session() as session:
        last = (
            await session.execute(
                text(
                    "SELECT max(created_at) FROM messages WHERE room_id = :r AND deleted_at IS NULL"
                ),
                {"r": room_uuid},
            )
        ).scalar()
        names = await room_speakers(session, room_uuid)
    return last, names
