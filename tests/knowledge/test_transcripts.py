"""Transcript import: JSONL, CSV and Parquet files into a room; malformed files refused whole."""

from __future__ import annotations

import csv
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from redis import Redis
from sqlalchemy import func, select, text

from coagent.cli import main
from dbschema.models import AuthorKind, Message, RoomMember, User, UserRole
from knowledge.platform import Platform, redis_url
from knowledge.relational import BULK_ROWS
from knowledge.settings import Settings
from knowledge.transcripts import (
    IMPORT_EMAIL_DOMAIN,
    TranscriptError,
    TranscriptRow,
    import_transcript,
    read_transcript,
)
from realtime.events import STREAM, parse_event
from tests.conftest import make_room, with_platform

ROWS: list[dict[str, Any]] = [
    {
        "n": 1,
        "speaker": "Menenius",
        "text": "I shall tell you a pretty tale.",
        "time": "2024-03-01T10:00:00Z",
        "kind": "human",
    },
    {
        # an offset (stored in UTC) that goes back in time: allowed, file order is kept
        "n": 2,
        "speaker": "First Citizen",
        "text": "Well, I'll hear it, sir: yet you must not think\nto fob off our disgrace.",
        "time": "2024-03-01T10:00:30+01:00",
        "kind": "human",
    },
    {
        "n": 3,
        "speaker": "Scribe",
        "text": "Noted: the fable of the belly.",
        "time": "2024-03-01T10:02:00",
        "kind": "agent",
    },
    {
        "n": 4,
        "speaker": "Menenius",
        "text": "There was a time when all the body's members rebelled against the belly.",
        "time": "2024-03-01 10:03:00",
        "kind": "",
    },
]
TIMES = [
    datetime(2024, 3, 1, 10, 0, 0, tzinfo=UTC),
    datetime(2024, 3, 1, 9, 0, 30, tzinfo=UTC),
    datetime(2024, 3, 1, 10, 2, 0, tzinfo=UTC),
    datetime(2024, 3, 1, 10, 3, 0, tzinfo=UTC),
]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    # Parquet carries real datetimes (naive = UTC) and no kind column for humans.
    pl.DataFrame(
        {
            "speaker": [r["speaker"] for r in rows],
            "text": [r["text"] for r in rows],
            "time": [t.replace(tzinfo=None) for t in TIMES],
            "kind": [r["kind"] or None for r in rows],
        }
    ).write_parquet(path)
    return path


WRITERS = {"jsonl": write_jsonl, "csv": write_csv, "parquet": write_parquet}


async def room_messages(platform: Platform, room_id: str) -> list[tuple[str, str, str, datetime]]:
    async with platform.session() as session:
        rows = await session.execute(
            select(User.full_name, Message.content, Message.author_kind, Message.created_at)
            .join(User, User.id == Message.author_id)
            .where(Message.room_id == uuid.UUID(room_id))
            .order_by(Message.id)
        )
        return [(n, c, str(k), t) for n, c, k, t in rows.tuples()]


async def room_members(platform: Platform, room_id: str) -> dict[str, User]:
    async with platform.session() as session:
        rows = await session.execute(
            select(User)
            .join(RoomMember, RoomMember.user_id == User.id)
            .where(RoomMember.room_id == uuid.UUID(room_id))
        )
        return {u.full_name: u for u in rows.scalars()}


async def count_rows(platform: Platform) -> tuple[int, int]:
    async with platform.session() as session:
        messages = (await session.execute(select(func.count()).select_from(Message))).scalar_one()
        users = (await session.execute(select(func.count()).select_from(User))).scalar_one()
        return int(messages), int(users)


