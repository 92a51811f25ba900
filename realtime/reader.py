"""Reading ``graphrag:events`` from a stream id with XRANGE (no consumer groups: nothing to ack
or lose), noticing when entries were trimmed before they were read, and dropping an entry whose
``outbox_id`` was already read in the same batch (a re-sent outbox row)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, cast

from redis import Redis

from realtime.debounce import stream_id_key
from realtime.events import STREAM, BaseEvent, parse_event

log = logging.getLogger(__name__)


@dataclass
class StreamBatch:
    events: list[tuple[str, BaseEvent]] = field(default_factory=list)
    #: Entries after ``after`` were trimmed before they were read.
    gap: bool = False
    #: Entries that could not be parsed (skipped, counted).
    malformed: int = 0
    #: Entries repeating an ``outbox_id`` read earlier in the batch (skipped, counted).
    duplicates: int = 0
    #: The id of the last entry read (parsed or not); None when nothing was read.
    last_id: str | None = None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entries(redis: Redis, stream: str, start: str, count: int) -> list[tuple[Any, Any]]:
    # redis-py types the reply as sync-or-async, maybe None; a sync XRANGE gives a list.
    reply = cast("list[tuple[Any, Any]] | None", redis.xrange(stream, start, "+", count=count))
    return list(reply or [])


def read_after(
    redis: Redis, after: str, stream: str = STREAM, count: int = 1000, max_batches: int = 10
) -> StreamBatch:
    batch = StreamBatch()
    if after != "0-0":
        first = _entries(redis, stream, "-", 1)
        if first and stream_id_key(_text(first[0][0])) > stream_id_key(after):
            # The oldest entry is newer than the last one we read: what was between is gone.
            batch.gap = True
    start = f"({after}" if after != "0-0" else "-"
    outbox_ids: set[str] = set()
    for _ in range(max_batches):
        entries = _entries(redis, stream, start, count)
        for raw_id, fields in entries:
            entry_id = _text(raw_id)
            batch.last_id = entry_id
            outbox_id = fields.get("outbox_id", fields.get(b"outbox_id"))
            if outbox_id is not None:
                if _text(outbox_id) in outbox_ids:
                    batch.duplicates += 1
                    continue
                outbox_ids.add(_text(outbox_id))
            try:
                batch.events.append((entry_id, parse_event(fields)))
            except ValueError as error:
                batch.malformed += 1
                log.warning("skipping malformed stream entry %s: %s", entry_id, error)
        if len(entries) < count:
            break
        start = f"({batch.last_id}"
    return batch
