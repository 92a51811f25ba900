"""Time intent of a question: the window it names, relative to the room's timeline.

"in May", "on April 14", "2026-04-14", "the week of April 20", "last week", "yesterday",
"last Tuesday", "this month" become a [start, end) window; relative phrases count back from the
room's last message (a room is read as of its own timeline, not of today). Words like "when",
"latest", "first", "before" mark a question as temporal without naming a window; "latest",
"current", "final", "now" prefer newer messages and "first", "originally", "initially" older
ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

_MONTHS = {
    name: i
    for i, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ],
        start=1,
    )
    for name in names
}
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_MONTH_RE = "|".join(sorted(_MONTHS, key=len, reverse=True))
_ORDINAL = r"(\d{1,2})(?:st|nd|rd|th)?"

_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_MONTH_DAY = re.compile(rf"\b({_MONTH_RE})\.?\s+{_ORDINAL}\b(?:,?\s*(\d{{4}}))?", re.IGNORECASE)
_DAY_MONTH = re.compile(rf"\b{_ORDINAL}\s+(?:of\s+)?({_MONTH_RE})\b(?:,?\s*(\d{{4}}))?", re.I)
_WEEK_OF = re.compile(rf"\bweek\s+of\s+(?:the\s+)?({_MONTH_RE})\.?\s+{_ORDINAL}\b", re.IGNORECASE)
_MONTH_ONLY = re.compile(rf"\b(?:in|during|of|early|late|mid|through)\s+({_MONTH_RE})\b", re.I)
_WEEKDAY = re.compile(r"\b(last|this|on)?\s*(" + "|".join(_WEEKDAYS) + r")\b", re.IGNORECASE)
_RELATIVE = {
    "yesterday": ("day", -1),
    "today": ("day", 0),
    "last week": ("week", -1),
    "past week": ("days7", -1),
    "this week": ("week", 0),
    "last month": ("month", -1),
    "this month": ("month", 0),
    "recently": ("days14", -1),
}
_TEMPORAL_WORDS = re.compile(
    r"\b(when|what (?:day|date|time)|date|dates|dated|before|after|since|until|latest|last|"
    r"first|earlier|later|originally|initially|previous|previously|currently|current|now|"
    r"final|recent|recently|moved|changed|postponed|rescheduled|deadline|week|month|day)\b",
    re.IGNORECASE,
)
_NEWER = re.compile(
    r"\b(latest|current|currently|now|final|most recent|ended up|in the end|still|new)\b", re.I
)
_OLDER = re.compile(
    r"\b(first|originally|original|initially|initial|earliest|at first|before it (?:moved|"
    r"changed|slipped)|previous|previously|old)\b",
    re.IGNORECASE,
)


_EVENT = re.compile(
    r"\b(?:(?:on|in)\s+)?(?:the\s+)?(?P<unit>day|week|morning|evening)?\s*"
    r"(?P<rel>after|before|following|of)\s+(?:the\s+|our\s+|that\s+)?"
    r"(?P<event>[a-z0-9][\w' -]{2,60}?)(?=\s*(?:[?,.;]|$|\bwhen\b|\band\b))",
    re.IGNORECASE,
)
# Words that make "after X" a clause about something else, not a dated event.
_NOT_EVENTS = {"it", "that", "this", "we", "they", "he", "she", "you", "i", "all", "which"}


@dataclass(frozen=True)
class EventAnchor:
    """A window named by an event ("the day after the outage"): the event's words and how the
    window stands to the event's time."""

    event: str
    relation: str  # day_after, day_before, day_of, week_after, week_before, after, before


def parse_event_anchor(question: str) -> EventAnchor | None:
    for match in _EVENT.finditer(question):
        unit = (match.group("unit") or "").lower()
        rel = match.group("rel").lower()
        event = match.group("event").strip()
        first = event.split()[0].lower()
        if first in _NOT_EVENTS or first in _MONTHS or first in _WEEKDAYS:
            continue
        if rel == "of" and unit not in ("day", "week", "morning", "evening"):
            continue
        if rel == "following":
            rel = "after"
        span = "week" if unit == "week" else "day" if unit else ""
        relation = f"{span}_{rel}" if span else rel
        if relation == "week_of":
            relation = "week_after"
        if relation in ("morning_after", "evening_after"):
            relation = "day_after"
        return EventAnchor(event=event, relation=relation)
    return None


def event_window(anchor: EventAnchor, moment: datetime) -> tuple[datetime, datetime]:
    """The [since, until) window that ``anchor`` names around the event's ``moment``."""
    day = moment.astimezone(UTC).date()
    relation = anchor.relation
    if relation == "day_after":
        return _day(day + timedelta(days=1))
    if relation == "day_before":
        return _day(day - timedelta(days=1))
    if relation in ("day_of", "morning_of", "evening_of"):
        return _day(day)
    if relation == "week_after":
        return moment, moment + timedelta(days=7)
    if relation == "week_before":
        return moment - timedelta(days=7), moment
    if relation == "before":
        return moment - timedelta(days=14), moment
    return moment, moment + timedelta(days=14)


@dataclass(frozen=True)
class TimeIntent:
    #: The window the question names, [since, until) in UTC, or None.
    since: datetime | None = None
    until: datetime | None = None
    #: The question asks about time (a window, "when", "before", "latest", …).
    temporal: bool = False
    #: +1: prefer newer messages, -1: prefer older, 0: no preference.
    direction: int = 0
    #: The words of the question that named the window (not topic words).
    phrase: str = ""
    #: A window named by an event, resolved against the room once the event is found.
    event: EventAnchor | None = None
    #: The date names a thing the question is about ("the April 14 outage", "the model that
    #: went live on May 11"), not the time of the answer: a boost, not a filter.
    attributive: bool = False

    @property
    def has_window(self) -> bool:
        return self.since is not None and self.until is not None


