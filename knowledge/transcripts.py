"""Transcript import: a conversation from a JSONL, CSV or Parquet file into a room.

A transcript has one row per message, in conversation order, with the columns

- ``speaker`` (required): the speaker's name; each distinct speaker becomes a room member;
- ``text`` (required): the message, at most ``max_message_chars`` characters;
- ``time`` (optional): an ISO 8601 time (or a Parquet datetime); naive times are UTC. Either
  every row has one or none does;
- ``kind`` (optional): ``human`` (default) or ``agent``.

Other columns are ignored. Any problem refuses the whole file with ``TranscriptError`` naming
the line (1-based: the line for JSONL, the data row for CSV and Parquet, header not counted)
and the reason; nothing is written then. ``import_transcript`` flushes, never commits: the
caller owns the transaction (like ``knowledge.chat``) and announces the change.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import AuthorKind, Message, RoomMember, User, UserRole
from knowledge.errors import InvalidInputError
from knowledge.relational import analyze_after_bulk_load
from knowledge.rooms import add_member, get_room

#: File extensions and the format each one is read as.
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
REQUIRED_COLUMNS = ("speaker", "text")
#: ``users.full_name`` is a VARCHAR(200).
MAX_SPEAKER_CHARS = 200
#: Domain of the synthetic e-mail addresses of imported speakers.
IMPORT_EMAIL_DOMAIN = "import.coagent.local"
#: Problems listed in a ``TranscriptError`` (the message names the first one).
MAX_LISTED_PROBLEMS = 20


@dataclass(frozen=True)
class TranscriptRow:
    speaker: str
    text: str
    time: datetime | None
    kind: AuthorKind = AuthorKind.human


@dataclass(frozen=True)
class Problem:
    #: 1-based line (JSONL) or data row (CSV, Parquet); None for the whole file.
    line: int | None
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}" if self.line is not None else self.reason


class TranscriptError(InvalidInputError):
    """The transcript is malformed; nothing was imported. ``problems`` lists (up to
    ``MAX_LISTED_PROBLEMS``) what is wrong, the message names the first one."""

    def __init__(self, problems: Sequence[Problem], total: int | None = None) -> None:
        self.problems = list(problems)[:MAX_LISTED_PROBLEMS]
        self.total = total if total is not None else len(problems)
        first = self.problems[0]
        self.line = first.line
        self.reason = first.reason
        more = self.total - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else ""
        super().__init__(f"{first}{suffix}")


def _fail(reason: str, line: int | None = None) -> TranscriptError:
    return TranscriptError([Problem(line, reason)])


# --- reading --------------------------------------------------------------------------------


def transcript_format(path: Path) -> str:
    """``jsonl``, ``csv`` or ``parquet``, from the file's extension."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(FORMATS)
        raise _fail(f"unknown transcript format {path.suffix or '(no extension)'!r}: use {known}")
    return fmt


