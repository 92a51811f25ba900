"""The chunks and evidence steps work on the change (``room_changes``), not on the room.

- Equivalence: for seeded random sequences of appends, edits, deletes, moves in time, messages
  inserted in the past, long messages, renames and artifact changes, with delta refreshes
  between some of them, the stored chunks (ids, text, messages, position...) and the chunk
  and evidence points are exactly what chunking every source gives, and what a wipe + full
  build stores.
- Cost: a refresh after one appended message reads a bounded number of messages and chunk
  rows, the same in a room twice as large (counted reads, not time).
- Triggers: a message written by plain SQL is picked up; a bulk statement asks for the room.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from dbschema.models import Message, RoomChange, RoomChunk, User
from knowledge import artifacts, chat
from knowledge.chat import load_room_sources
from knowledge.chunking import dedupe, room_emissions
from knowledge.indexing import sync_chunks, sync_evidence, wipe_room
from knowledge.indexing.evidence import _items, _passage_unit, passage_unit_id
from knowledge.indexing.vectors import _fingerprints
from knowledge.platform import Platform
from knowledge.stores.base import CHUNKS, EVIDENCE
from tests.conftest import make_room

WORDS = (
    "plan senate grain army corioli marcius rome vote tribune people field wound gown "
    "voice consul banish volsces mother gates siege battle speech honour"
).split()
SPEAKERS = ("Ann", "Bob", "Cyd", "Dee")
OPS = ("append", "append_many", "edit", "delete", "move", "past", "long", "artifact", "rename")


def sized(platform: Platform, tokens: int, overlap: int) -> Platform:
    settings = platform.settings.model_copy(
        update={"chunk_tokens": tokens, "chunk_overlap_tokens": overlap}
    )
    return dataclasses.replace(platform, settings=settings)


@pytest.fixture
def small(platform: Platform) -> Platform:
    """Small chunks, so that a room of a few hundred messages has many boundaries."""
    return sized(platform, 96, 24)


def sentence(rng: random.Random, lo: int = 2, hi: int = 14) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


async def expected_state(platform: Platform, room_id: str) -> dict[str, Any]:
    """What a full build stores, computed from the sources alone."""
    settings = platform.settings
    async with platform.session() as session:
        messages, arts = await load_room_sources(session, room_id)
    unique, copies = dedupe(
        room_emissions(
            room_id, messages, arts, settings.chunk_tokens, settings.chunk_overlap_tokens
        )
    )
    chunk_items = {
        c.id: (c.text, {"message_ids": list(c.message_ids), "artifact_id": c.artifact_id})
        for c in unique
    }
    evidence, embed = _items(messages)
    evidence.update(
        {
            passage_unit_id(c.id): _passage_unit(c.artifact_id, c.text)
            for c in unique
            if c.artifact_id
        }
    )
    return {
        "rows": {
            c.id: (
                c.text,
                c.message_ids,
                c.position,
                c.artifact_id,
                c.n_tokens,
                c.ordinal,
                copies[c.id],
            )
            for c in unique
        },
        # Chunks and evidence have dense vectors only with a real embedding model.
        CHUNKS: _fingerprints(platform, chunk_items, {}, dense=platform.embedder.semantic),
        EVIDENCE: _fingerprints(platform, evidence, embed, dense=platform.embedder.semantic),
    }


async def stored_state(platform: Platform, room_id: str) -> dict[str, Any]:
    async with platform.session() as session:
        rows = (
            await session.execute(select(RoomChunk).where(RoomChunk.room_id == room_id))
        ).scalars()
        stored_rows = {
            r.id: (
                r.text,
                tuple(r.message_ids),
                r.position,
                r.artifact_id,
                r.n_tokens,
                r.ordinal,
                r.copies,
            )
            for r in rows
        }
    return {
        "rows": stored_rows,
        CHUNKS: await platform.vectors.fingerprints(CHUNKS, room_id),
        EVIDENCE: await platform.vectors.fingerprints(EVIDENCE, room_id),
    }


def diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key in a:
        only_a = {k: v for k, v in a[key].items() if b[key].get(k) != v}
        only_b = {k: v for k, v in b[key].items() if a[key].get(k) != v}
        if only_a or only_b:
            out[key] = {
                "stored": dict(list(only_a.items())[:3]),
                "expected": dict(list(only_b.items())[:3]),
            }
    return out


async def refresh(platform: Platform, room_id: str) -> tuple[Any, Any]:
    return await sync_chunks(platform, room_id), await sync_evidence(platform, room_id)


class Room:
    """A room and its speakers, changed at random through the API (and plain SQL)."""

    def __init__(
        self, platform: Platform, room_id: str, rng: random.Random, words: tuple[int, int] = (2, 14)
    ) -> None:
        self.platform, self.room_id, self.rng = platform, room_id, rng
        self.words = words
        self.room = uuid.UUID(room_id)
        self.users: list[uuid.UUID] = []
        self.artifacts: list[uuid.UUID] = []

    async def setup(self) -> None:
        async with self.platform.session() as session:
            self.users = list(
                (
                    await session.execute(
                        select(Message.author_id).where(Message.room_id == self.room).distinct()
                    )
                ).scalars()
            )
            for title in ("Battle plan", "Senate notes"):
                art = await artifacts.create_artifact(
                    session,
                    self.room,
                    title,
                    " ".join(sentence(self.rng, 20, 40) for _ in range(6)),
                    self.platform.settings.max_artifact_chars,
                )
                self.artifacts.append(art.id)
            await session.commit()

    async def live_ids(self) -> list[int]:
        async with self.platform.session() as session:
            return list(
                (
                    await session.execute(
                        select(Message.id)
                        .where(Message.room_id == self.room, Message.deleted_at.is_(None))
                        .order_by(Message.created_at, Message.id)
                    )
                ).scalars()
            )

    def sentence(self) -> str:
        return sentence(self.rng, *self.words)

    async def step(self) -> str:
        rng, max_chars = self.rng, self.platform.settings.max_message_chars
        ids = await self.live_ids()
        op = rng.choices(
            OPS,
            weights=[30, 6, 20, 15, 6, 6, 4, 4, 1],
        )[0]
        async with self.platform.session() as session:
            if op == "append":
                await chat.post_message(
                    session, self.room, rng.choice(self.users), self.sentence(), max_chars
                )
            elif op == "append_many":
                for _ in range(rng.randint(2, 12)):
                    await chat.post_message(
                        session, self.room, rng.choice(self.users), self.sentence(), max_chars
                    )
            elif op == "edit" and ids:
                await chat.edit_message(
                    session,
                    self.room,
                    rng.choice(ids),
                    sentence(rng, 1, 2 * self.words[1]),
                    max_chars,
                )
            elif op == "delete" and len(ids) > 5:
                for _ in range(rng.choice([1, 1, 1, 3])):
                    target = rng.choice(ids)
                    ids.remove(target)
                    await chat.delete_message(session, self.room, target)
            elif op == "move" and ids:
                # created_at moves the message elsewhere in the conversation (plain SQL).
                await session.execute(
                    text(
                        "UPDATE messages SET created_at = created_at - make_interval(secs => :s) "
                        "WHERE id = :id"
                    ),
                    {"s": rng.uniform(0.001, 5), "id": rng.choice(ids)},
                )
            elif op == "past" and ids:
                anchor = await session.get(Message, rng.choice(ids))
                assert anchor is not None
                await chat.post_message(
                    session,
                    self.room,
                    rng.choice(self.users),
                    sentence(rng),
                    max_chars,
                    created_at=anchor.created_at - timedelta(microseconds=rng.randint(0, 3)),
                )
            elif op == "long":
                # Longer than a chunk: split in windows.
                body = " ".join(sentence(rng, 30, 40) for _ in range(3))
                await chat.post_message(session, self.room, rng.choice(self.users), body, max_chars)
            elif op == "artifact":
                target = rng.choice(self.artifacts)
                if rng.random() < 0.7:
                    await artifacts.update_artifact(
                        session,
                        self.room,
                        target,
                        self.platform.settings.max_artifact_chars,
                        content=" ".join(sentence(rng, 20, 40) for _ in range(rng.randint(1, 6))),
                    )
                else:
                    art = await artifacts.create_artifact(
                        session,
                        self.room,
                        "Extra",
                        sentence(rng, 30, 60),
                        self.platform.settings.max_artifact_chars,
                    )
                    self.artifacts.append(art.id)
            elif op == "rename":
                user = await session.get(User, rng.choice(self.users))
                assert user is not None
                user.full_name = f"{user.full_name}~"
            await session.commit()
        return op


#: (seed, chunk tokens, overlap, words per message): mostly anchor boundaries (clean starts)
#: in the first, mostly overflow boundaries with overlap in the others.
CASES = [(1, 96, 24, (2, 14)), (2, 96, 40, (8, 30)), (3, 120, 50, (4, 24)), (4, 160, 60, (8, 30))]


@pytest.mark.parametrize(("seed", "tokens", "overlap", "words"), CASES)
async def test_delta_refreshes_store_what_a_full_build_stores(
    platform: Platform, seed: int, tokens: int, overlap: int, words: tuple[int, int]
) -> None:
    small = sized(platform, tokens, overlap)
    rng = random.Random(seed)
    lines = [(rng.choice(SPEAKERS), sentence(rng, *words)) for _ in range(160)]
    room_id = await make_room(small, lines, f"delta {seed}")
    room = Room(small, room_id, rng, words)
    await room.setup()
    chunks, evidence = await refresh(small, room_id)
    # No chunks yet: full; the evidence has a row per message (fewer than 1000 per statement).
    assert (chunks.mode, evidence.mode) == ("full", "delta")
    assert await stored_state(small, room_id) == await expected_state(small, room_id)

    modes: list[str] = []
    reasons: list[str] = []
    ops: list[str] = []
    for step in range(70):
        ops.append(await room.step())
        if rng.random() < 0.4 or step in (35, 69):
            chunks, evidence = await refresh(small, room_id)
            modes.append(chunks.mode)
            reasons.append(chunks.reason)
            stored, expected = (
                await stored_state(small, room_id),
                await expected_state(small, room_id),
            )
            assert stored == expected, (step, ops[-5:], chunks, diff(stored, expected))
            ops.append("|")
        if step == 35:
            # The literal reference: a wipe and a full build store the same.
            before = await stored_state(small, room_id)
            await wipe_room(small, room_id)
            rebuilt = await refresh(small, room_id)
            assert rebuilt[0].mode == rebuilt[1].mode == "full"
            assert await stored_state(small, room_id) == before
    # The delta did the work (a full run only where it must: a rename, a repeated text).
    assert modes.count("delta") >= len(modes) // 2, (modes, reasons, ops)
    # Nothing pending, and a refresh without changes reads nothing and writes nothing.
    again = await refresh(small, room_id)
    assert again[0].mode == again[1].mode == "unchanged"
    assert again[0].messages_read == 0 and again[0].vectors.written == 0
    assert again[1].vectors.written == again[1].vectors.deleted == 0


async def test_one_new_message_reads_a_bounded_part_of_the_room(small: Platform) -> None:
    rng = random.Random(7)
    reads = {}
    for size in (600, 1200):
        lines = [(rng.choice(SPEAKERS), sentence(rng)) for _ in range(size)]
        room_id = await make_room(small, lines, f"reads {size}")
        await refresh(small, room_id)
        counts = []
        for _ in range(5):
            async with small.session() as session:
                author = (
                    (
                        await session.execute(
                            select(Message.author_id).where(Message.room_id == uuid.UUID(room_id))
                        )
                    )
                    .scalars()
                    .first()
                )
                await chat.post_message(
                    session, room_id, author, sentence(rng), small.settings.max_message_chars
                )
                await session.commit()
            chunks, evidence = await refresh(small, room_id)
            assert chunks.mode == evidence.mode == "delta"
            assert chunks.changes == evidence.changes == 1
            assert evidence.messages == 1 and evidence.vectors.written == 1
            assert chunks.vectors.written <= chunks.added + chunks.moved
            counts.append((chunks.messages_read, chunks.chunks_read))
        assert await stored_state(small, room_id) == await expected_state(small, room_id)
        reads[size] = counts
    for size, counts in reads.items():
        # A few chunks' worth of messages (chunks of 96 tokens hold ~8 of these messages),
        # never the room: the full build read `size` messages and ~size/4 chunks.
        assert all(m <= 120 and c <= 80 for m, c in counts), (size, counts)
    # Twice the room, not twice the reads.
    assert max(m for m, _ in reads[1200]) <= 2 * max(max(m for m, _ in reads[600]), 30), reads


async def test_a_message_written_by_plain_sql_is_picked_up(small: Platform) -> None:
    rng = random.Random(11)
    room_id = await make_room(small, [(rng.choice(SPEAKERS), sentence(rng)) for _ in range(80)])
    assert (await refresh(small, room_id))[0].mode == "full"
    async with small.engine.begin() as conn:
        author = (
            await conn.execute(
                text("SELECT author_id FROM messages WHERE room_id = :r LIMIT 1"), {"r": room_id}
            )
        ).scalar_one()
        new_id = (
            await conn.execute(
                text(
                    "INSERT INTO messages (room_id, author_id, author_kind, content) "
                    "VALUES (:r, :a, 'human', 'the tribunes count the voices') RETURNING id"
                ),
                {"r": room_id, "a": author},
            )
        ).scalar_one()
        # One row per step, naming the message.
        rows = (
            await conn.execute(
                select(RoomChange.consumer, RoomChange.message_id).where(
                    RoomChange.room_id == room_id
                )
            )
        ).all()
        assert sorted(rows) == [("chunks", new_id), ("evidence", new_id)]
    chunks, evidence = await refresh(small, room_id)
    assert chunks.mode == evidence.mode == "delta"
    assert await stored_state(small, room_id) == await expected_state(small, room_id)
    async with small.session() as session:
        holding = (
            await session.execute(
                select(RoomChunk.id).where(RoomChunk.message_ids.any(new_id))  # type: ignore[arg-type]
            )
        ).all()
        assert holding
        assert (
            await session.execute(select(RoomChange).where(RoomChange.room_id == room_id))
        ).all() == []

    # A deletion by plain SQL (no soft delete) is seen too.
    async with small.engine.begin() as conn:
        await conn.execute(text("DELETE FROM messages WHERE id = :id"), {"id": new_id})
    chunks, _ = await refresh(small, room_id)
    assert chunks.mode == "delta" and chunks.removed
    assert await stored_state(small, room_id) == await expected_state(small, room_id)

    # A statement that writes many messages of a room asks for the whole room instead.
    async with small.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO messages (room_id, author_id, author_kind, content) "
                "SELECT :r, :a, 'human', 'vote ' || g FROM generate_series(1, 1001) g"
            ),
            {"r": room_id, "a": author},
        )
        rows = (
            await conn.execute(
                select(RoomChange.consumer, RoomChange.message_id).where(
                    RoomChange.room_id == room_id
                )
            )
        ).all()
        assert sorted(rows, key=str) == [("chunks", None), ("evidence", None)]
    chunks, evidence = await refresh(small, room_id)
    assert chunks.mode == evidence.mode == "full"
    assert await stored_state(small, room_id) == await expected_state(small, room_id)


async def test_a_rename_rebuilds_the_rooms_of_the_speaker(small: Platform) -> None:
    room_id = await make_room(small, [("Ann", "the grain is late"), ("Bob", "blame the senate")])
    other = await make_room(small, [("Cyd", "nothing to see")])
    await refresh(small, room_id)
    await refresh(small, other)
    async with small.session() as session:
        author = (
            await session.execute(
                select(Message.author_id).where(
                    Message.room_id == uuid.UUID(room_id), Message.content == "the grain is late"
                )
            )
        ).scalar_one()
        user = await session.get(User, author)
        assert user is not None
        user.full_name = "Annabel"
        await session.commit()
    chunks, evidence = await refresh(small, room_id)
    assert chunks.mode == evidence.mode == "full" and chunks.reason == "whole room requested"
    assert any(
        "Annabel: the grain is late" in r[0]
        for r in (await stored_state(small, room_id))["rows"].values()
    )
    assert (await refresh(small, other))[0].mode == "unchanged"


async def test_a_vector_store_behind_the_rows_is_caught_up(small: Platform) -> None:
    """Chunks stored, points gone (another vector store configured): the probe sees it."""
    room_id = await make_room(small, [(SPEAKERS[i % 4], f"vote {i} grain") for i in range(40)])
    await refresh(small, room_id)
    await small.vectors.wipe_room(room_id)
    chunks, evidence = await refresh(small, room_id)
    assert chunks.mode == evidence.mode == "full"
    assert await stored_state(small, room_id) == await expected_state(small, room_id)


async def test_a_text_twice_in_the_room_is_chunked_whole_until_it_is_gone(small: Platform) -> None:
    """The same long message twice gives one chunk id two places; only the first is stored, so
    the delta cannot see the second: the room is re-chunked whole while that lasts."""
    rng = random.Random(5)
    room_id = await make_room(small, [(rng.choice(SPEAKERS), sentence(rng)) for _ in range(60)])
    room = Room(small, room_id, rng)
    await room.setup()
    await refresh(small, room_id)
    body = " ".join(sentence(rng, 30, 40) for _ in range(3))
    copies = []
    async with small.session() as session:
        for _ in range(2):
            message = await chat.post_message(
                session, room_id, room.users[0], body, small.settings.max_message_chars
            )
            copies.append(message.id)
            await chat.post_message(
                session, room_id, room.users[1], sentence(rng), small.settings.max_message_chars
            )
        await session.commit()
    chunks, _ = await refresh(small, room_id)
    # The delta met the repeat while re-chunking and gave up.
    assert chunks.mode == "full" and chunks.reason == "a new chunk text occurs more than once"
    state = await stored_state(small, room_id)
    assert state == await expected_state(small, room_id)
    assert max(row[-1] for row in state["rows"].values()) == 2
    await room.step()
    chunks, _ = await refresh(small, room_id)
    assert chunks.mode == "full" and "more than once" in chunks.reason
    assert await stored_state(small, room_id) == await expected_state(small, room_id)
    # The first copy goes: the second one's windows are stored in its place.
    async with small.session() as session:
        await chat.delete_message(session, uuid.UUID(room_id), copies[0])
        await session.commit()
    chunks, _ = await refresh(small, room_id)
    assert chunks.mode == "full"
    state = await stored_state(small, room_id)
    assert state == await expected_state(small, room_id)
    assert {row[-1] for row in state["rows"].values()} == {1}
    await room.step()
    assert (await refresh(small, room_id))[0].mode in ("delta", "unchanged")
    assert await stored_state(small, room_id) == await expected_state(small, room_id)


async def test_changes_far_apart_in_one_refresh(small: Platform) -> None:
    """An edit and a message moved from late in the room to just after it, in one refresh:
    re-chunking must not stop between the moved message's new place and its old one."""
    rng = random.Random(13)
    room_id = await make_room(small, [("Ann", "opening")])
    async with small.session() as session:
        author = (
            await session.execute(
                select(Message.author_id).where(Message.room_id == uuid.UUID(room_id))
            )
        ).scalar_one()
        base = (await session.execute(select(text("now()")))).scalar_one()
        ids = []
        for i in range(200):
            message = await chat.post_message(
                session,
                room_id,
                author,
                sentence(rng),
                small.settings.max_message_chars,
                created_at=base + timedelta(seconds=i + 1),
            )
            ids.append(message.id)
        await session.commit()
    await refresh(small, room_id)
    for k in range(1, 12):
        edited, moved = 20 + 15 * k, 199 - k
        async with small.session() as session:
            await chat.edit_message(
                session,
                uuid.UUID(room_id),
                ids[edited],
                sentence(rng),
                small.settings.max_message_chars,
            )
            await session.execute(
                text("UPDATE messages SET created_at = :t WHERE id = :id"),
                {"t": base + timedelta(seconds=edited + 1 + k / 12), "id": ids[moved]},
            )
            await session.commit()
        chunks, _ = await refresh(small, room_id)
        assert chunks.mode == "delta"
        stored, expected = await stored_state(small, room_id), await expected_state(small, room_id)
        assert stored == expected, (k, diff(stored, expected))
