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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

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
    ordinal: int
    text: str
    n_tokens: int
    message_ids: tuple[int, ...] = field(default=())
    artifact_id: str | None = None
    # Where the chunk sits in the room, as a string that sorts in room order and does not move
    # when chunks are added or removed elsewhere (unlike ``ordinal``); see ``message_position``.
    position: str = ""


def message_position(message: SourceMessage, part: int = 0) -> str:
    """The position of a chunk that starts with ``message``: its time, its id, and the window
    number when one long message is split into several chunks. Conversation chunks sort before
    artifact chunks (``artifact_position``)."""
    micros = int(message.created_at.timestamp() * 1_000_000) if message.created_at else 0
    return f"m{micros:020d}.{message.id:020d}.{part:06d}"


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


def chunk_messages(
    room_id: str,
    messages: Sequence[SourceMessage],
    max_tokens: int,
    overlap_tokens: int,
    start_ordinal: int = 0,
) -> list[Chunk]:
    if max_tokens <= 0:
        raise ValueError("max_tokens must be positive")
    overlap_tokens = min(overlap_tokens, max_tokens // 2)
    modulus = max(4, max_tokens // _TOKENS_PER_ANCHOR)
    lines = [(m, f"{m.speaker}: {m.content}") for m in messages if m.content.strip()]
    sized = [(m, line, count_tokens(line) + 1) for m, line in lines]  # +1 for the newline

    chunks: list[Chunk] = []

    def emit(parts: list[tuple[SourceMessage, str, int]], part: int = 0) -> None:
        text = "\n".join(line for _, line, _ in parts)
        chunks.append(
            Chunk(
                id=chunk_id(room_id, text),
                room_id=room_id,
                ordinal=start_ordinal + len(chunks),
                text=text,
                n_tokens=sum(n for _, _, n in parts),
                message_ids=tuple(m.id for m, _, _ in parts),
                position=message_position(parts[0][0], part),
            )
        )

    current: list[tuple[SourceMessage, str, int]] = []
    current_tokens = 0
    fresh = 0  # messages in ``current`` not carried over from the previous chunk

    def close() -> None:
        nonlocal current, current_tokens, fresh
        emit(current)
        carried: list[tuple[SourceMessage, str, int]] = []
        budget = overlap_tokens
        for part in reversed(current):
            if part[2] > budget:
                break
            carried.insert(0, part)
            budget -= part[2]
        current, current_tokens, fresh = carried, sum(p[2] for p in carried), 0

    for message, line, n in sized:
        if n > max_tokens:
            # A message longer than a whole chunk: flush, then split it alone by tokens.
            if fresh:
                emit(current)
            current, current_tokens, fresh = [], 0, 0
            for part, window in enumerate(_windows(encode(line), max_tokens, overlap_tokens)):
                emit([(message, decode(window), len(window))], part)
            continue
        if fresh and _is_anchor(message.id, modulus) and current_tokens >= max_tokens // 4:
            # A hard boundary without overlap: both sides of an earlier edit agree from here.
            emit(current)
            current, current_tokens, fresh = [], 0, 0
        elif current_tokens + n > max_tokens and fresh:
            close()
            if current_tokens + n > max_tokens:
                current, current_tokens = [], 0
        current.append((message, line, n))
        current_tokens += n
        fresh += 1
    if fresh:
        emit(current)
    return chunks


def chunk_artifact(
    room_id: str,
    artifact: SourceArtifact,
    max_tokens: int,
    overlap_tokens: int,
    start_ordinal: int = 0,
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
                ordinal=start_ordinal + i,
                text=text,
                n_tokens=len(window) + count_tokens(header),
                artifact_id=artifact.id,
                position=artifact_position(artifact.id, i),
            )
        )
    return chunks


def chunk_room(
    room_id: str,
    messages: Sequence[SourceMessage],
    artifacts: Sequence[SourceArtifact],
    max_tokens: int,
    overlap_tokens: int,
) -> list[Chunk]:
    """All chunks of a room: the conversation first, then each artifact; ids are unique."""
    chunks = chunk_messages(room_id, messages, max_tokens, overlap_tokens)
    for artifact in artifacts:
        chunks += chunk_artifact(room_id, artifact, max_tokens, overlap_tokens, len(chunks))
    # Identical text (e.g. a repeated artifact) would give identical ids: keep the first.
    seen: set[str] = set()
    unique = []
    for chunk in chunks:
        if chunk.id not in seen:
            seen.add(chunk.id)
            unique.append(chunk)
    return unique
