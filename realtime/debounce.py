"""Per-room debounce of stream events: the sensor's state, kept in its cursor.

Framework-free so it is tested without Dagster. A room is *due* once it has been quiet for
``debounce`` seconds, or has waited ``max_wait`` seconds since its first pending event (a busy
room still refreshes). The cursor is a small JSON document: the last stream id read, the
pending rooms and the recently deleted ones.

A ``room.deleted`` event replaces whatever was pending for the room by a purge, due at once,
and leaves a tombstone: later events of that room (a late relay of an older change, a
duplicate) are ignored for ``TOMBSTONE_MS``, so no refresh is asked for a room that is gone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from realtime.events import BaseEvent, RoomDeleted, RoomRebuildRequested

#: How long (stream time) events of a deleted room are ignored, and how many tombstones at most.
TOMBSTONE_MS = 24 * 3600 * 1000
MAX_TOMBSTONES = 10_000


def stream_id_ms(stream_id: str) -> int:
    """Milliseconds part of a Redis stream id (``1700000000000-3`` -> 1700000000000)."""
    return int(stream_id.split("-", 1)[0])


def stream_id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class PendingRoom:
    first_ms: int  # stream time of the first pending event
    last_ms: int  # stream time of the latest pending event
    last_id: str  # stream id of the latest pending event
    events: int = 0
    rebuild: bool = False  # a full rebuild was asked (or events were lost)
    purge: bool = False  # the room was deleted


@dataclass
class DueRoom:
    room_id: str
    last_id: str
    events: int
    rebuild: bool
    waited_ms: int
    purge: bool = False


@dataclass
class DebounceState:
    last_id: str = "0-0"
    rooms: dict[str, PendingRoom] = field(default_factory=dict)
    #: Deleted rooms: stream time of their ``room.deleted``.
    deleted: dict[str, int] = field(default_factory=dict)

    # --- cursor ----------------------------------------------------------------------------

    def to_cursor(self) -> str:
        return json.dumps(
            {
                "last_id": self.last_id,
                "rooms": {k: asdict(v) for k, v in self.rooms.items()},
                "deleted": self.deleted,
            },
            sort_keys=True,
        )

    @classmethod
    def from_cursor(cls, cursor: str | None) -> DebounceState:
        if not cursor:
            return cls()
        data = json.loads(cursor)
        return cls(
            last_id=data.get("last_id", "0-0"),
            rooms={k: PendingRoom(**v) for k, v in data.get("rooms", {}).items()},
            deleted={k: int(v) for k, v in data.get("deleted", {}).items()},
        )

    # --- events ----------------------------------------------------------------------------

    def add(self, stream_id: str, event: BaseEvent) -> None:
        ms = stream_id_ms(stream_id)
        if isinstance(event, RoomDeleted):
            self.delete(event.room_id, stream_id, ms)
            return
        rebuild = isinstance(event, RoomRebuildRequested) and event.full
        self.mark(event.room_id, stream_id, ms, rebuild)

    def delete(self, room_id: str, stream_id: str, ms: int) -> None:
        """The room is gone: a purge instead of anything pending, and a tombstone."""
        if room_id not in self.deleted:
            events = self.rooms[room_id].events + 1 if room_id in self.rooms else 1
            self.rooms[room_id] = PendingRoom(ms, ms, stream_id, events, purge=True)
            self.deleted[room_id] = ms
        self._advance(stream_id)
        self._prune_tombstones(ms)

    def mark(self, room_id: str, stream_id: str, ms: int, rebuild: bool = False) -> None:
        if room_id in self.deleted:  # a late or repeated event of a deleted room
            self._advance(stream_id)
            return
        room = self.rooms.get(room_id)
        if room is None:
            self.rooms[room_id] = PendingRoom(ms, ms, stream_id, 1, rebuild)
        else:
            room.last_ms = max(room.last_ms, ms)
            room.last_id = stream_id
            room.events += 1
            room.rebuild = room.rebuild or rebuild
        self._advance(stream_id)

    def _advance(self, stream_id: str) -> None:
        if stream_id_key(stream_id) > stream_id_key(self.last_id):
            self.last_id = stream_id

    def _prune_tombstones(self, now_ms: int) -> None:
        for room_id, ms in list(self.deleted.items()):
            if now_ms - ms > TOMBSTONE_MS and room_id not in self.rooms:
                del self.deleted[room_id]
        if len(self.deleted) > MAX_TOMBSTONES:
            for room_id, _ in sorted(self.deleted.items(), key=lambda kv: kv[1])[
                : len(self.deleted) - MAX_TOMBSTONES
            ]:
                del self.deleted[room_id]

    def due(self, now_ms: int, debounce_ms: int, max_wait_ms: int) -> list[DueRoom]:
        """Rooms to refresh (or purge: at once) now, oldest first."""
        self._prune_tombstones(now_ms)
        ready = [
            DueRoom(
                room_id,
                room.last_id,
                room.events,
                room.rebuild,
                now_ms - room.first_ms,
                room.purge,
            )
            for room_id, room in self.rooms.items()
            if room.purge
            or now_ms - room.last_ms >= debounce_ms
            or now_ms - room.first_ms >= max_wait_ms
        ]
        return sorted(ready, key=lambda r: (-r.waited_ms, r.room_id))

    def done(self, room_id: str) -> None:
        self.rooms.pop(room_id, None)