async def do_import(platform: Platform, room_id: str, rows: list[TranscriptRow]) -> Any:
    async with platform.session() as session:
        result = await import_transcript(
            session, room_id, rows, platform.settings.max_message_chars
        )
        await session.commit()
        return result


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
async def test_import_keeps_order_speakers_kinds_and_times(
    platform: Platform, tmp_path: Path, fmt: str
) -> None:
    path = WRITERS[fmt](tmp_path / f"act1.{fmt}", ROWS)
    rows = read_transcript(path)
    assert [r.speaker for r in rows] == [r["speaker"] for r in ROWS]
    assert [r.time for r in rows] == TIMES
    assert [r.kind for r in rows] == [AuthorKind.human] * 2 + [AuthorKind.agent, AuthorKind.human]

    room_id = await make_room(platform, [])
    result = await do_import(platform, room_id, rows)
    assert (result.messages, result.speakers, result.new_users) == (4, 3, 3)
    assert (result.first_time, result.last_time) == (min(TIMES), max(TIMES))
    assert result.last_message_id - result.first_message_id == 3

    stored = await room_messages(platform, room_id)
    assert [(name, text) for name, text, _, _ in stored] == [
        (r["speaker"], r["text"]) for r in ROWS
    ]
    assert [kind for _, _, kind, _ in stored] == ["human", "human", "agent", "human"]
    assert [t for _, _, _, t in stored] == TIMES

    members = await room_members(platform, room_id)
    assert set(members) == {"Menenius", "First Citizen", "Scribe"}
    assert members["Scribe"].role == UserRole.agent
    assert members["Menenius"].role == members["First Citizen"].role == UserRole.student
    for user in members.values():
        assert user.email.endswith("@" + IMPORT_EMAIL_DOMAIN)
        assert user.hashed_password is None

    # Importing again into the same room finds the speakers among the members.
    again = await do_import(platform, room_id, rows)
    assert (again.messages, again.speakers, again.new_users) == (4, 3, 0)
    assert len(await room_members(platform, room_id)) == 3


async def message_stats(platform: Platform) -> tuple[datetime | None, float]:
    """When ``messages`` was last analyzed by hand, and the planner's estimate of its rows."""
    async with platform.session() as session:
        when, estimate = (
            await session.execute(
                text(
                    "SELECT pg_stat_get_last_analyze_time(oid), reltuples FROM pg_class "
                    "WHERE oid = CAST('messages' AS regclass)"
                )
            )
        ).one()
        return when, float(estimate)


async def test_a_bulk_import_refreshes_the_planner_statistics(platform: Platform) -> None:
    """A room imported a moment ago must not look empty to the planner (the evidence queries'
    neighbour lookups then scan the whole room); a small import does not pay for an ANALYZE."""
    room_id = await make_room(platform, [])
    await do_import(platform, room_id, [TranscriptRow("Ann", f"line {i}", None) for i in range(5)])
    before, estimate = await message_stats(platform)
    # Bulk: at least BULK_ROWS and more than a fifth of the table (other tests' rooms share it).
    size = max(BULK_ROWS, int(estimate / 4) + 1)
    rows = [TranscriptRow(f"Speaker {i % 7}", f"bulk line {i}", None) for i in range(size)]
    await do_import(platform, room_id, rows)
    after, _ = await message_stats(platform)
    assert after is not None and (before is None or after > before)


async def test_an_existing_member_with_the_speakers_name_is_reused(
    platform: Platform, tmp_path: Path
) -> None:
    room_id = await make_room(platform, [("Menenius", "Before the import.")])
    before = await room_members(platform, room_id)
    rows = read_transcript(write_jsonl(tmp_path / "t.jsonl", [{**r, "time": None} for r in ROWS]))
    assert all(r.time is None for r in rows)
    result = await do_import(platform, room_id, rows)
    assert (result.speakers, result.new_users) == (3, 2)
    assert result.first_time is None and result.last_time is None
    after = await room_members(platform, room_id)
    assert after["Menenius"].id == before["Menenius"].id
    assert not after["Menenius"].email.endswith(IMPORT_EMAIL_DOMAIN)
    # Without times the messages keep file order (ids) after the earlier message.
    stored = await room_messages(platform, room_id)
    assert [text for _, text, _, _ in stored] == ["Before the import."] + [r["text"] for r in ROWS]


BAD_FILES: list[tuple[str, str, str]] = [
    (
        "bad_time.jsonl",
        '{"speaker": "A", "text": "one", "time": "2024-01-01T10:00:00"}\n'
        '{"speaker": "B", "text": "two", "time": "2024-01-01T10:01:00"}\n'
        '{"speaker": "A", "text": "three", "time": "yesterday"}\n',
        "line 3: \"time\" is not an ISO 8601 time: 'yesterday'",
    ),
    (
        "no_speaker.jsonl",
        '{"speaker": "A", "text": "one"}\n\n{"text": "two"}\n',
        'line 3: "speaker" is missing or empty',
    ),
    (
        "empty_text.csv",
        'speaker,text\nA,one\nB,"  "\nC,three\n',
        'line 2: "text" is missing or empty',
    ),
    ("notes.txt", "speaker,text\nA,one\n", "unknown transcript format '.txt'"),
    ("no_text.csv", "speaker,words\nA,one\n", 'the file has no "text" column'),
    ("empty.jsonl", "\n\n", "the file is empty"),
    ("nul.jsonl", '{"speaker": "A", "text": "a\\u0000b"}\n', 'line 1: "text" contains a NUL'),
    (
        "some_times.csv",
        "speaker,text,time\nA,one,2024-01-01T10:00:00\nB,two,\n",
        'line 2: "time" is missing, but line 1 has one',
    ),
    (
        "bad_kind.csv",
        "speaker,text,kind\nA,one,human\nB,two,robot\n",
        'line 2: "kind" must be "human" or "agent", not \'robot\'',
    ),
    (
        "not_json.jsonl",
        '{"speaker": "A", "text": "one"}\n{"speaker": "B",\n',
        "line 2: not valid JSON",
    ),
    ("ragged.csv", "speaker,text\nA,one\nB,two,three\n", "line 2: has 3 fields"),
    ("garbage.parquet", "not parquet at all", "not a valid Parquet file"),
]


