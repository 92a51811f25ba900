"""Token-aware chunking of a room's conversation and artifacts.

Messages, in time order, are packed whole into chunks of at most ``max_tokens``; the next chunk
repeats the last whole messages of the previous one up to ``overlap_tokens``. A message is split
only when it alone exceeds ``max_tokens``. Artifacts are chunked separately.

Boundaries are content-defined: a message whose id hashes to an anchor (about one per 50 tokens of budget) starts a
new chunk, without overlap, once the current chunk holds a quarter of its budget. An edit or
deletion then moves only the boundaries up to the next anchor instead of every boundary after
it, so an incremental refresh re-extracts a few chunks, not the rest of the room. The chunk id is a hash of room + text, so unchanged text keeps its id.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from knowledge.tokens import count_tokens, decode, encode

# About one anchor per this many tokens of budget (by message id hash); see the module docstring.
_TOKENS_PER_ANCHOR = 50


@dataclass(frozen=True)
class SourceMessage:
    id: int
    speaker: str
    content: str
    # When it was said (evidence carries it; chunk text and ids do not depend on it).
    created_at: datetime | None = None


@dataclass(frozen=True)
class SourceArtifact:
    id: str
    title: str
    content: str


@dataclass(frozen=True)
class Chunk:
    id: str
    room_id: str
    #: The window number within one long message or one artifact (0 otherwise): it depends on
    #: the chunk alone, not on how many chunks come before it.
    ordinal: int
    text: str
    n_tokens: int
    message_ids: tuple[int, ...] = field(default=())
    artifact_id: str | None = None
    # Where the chunk sits in the room, as a string that sorts in room order and does not move
    # when chunks are added or removed elsewhere; see ``message_position``.
    position: str = ""
    #: Its first message is not in the previous chunk (nor is it a later window of a long
    #: message): the chunker reaches it from an empty state, so re-chunking can start here.
    clean_start: bool = True


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(moment: datetime | None) -> int:
    """Whole microseconds since the epoch, exactly (a float timestamp can be off by one, which
    would order two messages a microsecond apart by id instead of by time)."""
    if moment is None:
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1)


def message_position(message: SourceMessage, part: int = 0) -> str:
    """The position of a chunk that starts with ``message``: its time, its id, and the window
    number when one long message is split into several chunks. Conversation chunks sort before
    artifact chunks (``artifact_position``), and in the order the chunker reads messages
    (time, then id)."""
    return f"m{_micros(message.created_at):020d}.{message.id:020d}.{part:06d}"


def parse_message_position(position: str) -> tuple[datetime, int, int] | None:
    """(time, first message id, window) of a conversation chunk's position; None otherwise."""
    match = re.fullmatch(r"m(\d{20})\.(\d{20})\.(\d{6})", position)
    if match is None:
        return None
    micros, message_id, part = (int(g) for g in match.groups())
    return _EPOCH + timedelta(microseconds=micros), message_id, part


def artifact_position(artifact_id: str, index: int) -> str:
    return f"z{artifact_id}.{index:06d}"


def chunk_id(room_id: str, text: str) -> str:
    return hashlib.sha256(f"{room_id}\x1f{text}".encode()).hexdigest()[:32]


def _is_anchor(message_id: int, modulus: int) -> bool:
    digest = hashlib.blake2b(str(message_id).encode(), digest_size=2).digest()
    return int.from_bytes(digest, "big") % modulus == 0


def _windows(tokens: list[int], size: int, overlap: int) -> list[list[int]]:
    step = max(1, size - overlap)
    out = []
    for start in range(0, len(tokens), step):
        out.append(tokens[start : start + size])
        if start + size >= len(tokens):
            break
    return out


_Part = tuple[SourceMessage, str, int]  # a message, its line, its tokens (+1 for the newline)


