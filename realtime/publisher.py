"""Append events to ``graphrag:events`` (XADD with approximate MAXLEN trimming).

``append_once`` is what the outbox relay uses: each append is keyed by its ``event_outbox`` id,
and a Lua script (atomic in Redis) appends an entry only if that id was not appended in the
last ``DEDUPE_TTL_SECONDS``, answering the first append's stream id otherwise. A relay that
appended but crashed before marking the row sent therefore re-sends without a duplicate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from redis.asyncio import Redis

from realtime.events import STREAM, BaseEvent

DEFAULT_MAXLEN = 100_000
#: How long an outbox id is remembered by ``append_once`` (a re-send after a crash happens
#: within seconds; later than this, the consumer's own dedupe and idempotent runs cover it).
DEDUPE_TTL_SECONDS = 24 * 3600

# KEYS[1]: the stream, KEYS[2]: the outbox id's dedupe key;
# ARGV[1]: MAXLEN, ARGV[2]: TTL of the dedupe key, ARGV[3..]: field, value, field, value...
_APPEND_ONCE = """
local seen = redis.call('GET', KEYS[2])
if seen then return seen end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 3))
redis.call('SET', KEYS[2], id, 'EX', ARGV[2])
return id
"""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class EventPublisher:
    def __init__(self, redis: Redis, stream: str = STREAM, maxlen: int = DEFAULT_MAXLEN) -> None:
        self.redis = redis
        self.stream = stream
        self.maxlen = maxlen
        self._append_once = redis.register_script(_APPEND_ONCE)

    async def publish(self, event: BaseEvent) -> str:
        """Append one event; returns its stream id."""
        entry_id = await self.redis.xadd(
            self.stream,
            event.to_fields(),  # type: ignore[arg-type]
            maxlen=self.maxlen,
            approximate=True,
        )
        return _text(entry_id)

    async def publish_many(self, events: Sequence[BaseEvent]) -> list[str]:
        """Append several events in one round trip, in order."""
        if not events:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.xadd(
                    self.stream,
                    event.to_fields(),  # type: ignore[arg-type]
                    maxlen=self.maxlen,
                    approximate=True,
                )
            ids = await pipe.execute()
        return [_text(i) for i in ids]

    def dedupe_key(self, outbox_id: int) -> str:
        return f"{self.stream}:outbox:{outbox_id}"

    async def append_once(self, entries: Sequence[tuple[int, Mapping[str, str]]]) -> list[str]:
        """Append ``(outbox id, fields)`` entries in one round trip, each at most once (see the
        module docstring); returns their stream ids, in order. ``fields`` get ``outbox_id``."""
        if not entries:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for outbox_id, fields in entries:
                flat: list[str | int] = [self.maxlen, DEDUPE_TTL_SECONDS]
                for key, value in {**fields, "outbox_id": str(outbox_id)}.items():
                    flat += [key, value]
                await self._append_once(
                    keys=[self.stream, self.dedupe_key(outbox_id)], args=flat, client=pipe
                )
            ids = await pipe.execute()
        return [_text(i) for i in ids]
