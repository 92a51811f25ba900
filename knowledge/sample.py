"""The bundled sample conversation (Shakespeare's Coriolanus, public domain; see NOTICE.md)."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from importlib import resources

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import Course, Room, User, UserRole
from knowledge import chat, courses, rooms
from knowledge import users as user_db

DEMO_COURSE = "CoAgent demo course"
DEMO_ROOM = "Coriolanus reading room"


@dataclass(frozen=True)
class Speech:
    speaker: str
    text: str


def load_sample() -> list[Speech]:
    data = resources.files("knowledge") / "sample_data" / "coriolanus.jsonl"
    return [Speech(**json.loads(line)) for line in data.read_text().splitlines() if line.strip()]


def _email(speaker: str) -> str:
    return re.sub(r"[^a-z0-9]+", ".", speaker.lower()).strip(".") + "@demo.coagent.local"


@dataclass
class DemoRoom:
    room_id: uuid.UUID
    course_id: uuid.UUID
    users: int
    messages_loaded: int
    messages_total: int


async def ensure_demo_room(session: AsyncSession, max_message_chars: int) -> DemoRoom:
    """Create (once) the demo course, room and one user per speaker, and load the conversation.

    Idempotent: a second call finds the same room and loads nothing.
    """
    course = (await session.execute(select(Course).where(Course.name == DEMO_COURSE))).scalar()
    if course is None:
        course = await courses.create_course(session, DEMO_COURSE, description="Sample data")
    room = (
        await session.execute(
            select(Room).where(Room.course_id == course.id, Room.name == DEMO_ROOM)
        )
    ).scalar()
    if room is None:
        room = await rooms.create_room(session, course.id, DEMO_ROOM)
    speeches = load_sample()
    users: dict[str, uuid.UUID] = {}
    for speaker in dict.fromkeys(s.speaker for s in speeches):
        email = _email(speaker)
        user = (await session.execute(select(User).where(User.email == email))).scalar()
        if user is None:
            user = await user_db.create_user(session, email, speaker, role=UserRole.student)
        users[speaker] = user.id
        await rooms.add_member(session, room.id, user.id)
    loaded = 0
    if await chat.count_messages(session, room.id) == 0:
        loaded = await chat.post_messages(
            session, room.id, [(users[s.speaker], s.text) for s in speeches], max_message_chars
        )
    total = await chat.count_messages(session, room.id)
    await session.commit()
    return DemoRoom(room.id, course.id, len(users), loaded, total)
