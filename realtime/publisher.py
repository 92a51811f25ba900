"""Append events to ``graphrag:events`` (XADD with approximate MAXLEN trimming)."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from realtime.events import STREAM, BaseEvent

DEFAULT_MAXLEN = 100_000


class EventPublisher:
    def __init__(self, redis: Redis, stream: str = STREAM, maxlen: int = DEFAULT_MAXLEN) -> None:
        self.redis = redis
        self.stream = stream
        self.maxlen = maxlen

    async def publish(self, event: BaseEvent) -> str:
        """Append one event; returns its stream id."""
        entry_id = await self.redis.xadd(
            self.stream,
            event.to_fields(),  # type: ignore[arg-type]
            maxlen=self.maxlen,
            approximate=True,
        )
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

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
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