def _day(d: date) -> tuple[datetime, datetime]:
    start = datetime.combine(d, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _year_for(month: int, anchor: date) -> int:
    """A month without a year is the latest such month not after the room's end."""
    return anchor.year if month <= anchor.month else anchor.year - 1


def parse_time_intent(question: str, anchor: datetime | None) -> TimeIntent:
    """The time intent of ``question``; ``anchor`` is the room's last message time."""
    anchor = (anchor or datetime.now(UTC)).astimezone(UTC)
    today = anchor.date()
    temporal = bool(_TEMPORAL_WORDS.search(question))
    direction = 1 if _NEWER.search(question) else -1 if _OLDER.search(question) else 0
    window: tuple[datetime, datetime] | None = None
    phrase = ""

    if match := _WEEK_OF.search(question):
        month, day = _MONTHS[match.group(1).lower()], int(match.group(2))
        try:
            start = date(_year_for(month, today), month, day)
        except ValueError:
            start = None
        if start is not None:
            start -= timedelta(days=start.weekday())
            window = (_day(start)[0], _day(start + timedelta(days=6))[1])
            phrase = match.group(0)
    if window is None and (match := _ISO_DATE.search(question)):
        try:
            window = _day(date(int(match.group(1)), int(match.group(2)), int(match.group(3))))
            phrase = match.group(0)
        except ValueError:
            window = None
    if window is None:
        for pattern, month_group, day_group in ((_MONTH_DAY, 1, 2), (_DAY_MONTH, 2, 1)):
            match = pattern.search(question)
            if match is None:
                continue
            month = _MONTHS[match.group(month_group).lower()]
            year = int(match.group(3)) if match.group(3) else _year_for(month, today)
            try:
                window = _day(date(year, month, int(match.group(day_group))))
                phrase = match.group(0)
                break
            except ValueError:
                continue
    if window is None and (match := _MONTH_ONLY.search(question)):
        name = match.group(1).lower()
        # "may" is also a verb: only "in May" / "during May"… reach here, and only capitalized.
        if name != "may" or "May" in match.group(0):
            month = _MONTHS[name]
            year = _year_for(month, today)
            start = date(year, month, 1)
            end = date(year + (month == 12), month % 12 + 1, 1)
            window = (_day(start)[0], _day(end)[0])
            phrase = match.group(0)
    if window is None and (match := _WEEKDAY.search(question)):
        # "Tuesday", "last Tuesday", "on Tuesday this week", "Tuesday last week".
        wanted = _WEEKDAYS.index(match.group(2).lower())
        lowered = question.lower()
        if "last week" in lowered or "previous week" in lowered:
            monday = today - timedelta(days=today.weekday() + 7)
            named_day = monday + timedelta(days=wanted)
        else:
            back = (today.weekday() - wanted) % 7
            if (match.group(1) or "").lower() == "last" and back == 0:
                back = 7
            named_day = today - timedelta(days=back)
        window = _day(named_day)
        phrase = match.group(0).strip()
    if window is None:
        lowered = question.lower()
        for words, (unit, offset) in _RELATIVE.items():
            if words in lowered:
                window = _relative(unit, offset, today)
                phrase = words
                break
    if window is None:
        event = parse_event_anchor(question)
        return TimeIntent(temporal=temporal or event is not None, direction=direction, event=event)
    return TimeIntent(
        window[0], window[1], True, direction, phrase, attributive=_attributive(question, phrase)
    )


#: "the April 14 webhook outage", "the May 4 load test rerun": the date between an article and
#: the noun it qualifies.
_BEFORE_ATTRIBUTIVE = re.compile(r"\b(?:the|this|that|our)\s+$", re.IGNORECASE)
_AFTER_ATTRIBUTIVE = re.compile(r"^['’]?s?\s+[a-z]", re.IGNORECASE)
#: "the model that went live on May 11": the date inside a relative clause.
_RELATIVE_CLAUSE = re.compile(r"\b(?:that|which|who)\s+(?:\w+\s+){1,5}(?:on|in)\s+$", re.I)


def _attributive(question: str, phrase: str) -> bool:
    """Whether the date phrase qualifies a noun of the question rather than its answer."""
    at = question.find(phrase) if phrase else -1
    if at < 0:
        return False
    before, after = question[:at], question[at + len(phrase) :]
    if _BEFORE_ATTRIBUTIVE.search(before) and _AFTER_ATTRIBUTIVE.search(after):
        return True
    return bool(_RELATIVE_CLAUSE.search(before))


def _relative(unit: str, offset: int, today: date) -> tuple[datetime, datetime]:
    if unit == "day":
        return _day(today + timedelta(days=offset))
    if unit.startswith("days"):
        days = int(unit[4:])
        return _day(today - timedelta(days=days - 1))[0], _day(today)[1]
    if unit == "week":
        monday = today - timedelta(days=today.weekday()) + timedelta(weeks=offset)
        return _day(monday)[0], _day(monday + timedelta(days=6))[1]
    first = today.replace(day=1)
    if offset < 0:
        first = (first - timedelta(days=1)).replace(day=1)
    month_end = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    return _day(first)[0], _day(month_end)[0]