class MessageChunker:
    """The conversation chunker, fed one message at a time (in time order).

    ``feed`` returns the chunks a message closes, ``finish`` the last one. The state between
    messages is only the chunk being filled, so the output from a clean-start chunk onward
    depends on nothing before it: fed the same messages from there with an empty state, the
    chunker emits the same chunks (``knowledge.indexing.chunks`` re-chunks a room from there).
    """

    def __init__(self, room_id: str, max_tokens: int, overlap_tokens: int) -> None:
        if max_tokens <= 0:
            raise ValueError("max_tokens must be positive")
        self.room_id = room_id
        self.max_tokens = max_tokens
        self.overlap_tokens = min(overlap_tokens, max_tokens // 2)
        self.modulus = max(4, max_tokens // _TOKENS_PER_ANCHOR)
        self.current: list[_Part] = []
        self.current_tokens = 0
        self.fresh = 0  # messages in ``current`` not carried over from the previous chunk
        self._previous: frozenset[int] = frozenset()  # message ids of the last chunk emitted
        self._out: list[Chunk] = []

    def _emit(self, parts: list[_Part], part: int = 0) -> None:
        text = "\n".join(line for _, line, _ in parts)
        first = parts[0][0]
        ids = tuple(m.id for m, _, _ in parts)
        self._out.append(
            Chunk(
                id=chunk_id(self.room_id, text),
                room_id=self.room_id,
                ordinal=part,
                text=text,
                n_tokens=sum(n for _, _, n in parts),
                message_ids=ids,
                position=message_position(first, part),
                clean_start=part == 0 and first.id not in self._previous,
            )
        )
        self._previous = frozenset(ids)

    def _close(self) -> None:
        self._emit(self.current)
        carried: list[_Part] = []
        budget = self.overlap_tokens
        for part in reversed(self.current):
            if part[2] > budget:
                break
            carried.insert(0, part)
            budget -= part[2]
        self.current, self.current_tokens, self.fresh = carried, sum(p[2] for p in carried), 0

    def feed(self, message: SourceMessage) -> list[Chunk]:
        self._out = []
        if not message.content.strip():
            return []
        line = f"{message.speaker}: {message.content}"
        n = count_tokens(line) + 1  # +1 for the newline
        max_tokens = self.max_tokens
        if n > max_tokens:
            # A message longer than a whole chunk: flush, then split it alone by tokens.
            if self.fresh:
                self._emit(self.current)
            self.current, self.current_tokens, self.fresh = [], 0, 0
            for part, window in enumerate(_windows(encode(line), max_tokens, self.overlap_tokens)):
                self._emit([(message, decode(window), len(window))], part)
            return self._out
        if (
            self.fresh
            and _is_anchor(message.id, self.modulus)
            and self.current_tokens >= max_tokens // 4
        ):
            # A hard boundary without overlap: both sides of an earlier edit agree from here.
            self._emit(self.current)
            self.current, self.current_tokens, self.fresh = [], 0, 0
        elif self.current_tokens + n > max_tokens and self.fresh:
            self._close()
            if self.current_tokens + n > max_tokens:
                self.current, self.current_tokens = [], 0
        self.current.append((message, line, n))
        self.current_tokens += n
        self.fresh += 1
        return self._out

    def finish(self) -> list[Chunk]:
        self._out = []
        if self.fresh:
            self._emit(self.current)
        self.current, self.current_tokens, self.fresh = [], 0, 0
        return self._out


def chunk_messages(
    room_id: str,
    messages: Iterable[SourceMessage],
    max_tokens: int,
    overlap_tokens: int,
) -> list[Chunk]:
    chunker = MessageChunker(room_id, max_tokens, overlap_tokens)
    chunks: list[Chunk] = []
    for message in messages:
        chunks += chunker.feed(message)
    return chunks + chunker.finish()


def chunk_artifact(
    room_id: str,
    artifact: SourceArtifact,
    max_tokens: int,
    overlap_tokens: int,
) -> list[Chunk]:
    header = f"Artifact: {artifact.title}\n"
    body_budget = max(1, max_tokens - count_tokens(header))
    tokens = encode(artifact.content)
    if not tokens:
        return []
    chunks = []
    for i, window in enumerate(
        _windows(tokens, body_budget, min(overlap_tokens, body_budget // 2))
    ):
        text = header + decode(window)
        chunks.append(
            Chunk(
                id=chunk_id(room_id, text),
                room_id=room_id,
                ordinal=i,
                text=text,
                n_tokens=len(window) + count_tokens(header),
                artifact_id=artifact.id,
                position=artifact_position(artifact.id, i),
                clean_start=i == 0,
            )
        )
    return chunks


def dedupe(chunks: Iterable[Chunk]) -> tuple[list[Chunk], dict[str, int]]:
    """The first chunk of each id, in order, and how many times each id came (identical text,
    e.g. a repeated artifact or a long message pasted twice, gives identical ids)."""
    copies: dict[str, int] = {}
    unique = []
    for chunk in chunks:
        if chunk.id not in copies:
            copies[chunk.id] = 0
            unique.append(chunk)
        copies[chunk.id] += 1
    return unique, copies


def room_emissions(
    room_id: str,
    messages: Iterable[SourceMessage],
    artifacts: Iterable[SourceArtifact],
    max_tokens: int,
    overlap_tokens: int,
) -> list[Chunk]:
    """Every chunk the room's sources give, repeated ids included: the conversation first,
    then each artifact."""
    chunks = chunk_messages(room_id, messages, max_tokens, overlap_tokens)
    for artifact in artifacts:
        chunks += chunk_artifact(room_id, artifact, max_tokens, overlap_tokens)
    return chunks


def chunk_room(
    room_id: str,
    messages: Sequence[SourceMessage],
    artifacts: Sequence[SourceArtifact],
    max_tokens: int,
    overlap_tokens: int,
) -> list[Chunk]:
    """All chunks of a room: the conversation first, then each artifact; ids are unique (of
    identical texts, the first is kept)."""
    return dedupe(room_emissions(room_id, messages, artifacts, max_tokens, overlap_tokens))[0]
