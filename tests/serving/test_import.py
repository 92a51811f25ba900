"""``POST /rooms/{id}/messages/import``: admins import transcripts; members may not; a malformed
transcript is refused whole (422 with the line) and stores nothing; one event announces it."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from fastapi import FastAPI

from dbschema.models import UserRole
from knowledge import chat, rooms
from realtime.events import parse_event
from tests.serving.conftest import Api, error_code, last_stream_id, stream_events

TRANSCRIPT: list[dict[str, Any]] = [
    {
        "speaker": "Menenius",
        "text": "I shall tell you a pretty tale.",
        "time": "2024-03-01T10:00:00Z",
    },
    {
        "speaker": "First Citizen",
        "text": "Well, I'll hear it, sir.",
        "time": "2024-03-01T10:00:30Z",
        "n": 2,
    },
    {
        "speaker": "Scribe",
        "text": "Noted: the fable of the belly.",
        "time": "2024-03-01T10:01:00Z",
        "kind": "agent",
    },
]
JSONL = "".join(json.dumps(row) + "\n" for row in TRANSCRIPT)
CSV = 'speaker,text,kind\nMenenius,"Hear me, citizens.",human\nScribe,Noted.,agent\n'


def url(room_id: object) -> str:
    return f"/api/v1/rooms/{room_id}/messages/import"


async def test_admin_imports_a_transcript(api: Api, app: FastAPI) -> None:
    admin = await api.user(UserRole.admin)
    member = await api.user(name="Reader")
    room = await api.room(member)
    since = await last_stream_id(app)

    response = await (await api.client(admin)).post(
        url(room.id), json={"format": "jsonl", "content": JSONL}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["messages"], body["speakers"], body["new_users"]) == (3, 3, 3)
    assert body["first_time"] == "2024-03-01T10:00:00Z"
    assert body["last_time"] == "2024-03-01T10:01:00Z"

    history = (await (await api.client(member)).get(f"/api/v1/rooms/{room.id}/messages")).json()
    items = history["items"]
    assert [(m["author_name"], m["content"]) for m in items] == [
        (r["speaker"], r["text"]) for r in TRANSCRIPT
    ]
    assert [m["author_kind"] for m in items] == ["human", "human", "agent"]
    assert [datetime.fromisoformat(m["created_at"]) for m in items] == [
        datetime.fromisoformat(r["time"]) for r in TRANSCRIPT
    ]
    assert [m["id"] for m in items] == list(
        range(body["first_message_id"], body["last_message_id"] + 1)
    )
    members, _ = await rooms.list_room_members(api.session, room.id, 50, 0)
    roles = {user.full_name: user.role for _, user in members}
    assert roles == {
        "Reader": UserRole.student,
        "Menenius": UserRole.student,
        "First Citizen": UserRole.student,
        "Scribe": UserRole.agent,
    }

    # one event for the whole import, which makes the sensor refresh the room
    entries: list[Any] = await stream_events(app, room.id, since)
    events = [parse_event(e) for e in entries]
    assert [(e.type, getattr(e, "full", None)) for e in events] == [
        ("room.rebuild_requested", False)
    ]
    assert events[0].actor_id == str(admin.id)

    # CSV too; the speakers are now members, found by name
    again = await (await api.client(admin)).post(
        url(room.id), json={"format": "csv", "content": CSV}
    )
    assert again.status_code == 201, again.text
    assert (again.json()["messages"], again.json()["new_users"]) == (2, 0)
    assert again.json()["first_time"] is None


async def test_only_admins_may_import(api: Api) -> None:
    member, moderator, outsider = await api.user(), await api.user(), await api.user()
    teacher = await api.user(UserRole.teacher)
    course = await api.course(teacher)  # the teacher manages the room, but is no admin
    room = await api.room(member, course=course)
    await rooms.set_room_member(api.session, room.id, moderator.id, "moderator")
    await api.commit()
    body = {"format": "jsonl", "content": JSONL}
    for user in (member, moderator, outsider, teacher):
        response = await (await api.client(user)).post(url(room.id), json=body)
        assert response.status_code == 403, (user.role, response.text)
        assert error_code(response) == "forbidden"
    anonymous = await (await api.client()).post(url(room.id), json=body)
    assert anonymous.status_code == 401
    assert await chat.count_messages(api.session, room.id) == 0

    super_admin = await api.user(UserRole.super_admin)
    missing = await (await api.client(super_admin)).post(url(uuid.uuid4()), json=body)
    assert missing.status_code == 404
    ok = await (await api.client(super_admin)).post(url(room.id), json=body)
    assert ok.status_code == 201, ok.text


async def test_malformed_transcripts_store_nothing(api: Api, app: FastAPI) -> None:
    admin = await api.user(UserRole.admin)
    room = await api.room()
    client = await api.client(admin)
    since = await last_stream_id(app)
    bad_time = JSONL + '{"speaker": "Menenius", "text": "Hear me.", "time": "yesterday"}\n'
    cases = [
        ({"format": "jsonl", "content": bad_time}, 'line 4: "time" is not an ISO 8601 time'),
        ({"format": "jsonl", "content": '{"text": "who?"}\n'}, 'no "speaker" column'),
        (
            {"format": "csv", "content": "speaker,text\nA,fine\nB,\n"},
            'line 2: "text" is missing or empty',
        ),
        (
            {"format": "jsonl", "content": '{"speaker": "A", "text": "a\\u0000b"}\n'},
            'line 1: "text" contains a NUL',
        ),
        ({"format": "csv", "content": ""}, "the file is empty"),
    ]
    for body, reason in cases:
        response = await client.post(url(room.id), json=body)
        assert response.status_code == 422, (body, response.text)
        assert error_code(response) == "invalid_input"
        assert reason in response.json()["error"]["message"], response.text
    details = (await client.post(url(room.id), json=cases[0][0])).json()["error"]["details"]
    assert details == [{"line": 4, "message": "\"time\" is not an ISO 8601 time: 'yesterday'"}]

    for body in ({"format": "xml", "content": "<a/>"}, {"content": JSONL}, {"format": "csv"}):
        response = await client.post(url(room.id), json=body)
        assert response.status_code == 422 and error_code(response) == "validation_error"

    assert await chat.count_messages(api.session, room.id) == 0
    _, members = await rooms.list_room_members(api.session, room.id, 50, 0)
    assert members == 0
    assert await stream_events(app, room.id, since) == []
