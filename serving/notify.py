"""After a commit: append the change event to ``graphrag:events`` and broadcast the room frame.

Both happen only once the change is durable. A Redis failure at this point is logged, not
raised: the change is committed and the caller must see it succeed.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from realtime.events import BaseEvent
from serving.state import AppState

log = logging.getLogger(__name__)


async def after_commit(
    state: AppState,
    room_id: uuid.UUID | str,
    frame: dict[str, Any] | None = None,
    event: BaseEvent | None = None,
) -> str | None:
    """Returns the stream id of the event, when one was appended."""
    entry_id = None
    if event is not None:
        try:
            entry_id = await state.events.publish(event)
        except Exception:
            log.exception("could not append %s for room %s", event.type, room_id)
    if frame is not None:
        try:
            await state.broadcaster.publish(room_id, {"room_id": str(room_id), **frame})
        except Exception:
            log.exception("could not broadcast %s to room %s", frame.get("type"), room_id)
    return entry_id
