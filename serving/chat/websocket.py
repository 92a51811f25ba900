"""``/rooms/{room_id}/ws``: the room's live feed.

The handshake is authenticated from the access cookie and checked (room membership, Origin)
*before* it is accepted; a refused handshake gets an HTTP 401 / 403 / 404 with the usual error
body. Once open, the server sends JSON text frames:

- ``{"type": "message.created" | "message.edited", "message": {...}}``,
  ``{"type": "message.deleted", "message_id": n}``, ``artifact.changed``, ``artifact.deleted``,
  ``member.added``, ``member.removed``;
- on connect with ``after=<id>``: the messages newer than ``id`` from the database first
  (``"replay": true``), then ``{"type": "ready", "last_message_id": …}``; without ``after``
  just ``ready``. Frames that arrive while replaying are not lost nor duplicated;
- ``{"type": "ping"}`` every ``WS_HEARTBEAT_SECONDS``; the client may send ``{"type": "ping"}``
  and gets ``{"type": "pong"}``.

A client that cannot keep up (its queue is full) is closed with 1013: it reconnects with
``after=<last id it saw>``. The socket closes with 4401 when the access token expires and 4403
when the user is removed from the room.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from knowledge import rooms
from knowledge.errors import DomainError
from serving.auth.security import ACCESS_COOKIE
from serving.auth.service import authenticate
from serving.chat.broadcast import Connection, Frame
from serving.chat.schemas import MAX_ID, MessageOut
from serving.errors import ApiError, error_body, status_for
from serving.permissions import Action, Permissions
from serving.state import AppState

log = logging.getLogger(__name__)

router = APIRouter(tags=["chat"])

CLOSE_TOKEN_EXPIRED = 4401


def origin_allowed(origin: str, websocket: WebSocket, allowed: list[str]) -> bool:
    origin = origin.rstrip("/")
    if origin in allowed:
        return True
    # Same origin as the API itself (the SPA served from the API's host).
    host = websocket.headers.get("host")
    if host is None:
        return False
    return origin in (f"http://{host}", f"https://{host}")


async def _deny(websocket: WebSocket, status: int, message: str, code: str | None = None) -> None:
    await websocket.send_denial_response(JSONResponse(error_body(status, message, code), status))


@router.websocket("/rooms/{room_id}/ws")
async def room_socket(
    websocket: WebSocket,
    room_id: uuid.UUID,
    after: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
) -> None:
    state: AppState = websocket.app.state.coagent
    settings = state.settings
    origin = websocket.headers.get("origin")
    if origin is not None and not origin_allowed(origin, websocket, settings.cors_origins):
        await _deny(websocket, 403, f"origin {origin!r} is not allowed", "origin_not_allowed")
        return
    token = websocket.cookies.get(ACCESS_COOKIE)
    if not token:
        await _deny(websocket, 401, "log in first (no access token cookie)")
        return
    async with state.session_factory() as session:
        try:
            user, claims = await authenticate(session, settings, token)
            room = await rooms.get_room(session, room_id)
            await Permissions(session).check(user, Action.ROOM_READ, room)
        except (ApiError, DomainError) as error:
            code = error.code if isinstance(error, ApiError) else None
            await _deny(websocket, status_for(error), str(error), code)
            return

    await websocket.accept()
    conn = Connection(user_id=user.id, queue_size=settings.ws_queue_size)
    await state.broadcaster.join(room_id, conn)
    tasks: list[asyncio.Task[object]] = []
    try:
        replayed_up_to = await _replay(websocket, state, room_id, after)
        tasks = [
            asyncio.create_task(_send(websocket, conn, replayed_up_to)),
            asyncio.create_task(_receive(websocket, conn)),
            asyncio.create_task(_heartbeat(conn, settings.ws_heartbeat_seconds, claims.expires_at)),
            asyncio.create_task(conn.closed.wait()),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    except (WebSocketDisconnect, RuntimeError, OSError):
        conn.close(1000, "")
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await state.broadcaster.leave(room_id, conn)
        if conn.closed.is_set() and conn.close_code != 1000:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    websocket.close(conn.close_code, conn.close_reason[:120]), timeout=2
                )


async def _replay(
    websocket: WebSocket, state: AppState, room_id: uuid.UUID, after: int | None
) -> int | None:
    """Send the messages missed since ``after`` (already subscribed, so nothing falls in
    between), then ``ready``. Returns the last replayed id."""
    last_id = after
    complete = True
    if after is not None:
        async with state.session_factory() as session:
            records, has_more = await rooms.list_messages(
                session, room_id, state.settings.ws_replay_limit, after=after
            )
        for record in records:
            frame = {
                "type": "message.created",
                "room_id": str(room_id),
                "message": MessageOut.from_record(record).model_dump(mode="json"),
                "replay": True,
            }
            await websocket.send_text(json.dumps(frame))
            last_id = record.id
        complete = not has_more
    await websocket.send_text(
        json.dumps(
            {
                "type": "ready",
                "room_id": str(room_id),
                "last_message_id": last_id,
                # False: more than WS_REPLAY_LIMIT were missed; page through GET …/messages.
                "replay_complete": complete,
            }
        )
    )
    return last_id


async def _send(websocket: WebSocket, conn: Connection, replayed_up_to: int | None) -> None:
    while True:
        frame = await conn.queue.get()
        if (
            replayed_up_to is not None
            and frame.type == "message.created"
            and isinstance(frame.message_id, int)
            and frame.message_id <= replayed_up_to
        ):
            continue  # already sent by the replay
        await websocket.send_text(frame.raw)


async def _receive(websocket: WebSocket, conn: Connection) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if not text:
            continue  # binary frames are ignored
        try:
            data = json.loads(text)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("type") == "ping":
            conn.offer(Frame(type="pong", raw=json.dumps({"type": "pong", "ts": time.time()})))


async def _heartbeat(conn: Connection, period: float, expires_at: float) -> None:
    while True:
        await asyncio.sleep(min(period, max(expires_at - time.time(), 0.05)))
        if time.time() >= expires_at:
            conn.close(CLOSE_TOKEN_EXPIRED, "the access token expired: refresh and reconnect")
            return
        conn.offer(Frame(type="ping", raw=json.dumps({"type": "ping", "ts": time.time()})))