@pytest.mark.parametrize(("name", "content", "reason"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_malformed_files_are_refused_with_the_line_and_reason(
    tmp_path: Path, name: str, content: str, reason: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(TranscriptError) as caught:
        read_transcript(path)
    assert reason in str(caught.value)


def test_limits_and_unreadable_files(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "long.jsonl", [{"speaker": "A", "text": "x" * 51}])
    with pytest.raises(TranscriptError, match='line 1: "text" has 51 characters; the limit is 50'):
        read_transcript(path, max_chars=50)
    with pytest.raises(TranscriptError, match="cannot read"):
        read_transcript(tmp_path / "missing.csv")
    # every problem is listed, the message names the first
    many = write_jsonl(tmp_path / "many.jsonl", [{"speaker": "", "text": ""}] * 3)
    with pytest.raises(TranscriptError) as caught:
        read_transcript(many)
    assert str(caught.value).startswith('line 1: "speaker" is missing or empty (and 2 more')
    assert [p.line for p in caught.value.problems] == [1, 2, 3]  # one problem per row


async def test_bad_rows_store_nothing(platform: Platform) -> None:
    room_id = await make_room(platform, [])
    rows = [
        TranscriptRow("Ada", "fine", None),
        TranscriptRow("Babbage", "also fine", None),
        TranscriptRow("Ada", "", None),
    ]
    before = await count_rows(platform)
    with pytest.raises(TranscriptError, match='line 3: "text" is missing or empty'):
        async with platform.session() as session:
            await import_transcript(session, room_id, rows, platform.settings.max_message_chars)
            await session.commit()
    assert await count_rows(platform) == before
    assert await room_members(platform, room_id) == {}


def test_cli_import_refuses_a_bad_file(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    room_id = with_platform(settings, lambda p: make_room(p, []))
    path = tmp_path / "bad.csv"
    path.write_text("speaker,text,time\nA,one,2024-01-01\nB,two,yesterday\n")
    before = with_platform(settings, count_rows)
    with pytest.raises(SystemExit) as exit_:
        main(["import", room_id, str(path)])
    assert exit_.value.code != 0
    assert "line 2: \"time\" is not an ISO 8601 time: 'yesterday'" in capsys.readouterr().err
    assert with_platform(settings, count_rows) == before


def test_cli_import_stores_the_rows_and_asks_for_a_refresh(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    room_id = with_platform(settings, lambda p: make_room(p, []))
    path = write_jsonl(tmp_path / "act1.jsonl", ROWS)
    main(["import", room_id, str(path)])
    out = capsys.readouterr().out
    assert "Imported 4 messages from 3 speakers (3 new users)" in out
    stored = with_platform(settings, lambda p: room_messages(p, room_id))
    assert [t for _, _, _, t in stored] == TIMES

    redis = Redis.from_url(redis_url(settings))
    try:
        entries: Any = redis.xrevrange(STREAM, "+", "-", count=50)
    finally:
        redis.close()
    events = [parse_event(fields) for _, fields in entries]
    mine = [e for e in events if e.room_id == room_id]
    assert [e.type for e in mine] == ["room.rebuild_requested"]
    assert getattr(mine[0], "full", None) is False

    # an unknown room: a clear error, nothing stored
    before = with_platform(settings, count_rows)
    with pytest.raises(SystemExit) as exit_:
        main(["import", str(uuid.uuid4()), str(path)])
    assert exit_.value.code != 0 and "does not exist" in capsys.readouterr().err
    assert with_platform(settings, count_rows) == before
