"""Bad input gets a clear error and changes nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from dbschema.models import Message
from knowledge import chat, rooms
from knowledge.errors import InvalidInputError, NotFoundError
from knowledge.indexing import sync_chunks
from knowledge.platform import Platform
from knowledge.search import answer_question
from tests.conftest import make_room

MISSING_ROOM = "00000000-0000-0000-0000-000000000001"


async def _count(platform: Platform) -> int:
    async with platform.session() as session:
        return int((await session.execute(select(func.count()).select_from(Message))).scalar_one())


async def test_unknown_room(platform: Platform) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        await answer_question(platform, MISSING_ROOM, "Who is Menenius?")
    with pytest.raises(NotFoundError):
        await answer_question(platform, "not-a-uuid", "Who is Menenius?")
    with pytest.raises(NotFoundError):
        await sync_chunks(platform, MISSING_ROOM)
    async with platform.session() as session:
        with pytest.raises(NotFoundError):
            await chat.post_message(session, MISSING_ROOM, None, "hello", 100)


@pytest.mark.parametrize("question", ["", "   ", "x" * 5000])
async def test_empty_or_oversized_question(platform: Platform, question: str) -> None:
    room_id = await make_room(platform, [("Ann", "Hello Bob.")])
    with pytest.raises(InvalidInputError):
        await answer_question(platform, room_id, question)


async def test_oversized_or_empty_message_changes_nothing(platform: Platform) -> None:
    room_id = await make_room(platform, [("Ann", "Hello Bob.")])
    before = await _count(platform)
    limit = platform.settings.max_message_chars
    async with platform.session() as session:
        with pytest.raises(InvalidInputError, match="limit"):
            await chat.post_message(session, room_id, None, "x" * (limit + 1), limit)
        with pytest.raises(InvalidInputError, match="empty"):
            await chat.post_message(session, room_id, None, "  \n ", limit)
        # a bulk load with one bad message writes none of them
        with pytest.raises(InvalidInputError):
            await chat.post_messages(
                session,
                rooms.parse_room_id(room_id),
                [(None, "fine"), (None, "y" * (limit + 1))],
                limit,
            )
        await session.commit()
    assert await _count(platform) == before