def read_transcript(path: Path, max_chars: int | None = None) -> list[TranscriptRow]:
    """The rows of a transcript file (format by extension), all validated.

    ``max_chars`` defaults to the ``MAX_MESSAGE_CHARS`` setting.
    """
    path = Path(path)
    fmt = transcript_format(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise _fail(f"cannot read {path}: {error.strerror or error}") from None
    return parse_transcript(data, fmt, max_chars)


def parse_transcript(
    data: bytes | str, fmt: str, max_chars: int | None = None
) -> list[TranscriptRow]:
    """The rows of a transcript given as its content (``fmt``: jsonl, csv or parquet)."""
    if max_chars is None:
        from knowledge.settings import get_settings

        max_chars = get_settings().max_message_chars
    fmt = fmt.lower()
    if fmt == "ndjson":
        fmt = "jsonl"
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if fmt == "jsonl":
        records = _jsonl_records(raw)
    elif fmt == "csv":
        records = _csv_records(raw)
    elif fmt == "parquet":
        records = _parquet_records(raw)
    else:
        raise _fail(f"unknown transcript format {fmt!r}: use jsonl, csv or parquet")
    return validate_records(records, max_chars)


Record = tuple[int, dict[str, Any]]


def _text(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _fail(f"the file is not UTF-8 text (invalid byte at offset {error.start})") from None
    return text.removeprefix("\ufeff")


def _polars_message(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _jsonl_records(raw: bytes) -> list[Record]:
    import polars as pl

    text = _text(raw)
    lines = text.split("\n")
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise _fail("the file is empty: it has no rows")
    # Each object is read by polars; blank lines are skipped, so rows map to ``numbered``.
    body = "\n".join(line for _, line in numbered).encode()
    try:
        frame = pl.read_ndjson(io.BytesIO(body), infer_schema_length=None)
    except (Exception, pl.exceptions.PanicException) as error:
        raise _locate_json_error(numbered) or _fail(
            f"not a valid JSONL file: {_polars_message(error)}"
        ) from None
    if frame.height != len(numbered):
        raise _locate_json_error(numbered) or _fail(
            "not a valid JSONL file: one JSON object per line expected"
        )
    return _records(frame, [n for n, _ in numbered])


def _locate_json_error(numbered: Sequence[tuple[int, str]]) -> TranscriptError | None:
    """The first line that is not a JSON object, found again line by line for the message."""
    for n, line in numbered:
        try:
            value = json.loads(line)
        except ValueError as error:
            reason = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
            return _fail(f"not valid JSON ({reason})", n)
        if not isinstance(value, dict):
            return _fail(f"not a JSON object but {type(value).__name__}", n)
    return None


def _csv_records(raw: bytes) -> list[Record]:
    import polars as pl

    text = _text(raw)
    if not text.strip():
        raise _fail("the file is empty: it has no rows")
    try:
        frame = pl.read_csv(io.BytesIO(text.encode()), infer_schema=False)
    except (Exception, pl.exceptions.PanicException) as error:
        raise _locate_csv_error(text) or _fail(
            f"not a valid CSV file: {_polars_message(error)}"
        ) from None
    records = _records(frame, list(range(1, frame.height + 1)))
    # A blank line is a row of nulls: skip it (the other rows keep their numbers).
    return [(n, values) for n, values in records if any(v is not None for v in values.values())]


def _locate_csv_error(text: str) -> TranscriptError | None:
    """The first data row polars refused, found again with the csv module for the message."""
    import csv

    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, [])
        for n, fields in enumerate(reader, start=1):
            if fields and len(fields) != len(header):
                return _fail(f"has {len(fields)} fields but the header has {len(header)}", n)
    except csv.Error as error:
        return _fail(f"not valid CSV ({error})", reader.line_num - 1 or None)
    return None


def _parquet_records(raw: bytes) -> list[Record]:
    import polars as pl

    if not raw:
        raise _fail("the file is empty: it has no rows")
    try:
        frame = pl.read_parquet(io.BytesIO(raw))
    except (Exception, pl.exceptions.PanicException) as error:
        raise _fail(f"not a valid Parquet file: {_polars_message(error)}") from None
    return _records(frame, list(range(1, frame.height + 1)))


def _records(frame: Any, numbers: list[int]) -> list[Record]:
    """(line, {column: value}) with column names trimmed and lower-cased."""
    import polars as pl

    names = [str(c).strip().lower() for c in frame.columns]
    for name in REQUIRED_COLUMNS:
        if names.count(name) > 1:
            raise _fail(f'the file has more than one "{name}" column')
    for name in REQUIRED_COLUMNS:
        if name not in names:
            found = ", ".join(repr(n) for n in names) or "none"
            raise _fail(f'the file has no "{name}" column (columns: {found})')
    wanted = [i for i, n in enumerate(names) if n in ("speaker", "text", "time", "kind")]
    try:
        rows = frame.select([frame.columns[i] for i in wanted]).rows()
    except (Exception, pl.exceptions.PanicException) as error:  # e.g. out-of-range datetimes
        raise _fail(f"cannot read the values: {_polars_message(error)}") from None
    keys = [names[i] for i in wanted]
    return [(n, dict(zip(keys, row, strict=True))) for n, row in zip(numbers, rows, strict=True)]


# --- validation -----------------------------------------------------------------------------


def _parse_time(value: Any) -> datetime:
    """An aware datetime; raises ValueError with the reason."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, time())
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f'"time" is not an ISO 8601 time: {value!r}') from None
    else:
        raise ValueError(f'"time" is not an ISO 8601 time: {value!r}')
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f'"time" is out of range: {value!r}') from None


def _string(value: Any, column: str) -> str | None:
    """The value as text, None when missing; raises ValueError for other types."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # as polars does when a JSONL column mixes numbers and text
    raise ValueError(f'"{column}" must be text, not {type(value).__name__}: {value!r}')


def _row(values: dict[str, Any], max_chars: int) -> TranscriptRow:
    speaker = _string(values.get("speaker"), "speaker")
    if speaker is None or not speaker.strip():
        raise ValueError('"speaker" is missing or empty')
    speaker = " ".join(speaker.split())
    if "\x00" in speaker:
        raise ValueError('"speaker" contains a NUL character')
    if len(speaker) > MAX_SPEAKER_CHARS:
        raise ValueError(
            f'"speaker" has {len(speaker)} characters; the limit is {MAX_SPEAKER_CHARS}'
        )
    text = _string(values.get("text"), "text")
    if text is None or not text.strip():
        raise ValueError('"text" is missing or empty')
    if "\x00" in text:
        raise ValueError('"text" contains a NUL character')
    if len(text) > max_chars:
        raise ValueError(f'"text" has {len(text)} characters; the limit is {max_chars}')
    raw_kind = _string(values.get("kind"), "kind")
    kind = AuthorKind.human
    if raw_kind is not None and raw_kind.strip():
        try:
            kind = AuthorKind(raw_kind.strip().lower())
        except ValueError:
            raise ValueError(f'"kind" must be "human" or "agent", not {raw_kind!r}') from None
    raw_time = values.get("time")
    if isinstance(raw_time, str) and not raw_time.strip():
        raw_time = None
    moment = _parse_time(raw_time) if raw_time is not None else None
    return TranscriptRow(speaker=speaker, text=text, time=moment, kind=kind)


def validate_records(records: Sequence[Record], max_chars: int) -> list[TranscriptRow]:
    """Typed rows, or ``TranscriptError`` listing every problem (none is written)."""
    if not records:
        raise _fail("the file is empty: it has no rows")
    problems: list[Problem] = []
    rows: list[tuple[int, TranscriptRow]] = []
    for line, values in records:
        try:
            rows.append((line, _row(values, max_chars)))
        except ValueError as error:
            problems.append(Problem(line, str(error)))
    problems += _time_consistency(rows)
    if problems:
        problems.sort(key=lambda p: p.line or 0)
        raise TranscriptError(problems)
    return [row for _, row in rows]


def _time_consistency(rows: Sequence[tuple[int, TranscriptRow]]) -> list[Problem]:
    timed = [line for line, row in rows if row.time is not None]
    if not timed or len(timed) == len(rows):
        return []
    example = timed[0]
    return [
        Problem(
            line, f'"time" is missing, but line {example} has one (give every row a time, or none)'
        )
        for line, row in rows
        if row.time is None
    ]


def check_rows(rows: Sequence[TranscriptRow], max_chars: int) -> None:
    """Validate rows built by hand as ``read_transcript`` validates a file."""
    validate_records(
        [
            (n, {"speaker": r.speaker, "text": r.text, "time": r.time, "kind": str(r.kind)})
            for n, r in enumerate(rows, start=1)
        ],
        max_chars,
    )


# --- import ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportResult:
    room_id: uuid.UUID
    messages: int
    speakers: int
    new_users: int
    first_time: datetime | None
    last_time: datetime | None
    first_message_id: int | None
    last_message_id: int | None


def import_email(room_id: uuid.UUID, speaker: str) -> str:
    """The synthetic, unique address of a speaker imported into a room."""
    slug = re.sub(r"[^a-z0-9]+", ".", speaker.lower()).strip(".")[:40].strip(".") or "speaker"
    digest = hashlib.sha256(f"{room_id}\x1f{speaker}".encode()).hexdigest()[:12]
    return f"{slug}.{digest}@{IMPORT_EMAIL_DOMAIN}"


async def import_transcript(
    session: AsyncSession,
    room_id: str | uuid.UUID,
    rows: Sequence[TranscriptRow],
    max_chars: int,
) -> ImportResult:
    """Insert the rows as messages of the room, in order; speakers become members.

    A speaker is the room member with that full name when there is one, else a new user
    (synthetic e-mail, no password; role ``agent`` when the speaker's first row is an agent's,
    else ``student``). Everything is validated first; flushes, never commits.
    """
    if not rows:
        raise _fail("the transcript has no rows")
    check_rows(rows, max_chars)
    room = await get_room(session, room_id)

    members = await session.execute(
        select(User.full_name, User.id)
        .join(RoomMember, RoomMember.user_id == User.id)
        .where(RoomMember.room_id == room.id)
        .order_by(RoomMember.joined_at, User.email)
    )
    by_name: dict[str, uuid.UUID] = {}
    for name, user_id in members.tuples():
        by_name.setdefault(name, user_id)

    first_kind: dict[str, AuthorKind] = {}
    for row in rows:
        first_kind.setdefault(row.speaker, row.kind)
    authors: dict[str, uuid.UUID] = {}
    new_users = 0
    for speaker, kind in first_kind.items():
        if speaker in by_name:
            authors[speaker] = by_name[speaker]
            continue
        email = import_email(room.id, speaker)
        user = (await session.execute(select(User).where(User.email == email))).scalar()
        if user is None:
            role = UserRole.agent if kind == AuthorKind.agent else UserRole.student
            user = User(email=email, full_name=speaker, role=role, hashed_password=None)
            session.add(user)
            await session.flush()
            new_users += 1
        await add_member(session, room.id, user.id)
        authors[speaker] = user.id

    values: list[dict[str, Any]] = []
    for row in rows:
        value: dict[str, Any] = {
            "room_id": room.id,
            "author_id": authors[row.speaker],
            "author_kind": row.kind,
            "content": row.text,
        }
        if row.time is not None:  # else the column default (the transaction's now())
            value["created_at"] = row.time
        values.append(value)
    result = await session.execute(
        insert(Message).returning(Message.id, sort_by_parameter_order=True), values
    )
    ids = [int(i) for i in result.scalars().all()]
    await session.flush()
    await analyze_after_bulk_load(session, Message.__tablename__, len(ids))
    times = [row.time for row in rows if row.time is not None]
    return ImportResult(
        room_id=room.id,
        messages=len(ids),
        speakers=len(authors),
        new_users=new_users,
        first_time=min(times) if times else None,
        last_time=max(times) if times else None,
        first_message_id=ids[0] if ids else None,
        last_message_id=ids[-1] if ids else None,
    )
