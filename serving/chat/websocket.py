"""``/rooms/{room_id}/ws``: the room's live feed.

The handshake is authenticated from the access cookie and checked (room membership, Origin)
*before* it is accepted; a refused handshake is closed before it is accepted, which the server
answers with an HTTP 403 (the reason is logged at INFO; a client that wants it asks
``GET /rooms/{room_id}``). Once open, the server sends JSON text frames:

- ``{"type": "message.created" | "message.edited", "message": {...}}``,
  ``{"type": "message.deleted", "message_id": n}``, ``artifact.changed``, ``artifact.deleted``,
  ``member.added``, ``member.removed``;
- on connect with ``after=<id>``: the messages newer than ``id`` from the database first
  (``"replay": true``), then ``{"type": "ready", "last_message_id": …}``; without ``after``
  just ``ready``. Frames that arrive while replaying are not lost nor duplicated;
- ``{"type": "ping"}`` every ``WS_HEARTBEAT_SECONDS``; the client may send ``{"type": "ping"}``
  and gets ``{"type": "pong"}``.

A client that cannot keep up (its queue is full) is closed with 1013: it reconnects with
``after=<last id it saw>``. The socket closes with 4401 when the access token expires or the
login session ends (logout, revocation, password change elsewhere, account disabled or
deleted), 4403 when the user may no longer read the room (removed from it or from its
course), 4404 when the room (or its course) is deleted: in every API process, through the
broadcaster's control messages.
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

from dbschema.models import User
from knowledge import chat, rooms
from knowledge.errors import DomainError
from serving.auth.security import ACCESS_COOKIE, decode_access_token
from serving.auth.service import authenticate
from serving.chat.broadcast import (
    CLOSE_REMOVED,
    CLOSE_ROOM_DELETED,
    CLOSE_SESSION_ENDED,
    Connection,
    Frame,
)
from serving.chat.schemas import MAX_ID, MessageOut
from serving.errors import ApiError, status_for
from serving.permissions import Action, Permissions
from serving.state import AppState

log = logging.getLogger(__name__)

router = APIRouter(tags=["chat"])

CLOSE_TOKEN_EXPIRED = CLOSE_SESSION_ENDED
#: Close code of a refused handshake (sent before accepting: the client sees an HTTP 403).
CLOSE_POLICY_VIOLATION = 1008


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
    """Refuse the handshake: a close before the accept, which ASGI servers answer with an
    HTTP 403. (A denial *response* would carry the status and body, but uvicorn's default
    WebSocket implementation logs an ERROR for each one.)"""
    log.info("WebSocket %s refused: %s %s (%s)", websocket.url.path, status, code or "", message)
    await websocket.close(CLOSE_POLICY_VIOLATION, f"{status} {code or ''}".strip())


async def _check_access(state: AppState, token: str, room_id: uuid.UUID) -> tuple[User, float]:
    """Raise unless the token's session is live and its user may read the room; the user and
    the access token's expiry."""
    async with state.session_factory() as session:
        user, claims = await authenticate(session, state.settings, token)
        room = await rooms.get_room(session, room_id)
        await Permissions(session).check(user, Action.ROOM_READ, room)
    return user, claims.expires_at


_CLOSE_FOR_STATUS = {401: CLOSE_SESSION_ENDED, 403: CLOSE_REMOVED, 404: CLOSE_ROOM_DELETED}


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
    try:
        claims = decode_access_token(settings, token)
    except ApiError as error:
        await _deny(websocket, error.status_code, error.message, error.code)
        return
    # Registered (and subscribed) before the database checks: a logout, removal or deletion
    # committed after them reaches this connection through a control message.
    conn = Connection(
        user_id=claims.user_id, session_id=claims.session_id, queue_size=settings.ws_queue_size
    )
    await state.broadcaster.join(room_id, conn)
    try:
        _, expires_at = await _check_access(state, token, room_id)
    except (ApiError, DomainError) as error:
        await state.broadcaster.leave(room_id, conn)
        code = error.code if isinstance(error, ApiError) else None
        await _deny(websocket, status_for(error), str(error), code)
        return
    except BaseException:
        await state.broadcaster.leave(room_id, conn)
        raise

    tasks: list[asyncio.Task[object]] = []
    try:
        await websocket.accept()
        replayed_up_to = await _replay(websocket, state, room_id, after)
        tasks = [
            asyncio.create_task(_send(websocket, conn, replayed_up_to)),
            asyncio.create_task(_receive(websocket, conn)),
            asyncio.create_task(_heartbeat(conn, settings.ws_heartbeat_seconds, expires_at)),
            asyncio.create_task(_recheck(state, conn, token, room_id)),
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
                # A close reason is at most 123 bytes of UTF-8.
                reason = conn.close_reason.encode()[:120].decode(errors="ignore")
                await asyncio.wait_for(websocket.close(conn.close_code, reason), timeout=2)


async def _replay(
    websocket: WebSocket, state: AppState, room_id: uuid.UUID, after: int | None
) -> int | None:
    """Send the messages missed since ``after`` (already subscribed, so nothing falls in
    between), then ``ready``. Returns the last replayed id."""
    last_id = after
    complete = True
    if after is not None:
        async with state.session_factory() as session:
            records, has_more = await chat.list_messages(
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


async def _recheck(state: AppState, conn: Connection, token: str, room_id: uuid.UUID) -> None:
    """On each ``recheck`` control message: check the session and the room access again."""
    while True:
        await conn.recheck.wait()
        conn.recheck.clear()
        try:
            await _check_access(state, token, room_id)
        except (ApiError, DomainError) as error:
            code = _CLOSE_FOR_STATUS.get(status_for(error), CLOSE_REMOVED)
            conn.close(code, str(error))
            return


async def _heartbeat(conn: Connection, period: float, expires_at: float) -> None:
    while True:
        await asyncio.sleep(min(period, max(expires_at - time.time(), 0.05)))
        if time.time() >= expires_at:
            conn.close(CLOSE_TOKEN_EXPIRED, "the access token expired: refresh and reconnect")
            return
        conn.offer(Frame(type="ping", raw=json.dumps({"type": "ping", "ts": time.time()})))
