"""Message queries of the chat domain at the sizes a large room reaches."""

from __future__ import annotations

from knowledge import chat
from knowledge.platform import Platform
from tests.conftest import make_room


async def test_live_messages_takes_more_ids_than_postgresql_has_bind_parameters(
    platform: Platform,
) -> None:
    """A full evidence build of a 100k-message room asks for every message by id: one bind
    parameter per id failed past 65,535 ("number of parameters must be between 0 and 65535")."""
    room_id = await make_room(platform, [("Ada", "first"), ("Bob", "second")])
    async with platform.session() as session:
        messages, _ = await chat.load_room_sources(session, room_id)
        stored = [m.id for m in messages]
        asked = [*stored, *range(10**9, 10**9 + 70_000)]
        found = await chat.live_messages(session, room_id, asked)
    assert sorted(found) == sorted(stored) and len(stored) == 2
    assert {m.content for m in found.values()} == {"first", "second"}
