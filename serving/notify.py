"""Change events and room frames around a commit.

``stage_event`` writes the change event to the outbox in the transaction of the change (so it
is durable exactly when the change is); after the commit, ``after_commit`` hands the staged
rows to the outbox relay (appended to ``graphrag:events`` now, or by the relay once Redis is
back) and broadcasts the room frame to the WebSocket clients (best effort: logged, never
raised; the change is committed and the caller must see it succeed).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from realtime import outbox
from realtime.events import BaseEvent
from serving.state import AppState

log = logging.getLogger(__name__)


async def stage_event(session: AsyncSession, *events: BaseEvent) -> list[int]:
    """Before the commit: the events' outbox rows (their ids go to ``after_commit``)."""
    return await outbox.stage(session, *events)


async def after_commit(
    state: AppState,
    room_id: uuid.UUID | str,
    frame: dict[str, Any] | None = None,
    staged: Sequence[int] = (),
) -> dict[int, str]:
    """Returns the stream ids (by outbox id) of the staged events appended here; the relay
    appends the others."""
    if isinstance(staged, BaseEvent):  # the old signature: the event must be staged instead
        raise TypeError("stage the event with stage_event() before the commit")
    delivered = await state.outbox.deliver_committed(staged, state.session_factory)
    if frame is not None:
        try:
            await state.broadcaster.publish(room_id, {"room_id": str(room_id), **frame})
        except Exception:
            log.exception("could not broadcast %s to room %s", frame.get("type"), room_id)
    return delivered
