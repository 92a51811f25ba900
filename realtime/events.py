"""Events appended to the Redis stream ``graphrag:events`` after each committed change.

Every stream entry has flat string fields, so a consumer can filter without parsing JSON:

- ``type``: the event type (``message.created``, …);
- ``room_id``: the room (the Dagster partition key);
- ``ts``: ISO-8601 UTC time of the change;
- ``data``: the whole event as JSON (``parse_event`` turns an entry back into a model);
- ``outbox_id``: the ``event_outbox`` row it was relayed from (``realtime.outbox``), so a
  consumer can tell a re-sent entry from a new one (absent on entries appended directly).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

#: The stream every producer appends to and the Dagster sensor reads.
STREAM = "graphrag:events"


def _now() -> datetime:
    return datetime.now(UTC)


class BaseEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: str
    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    room_id: str
    ts: datetime = Field(default_factory=_now)
    #: Who caused it (a user id), when known.
    actor_id: str | None = None

    def to_fields(self) -> dict[str, str]:
        """The stream entry's fields."""
        return {
            "type": self.type,
            "room_id": self.room_id,
            "ts": self.ts.isoformat(),
            "data": self.model_dump_json(),
        }


class MessageCreated(BaseEvent):
    type: Literal["message.created"] = "message.created"
    message_id: int


class MessageEdited(BaseEvent):
    type: Literal["message.edited"] = "message.edited"
    message_id: int


class MessageDeleted(BaseEvent):
    type: Literal["message.deleted"] = "message.deleted"
    message_id: int


class ArtifactChanged(BaseEvent):
    """An artifact was created or got a new version."""

    type: Literal["artifact.changed"] = "artifact.changed"
    artifact_id: str
    version: int


class ArtifactDeleted(BaseEvent):
    type: Literal["artifact.deleted"] = "artifact.deleted"
    artifact_id: str


class RoomRebuildRequested(BaseEvent):
    """Someone asked for the room's graph to be refreshed (``full``: wiped and rebuilt)."""

    type: Literal["room.rebuild_requested"] = "room.rebuild_requested"
    full: bool = False


class RoomDeleted(BaseEvent):
    """The room is gone (deleted, or its course was): purge everything derived from it."""

    type: Literal["room.deleted"] = "room.deleted"


Event = Annotated[
    MessageCreated
    | MessageEdited
    | MessageDeleted
    | ArtifactChanged
    | ArtifactDeleted
    | RoomRebuildRequested
    | RoomDeleted,
    Field(discriminator="type"),
]

_adapter: TypeAdapter[Event] = TypeAdapter(Event)

EVENT_TYPES: tuple[str, ...] = (
    "message.created",
    "message.edited",
    "message.deleted",
    "artifact.changed",
    "artifact.deleted",
    "room.rebuild_requested",
    "room.deleted",
)


def parse_event(fields: Mapping[str | bytes, str | bytes]) -> Event:
    """The event of a stream entry (fields as returned by ``XRANGE``, bytes or str)."""
    data = fields.get("data", fields.get(b"data"))
    if data is None:
        raise ValueError("stream entry has no 'data' field")
    return _adapter.validate_json(data)


def event_from_payload(payload: Mapping[str, object]) -> Event:
    """The event of a stored ``BaseEvent.model_dump(mode="json")`` (an outbox row's payload)."""
    return _adapter.validate_python(payload)
