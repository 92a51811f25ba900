"""Room fan-out across API processes through Redis pub/sub.

Every change is PUBLISHed on the room's channel; each process subscribes to the channels of
the rooms it has WebSocket clients in and hands each frame to every local connection's bounded
queue. A connection whose queue is full (a slow client) is dropped; the room never waits.

Control messages (``close`` a user's / a session's / a room's sockets, ``recheck`` a user's
access) go on one channel every process subscribes to at start: when a session ends, a user is
disabled, removed or a room deleted, every API process closes the sockets concerned at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "coagent:room:"
# Keeps the pub/sub connection open (and the reader running) while no room is subscribed.
CONTROL_CHANNEL = "coagent:control"
# Close codes sent to WebSocket clients.
CLOSE_SLOW_CLIENT = 1013  # "try again later": reconnect with after=<last id>
CLOSE_SESSION_ENDED = 4401  # token expired, logged out, session revoked, account disabled
CLOSE_REMOVED = 4403  # no longer allowed to read the room
CLOSE_ROOM_DELETED = 4404


@dataclass(frozen=True)
class Frame:
    """One JSON text frame, parsed once per process, sent as is to every connection."""

    type: str
    raw: str
    message_id: int | None = None
    user_id: str | None = None

    @classmethod
    def parse(cls, raw: str) -> Frame:
        data = json.loads(raw)
        message = data.get("message") or {}
        return cls(
            type=str(data.get("type", "")),
            raw=raw,
            message_id=message.get("id") if isinstance(message, dict) else None,
            user_id=data.get("user_id"),
        )


@dataclass(eq=False)
class Connection:
    """A local WebSocket client: its user and bounded outbound queue."""

    user_id: uuid.UUID
    queue_size: int
    session_id: uuid.UUID | None = None
    queue: asyncio.Queue[Frame] = field(init=False)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set by a ``recheck`` control message: the socket re-checks its access to the room.
    recheck: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int = 1000
    close_reason: str = ""

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.queue_size)

    def offer(self, frame: Frame) -> None:
        if self.closed.is_set():
            return
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.close(CLOSE_SLOW_CLIENT, "too slow: reconnect with after=<last message id>")

    def close(self, code: int, reason: str) -> None:
        if not self.closed.is_set():
            self.close_code, self.close_reason = code, reason
            self.closed.set()


class Broadcaster:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._pubsub = redis.pubsub()
        self._rooms: dict[str, set[Connection]] = {}
        self._users: dict[str, set[Connection]] = {}
        self._confirmed: dict[str, asyncio.Event] = {}
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        confirmed = asyncio.Event()
        self._confirmed[CONTROL_CHANNEL] = confirmed
        await self._pubsub.subscribe(CONTROL_CHANNEL)
        self._reader = asyncio.create_task(self._read(), name="broadcast-reader")
        await asyncio.wait_for(confirmed.wait(), timeout=10)

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        for conns in self._rooms.values():
            for conn in conns:
                conn.close(1001, "server shutting down")
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()

    @staticmethod
    def channel(room_id: uuid.UUID | str) -> str:
        return f"{CHANNEL_PREFIX}{room_id}"

    async def publish(self, room_id: uuid.UUID | str, payload: dict[str, Any]) -> None:
        """Send a frame to every client of the room, in every API process."""
        await self.redis.publish(self.channel(room_id), json.dumps(payload, default=str))

    # control: close or re-check sockets in every process

    async def close_sockets(
        self,
        code: int,
        reason: str,
        *,
        user_id: uuid.UUID | str | None = None,
        session_id: uuid.UUID | str | None = None,
        room_id: uuid.UUID | str | None = None,
        keep_session_id: uuid.UUID | str | None = None,
    ) -> None:
        """Close, in every API process, the sockets of a user (but ``keep_session_id``'s), of
        one login session (``user_id`` and ``session_id``), of a room, or of a user in a room.
        Call it after the change is committed; never raises (a Redis failure is logged)."""
        if user_id is None and room_id is None:
            raise ValueError("close_sockets needs a user_id or a room_id")
        await self._control(
            {
                "op": "close",
                "code": code,
                "reason": reason,
                "user_id": _opt(user_id),
                "session_id": _opt(session_id),
                "room_id": _opt(room_id),
                "keep_session_id": _opt(keep_session_id),
            }
        )

    async def recheck_sockets(
        self, user_id: uuid.UUID | str, room_id: uuid.UUID | str | None = None
    ) -> None:
        """Have the user's sockets (in one room, or in all) re-check their access now; those
        that lost it close. Never raises."""
        await self._control({"op": "recheck", "user_id": str(user_id), "room_id": _opt(room_id)})

    async def _control(self, message: dict[str, Any]) -> None:
        # Applied here at once (even if Redis is down), and by every other process on receipt.
        self._apply_control(message)
        try:
            await self.redis.publish(CONTROL_CHANNEL, json.dumps(message))
        except (RedisError, OSError) as error:
            log.warning("could not publish %s to the other API processes (%s)", message, error)

    def _apply_control(self, message: dict[str, Any]) -> None:
        user_id, room_id = message.get("user_id"), message.get("room_id")
        if room_id is not None:
            targets = set(self._rooms.get(self.channel(room_id), ()))
            if user_id is not None:
                targets = {conn for conn in targets if str(conn.user_id) == user_id}
        elif user_id is not None:
            targets = set(self._users.get(user_id, ()))
        else:
            return
        session_id, keep = message.get("session_id"), message.get("keep_session_id")
        for conn in targets:
            if session_id is not None and str(conn.session_id) != session_id:
                continue
            if keep is not None and str(conn.session_id) == keep:
                continue
            if message.get("op") == "close":
                conn.close(int(message.get("code") or 1000), str(message.get("reason") or ""))
            elif message.get("op") == "recheck":
                conn.recheck.set()

    async def join(self, room_id: uuid.UUID | str, conn: Connection) -> None:
        """Register a connection; returns once the room's channel is subscribed."""
        channel = self.channel(room_id)
        async with self._lock:
            self._users.setdefault(str(conn.user_id), set()).add(conn)
            conns = self._rooms.setdefault(channel, set())
            conns.add(conn)
            if len(conns) == 1:
                self._confirmed[channel] = asyncio.Event()
                await self._pubsub.subscribe(channel)
            waiter = self._confirmed[channel]
        await asyncio.wait_for(waiter.wait(), timeout=10)

    async def leave(self, room_id: uuid.UUID | str, conn: Connection) -> None:
        channel = self.channel(room_id)
        async with self._lock:
            of_user = self._users.get(str(conn.user_id))
            if of_user is not None:
                of_user.discard(conn)
                if not of_user:
                    del self._users[str(conn.user_id)]
            conns = self._rooms.get(channel)
            if conns is None:
                return
            conns.discard(conn)
            if not conns:
                del self._rooms[channel]
                self._confirmed.pop(channel, None)
                with contextlib.suppress(RedisError, OSError):
                    await self._pubsub.unsubscribe(channel)

    def local_connections(self, room_id: uuid.UUID | str | None = None) -> int:
        """Open WebSockets of this process (in one room, or in all)."""
        if room_id is None:
            return sum(len(conns) for conns in self._rooms.values())
        return len(self._rooms.get(self.channel(room_id), ()))

    async def _read(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as error:
                log.warning("pub/sub connection lost (%s); reconnecting", error)
                await asyncio.sleep(0.5)
                continue
            if message is None:
                continue
            kind = message.get("type")
            channel = _text(message.get("channel"))
            if kind == "subscribe":
                waiter = self._confirmed.get(channel)
                if waiter is not None:
                    waiter.set()
            elif kind == "message" and channel == CONTROL_CHANNEL:
                self._on_control(_text(message.get("data")))
            elif kind == "message":
                self._dispatch(channel, _text(message.get("data")))

    def _on_control(self, raw: str) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            log.warning("dropping a malformed control message")
            return
        try:
            self._apply_control(message)
        except (ValueError, TypeError):  # never let one bad message stop the reader
            log.warning("dropping a malformed control message")

    def _dispatch(self, channel: str, raw: str) -> None:
        conns = self._rooms.get(channel)
        if not conns:
            return
        try:
            frame = Frame.parse(raw)
        except (ValueError, TypeError):
            log.warning("dropping a malformed frame on %s", channel)
            return
        for conn in list(conns):
            conn.offer(frame)


def _opt(value: uuid.UUID | str | None) -> str | None:
    return None if value is None else str(value)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
