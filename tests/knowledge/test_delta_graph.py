"""The graph step on the delta (``knowledge.indexing.graph``) leaves the state a rebuild leaves.

Seeded random sequences of appends, edits and deletes of messages (and members joining), with a
delta graph build after some of them; at checkpoints the stored entities, relationships (weights,
descriptions, provenance), aliases and entity vectors are read, the room is wiped and indexed in
full, and the two states must be equal. Names are chosen to exercise entity resolution (trimmed
verbs, containment, acronyms, nicknames of speakers who join later), so alias merges appear and
disappear as messages come and go.

``run_sequence`` is shared with ``tests/stores/test_delta_graph_neo4j.py`` (the same check on the
Neo4j graph store).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select, update

from dbschema.models import GraphMergedEntity, Message, UserRole
from knowledge import chat, courses, rooms, users
from knowledge.extraction import ExtractedEntity, Extraction
from knowledge.graph import GraphMerger
from knowledge.indexing import build_graph, room_aliases, sync_chunks, wipe_room
from knowledge.indexing.graph import GraphBuild, _apply_chunks, _merge_names, _Merged
from knowledge.platform import Platform, open_platform
from knowledge.settings import Settings
from knowledge.stores.base import ENTITIES

PEOPLE = ["Taylor Cruz", "Samantha Reed", "Priya Natarajan", "Valeria Ortiz"]
LATE_SPEAKER = "Mikkel Holm"  # joins later: "Mik" then resolves to him
SHORT = ["Cruz", "TC", "Sam", "PN", "Mik", "Valeria", "Reed", "Priya"]
ORGS = ["Acme Corp", "Globex Inc", "Initech Labs", "Acme"]
PLACES = ["Paris", "Lisbon", "Berlin", "Porto"]
# Capitalized at a line start before a name ("Ping Valeria"), and now and then written in lower
# case: the entity-resolution rule that trims them comes and goes with those messages.
VERBS = ["tell", "ping", "thank", "remind"]
THINGS = ["Graph Store", "Neo4j", "Qdrant", "Project Atlas", "Atlas", "Store"]
TEMPLATES = [
    "{a} met {b} in {place} to talk about the {thing}.",
    "{Verb} {short} that {org} wants the {thing} by Friday.",
    "{verb} me more about the {thing}, please",
    "{a} and {short} will call {org} tomorrow about {thing}.",
    "{org} moved the {thing} to {place}; {b} agreed.",
    "ok",
    "{short} says {thing} and {thing2} work well together.",
]


def _text(rng: random.Random) -> str:
    verb = rng.choice(VERBS)
    return rng.choice(TEMPLATES).format(
        verb=verb,
        Verb=verb.title(),
        a=rng.choice(PEOPLE),
        b=rng.choice(PEOPLE),
        short=rng.choice(SHORT),
        org=rng.choice(ORGS),
        place=rng.choice(PLACES),
        thing=rng.choice(THINGS),
        thing2=rng.choice(THINGS),
    )


@pytest.fixture
async def small_chunks(settings: Settings) -> AsyncIterator[Platform]:
    """A platform that cuts small chunks (so a room of a few dozen messages has many)."""
    tuned = settings.model_copy(update={"chunk_tokens": 48, "chunk_overlap_tokens": 8})
    async with open_platform(tuned) as platform:
        yield platform


async def snapshot(platform: Platform, room_id: str) -> dict[str, Any]:
    """Everything the graph step stores for the room, comparable with ``==``."""
    graph = await platform.graph.get_graph(room_id)
    return {
        "entities": [
            {k: v for k, v in asdict(e).items() if k != "descriptions"} for e in graph.entities
        ],
        "relationships": [asdict(r) for r in graph.relationships],
        "aliases": [asdict(a) for a in await room_aliases(platform, room_id)],
        "vectors": await platform.vectors.fingerprints(ENTITIES, room_id),
        # The build state the next delta starts from: the merged rows, before resolution.
        "merged": await merged_rows(platform, room_id),
    }


async def merged_rows(platform: Platform, room_id: str) -> list[tuple[Any, ...]]:
    async with platform.session() as session:
        rows = await session.execute(
            select(GraphMergedEntity)
            .where(GraphMergedEntity.room_id == room_id)
            .order_by(GraphMergedEntity.name)
        )
        return [
            (
                r.name,
                r.display_name,
                r.type,
                r.type_counts,
                r.descriptions,
                r.source_chunk_ids,
                r.mentions,
            )
            for r in rows.scalars()
        ]


def _diff(delta: dict[str, Any], full: dict[str, Any]) -> str:
    """A readable first difference (the assertion message)."""
    for key in full:
        if delta[key] != full[key]:
            if isinstance(full[key], dict):
                a, b = delta[key], full[key]
                keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                return f"{key}: {[(k, a.get(k), b.get(k)) for k in keys[:5]]}"
            a_rows, b_rows = delta[key], full[key]
            extra = [r for r in a_rows if r not in b_rows][:3]
            missing = [r for r in b_rows if r not in a_rows][:3]
            return f"{key}: delta has {extra}, a rebuild has {missing}"
    return ""


class Room:
    """A room driven by random changes."""

    def __init__(self, platform: Platform, rng: random.Random) -> None:
        self.platform = platform
        self.rng = rng
        self.room_id = ""
        self.authors: list[uuid.UUID] = []

    async def create(self, messages: int) -> None:
        async with self.platform.session() as session:
            course = await courses.create_course(session, f"delta {uuid.uuid4().hex[:6]}")
            room = await rooms.create_room(session, course.id, "delta graph")
            self.room_id = str(room.id)
            for name in PEOPLE[:3]:
                await self._join(session, name)
            await session.commit()
        await self.append(messages)

    async def _join(self, session: Any, name: str) -> None:
        user = await users.create_user(
            session, f"{uuid.uuid4().hex[:10]}@test.local", name, UserRole.student
        )
        await rooms.add_member(session, uuid.UUID(self.room_id), user.id)
        self.authors.append(user.id)

    async def join(self, name: str) -> None:
        async with self.platform.session() as session:
            await self._join(session, name)
            await session.commit()

    async def append(self, n: int, content: str | None = None) -> None:
        async with self.platform.session() as session:
            for _ in range(n):
                await chat.post_message(
                    session,
                    self.room_id,
                    self.rng.choice(self.authors),
                    content or _text(self.rng),
                    self.platform.settings.max_message_chars,
                )
            await session.commit()

    async def _live(self, session: Any) -> list[int]:
        rows = await session.execute(
            select(Message.id)
            .where(Message.room_id == uuid.UUID(self.room_id), Message.deleted_at.is_(None))
            .order_by(Message.id)
        )
        return list(rows.scalars())

    async def edit(self) -> None:
        async with self.platform.session() as session:
            live = await self._live(session)
            if live:
                await chat.edit_message(
                    session,
                    uuid.UUID(self.room_id),
                    self.rng.choice(live),
                    _text(self.rng),
                    self.platform.settings.max_message_chars,
                )
            await session.commit()

    async def delete(self, n: int = 1) -> None:
        async with self.platform.session() as session:
            live = await self._live(session)
            for message_id in self.rng.sample(live, min(n, len(live))):
                await chat.delete_message(session, uuid.UUID(self.room_id), message_id)
            await session.commit()

    async def build(self) -> GraphBuild:
        await sync_chunks(self.platform, self.room_id)
        return await build_graph(self.platform, self.room_id)


async def run_sequence(
    platform: Platform, seed: int, steps: int, checkpoints: int, room: Room | None = None
) -> list[str]:
    """Random changes with delta builds between some of them; at each checkpoint the state
    must equal a rebuild's. Returns the modes of the builds (so callers see deltas ran)."""
    rng = random.Random(seed)
    room = room or Room(platform, rng)
    room.rng = rng
    await room.create(40)
    modes = [(await room.build()).mode]
    checkpoint_at = set(rng.sample(range(1, steps), checkpoints - 1)) | {steps}
    joined = False
    for step in range(1, steps + 1):
        op = rng.choices(["append", "edit", "delete", "burst", "join"], [4, 3, 3, 1, 1])[0]
        if op == "append":
            await room.append(rng.randint(1, 3))
        elif op == "edit":
            await room.edit()
        elif op == "delete":
            await room.delete(rng.randint(1, 2))
        elif op == "burst":  # several changes at once before one build
            await room.append(rng.randint(4, 10))
            await room.delete(rng.randint(2, 5))
            await room.edit()
        elif not joined:
            await room.join(LATE_SPEAKER)
            joined = True
        if rng.random() < 0.7 or step in checkpoint_at:
            modes.append((await room.build()).mode)
        if step in checkpoint_at:
            delta = await snapshot(platform, room.room_id)
            await wipe_room(platform, room.room_id)
            rebuilt = await room.build()
            assert rebuilt.mode == "full"
            full = await snapshot(platform, room.room_id)
            assert delta == full, f"seed {seed}, step {step}: {_diff(delta, full)}"
    assert full["entities"] and full["relationships"] and full["aliases"]
    return modes


async def test_deleting_the_lower_case_word_undoes_a_trim_and_a_join_adds_a_nickname(
    small_chunks: Platform,
) -> None:
    """The room's ordinary words are counted per chunk: deleting the only message that writes
    "ping" in lower case makes "Ping Valeria Ortiz" a name of its own again; a member who joins turns
    "Mik" into an alias of that member."""
    room = Room(small_chunks, random.Random(5))
    await room.create(0)
    filler = ["sounds good", "ok", "will do", "thanks", "nice work", "same here"]
    lines = [
        "I told Ping Valeria Ortiz that Acme Corp wants the Graph Store.",
        "Valeria Ortiz moved the Graph Store to Porto.",
        *filler,
        "Mik says Qdrant and Neo4j work well together. Ask Mik about Qdrant.",
        *filler,
        # the only lower-case "ping", in a chunk of its own (the extractor trims within one)
        "ping me when the Graph Store is up",
    ]
    for line in lines:
        await room.append(1, line)
    assert (await room.build()).mode == "full"
    aliases = {a.alias: a.canonical for a in await room_aliases(small_chunks, room.room_id)}
    assert aliases.get("ping valeria ortiz") == "valeria ortiz"
    assert "mik" not in aliases
    async with small_chunks.session() as session:
        last = (await room._live(session))[-1]
        await chat.delete_message(session, uuid.UUID(room.room_id), last)
        await session.commit()
    assert (await room.build()).mode == "delta"
    aliases = {a.alias: a.canonical for a in await room_aliases(small_chunks, room.room_id)}
    assert "ping valeria ortiz" not in aliases
    # no chunk changed, only the members
    await room.join(LATE_SPEAKER)
    assert (await room.build()).mode == "delta"
    delta = await snapshot(small_chunks, room.room_id)
    aliases = {a["alias"]: a["canonical"] for a in delta["aliases"]}
    assert aliases.get("mik") == "mikkel holm"
    assert "mikkel holm" in {e["name"] for e in delta["entities"]}
    await wipe_room(small_chunks, room.room_id)
    assert (await room.build()).mode == "full"
    full = await snapshot(small_chunks, room.room_id)
    assert delta == full, _diff(delta, full)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_delta_builds_leave_the_state_of_a_rebuild(small_chunks: Platform, seed: int) -> None:
    modes = await run_sequence(small_chunks, seed, steps=14, checkpoints=3)
    assert modes[0] == "full"
    assert modes.count("delta") >= 5, modes


async def test_a_refresh_after_one_message_reads_a_constant_number_of_chunks(
    small_chunks: Platform,
) -> None:
    room = Room(small_chunks, random.Random(11))
    await room.create(240)
    full = await room.build()
    assert full.mode == "full" and full.chunks >= 40
    assert full.chunks_read == full.chunks
    await room.append(1, "Taylor Cruz met Dr. Ines Moreau in Porto to talk about the Qdrant.")
    after = await room.build()
    assert after.mode == "delta"
    # the one or two chunks the message lands in, not the room's
    assert 1 <= after.chunks_read <= 2, after
    assert after.extractions_read <= 2, after
    assert after.chunks_extracted <= 2, after
    # only the rows that changed are written: a message names at most a handful of entities
    assert 0 < after.entities_written <= 12, after
    assert after.relationships_written <= 20, after
    assert after.vectors.written <= after.entities_written + 4, after
    assert after.entities == full.entities or abs(after.entities - full.entities) <= 4
    # nothing changed: nothing read, nothing written
    again = await room.build()
    assert again.mode == "unchanged"
    assert again.chunks_read == again.extractions_read == again.entities_written == 0
    assert again.entities == after.entities and again.relationships == after.relationships


def _extraction(*entities: tuple[str, str, str]) -> Extraction:
    return Extraction(
        entities=[ExtractedEntity(name=n, type=t, description=d) for n, t, d in entities]
    )


# (chunk id, position, extraction): chunk ids sort against their positions. Every rule of the
# merge is exercised: first display by chunk position (not by chunk id), the most counted
# specific type with ties to the first by code point, ENTITY only when nothing else, the first
# five distinct non-empty descriptions, distinct chunks in first-mention order, and a name
# said twice in one chunk.
MERGE_CHUNKS = [
    ("c-z", "m0001", _extraction(("Atlas", "project", "one"), ("neo", "ENTITY", ""))),
    ("c-y", "m0002", _extraction(("ATLAS", "PRODUCT", "two"), ("Neo", "entity", "n"))),
    ("c-x", "m0003", _extraction(("atlas", "ENTITY", "one"), ("atlas", "PROJECT", "three"))),
    ("c-w", "m0004", _extraction(("Atlas", "PRODUCT", "four"), ("Atlas", "ENTITY", ""))),
    ("c-v", "m0005", _extraction(("Atlas", "ENTITY", "five"), ("Solo", "place", "six"))),
    ("c-u", "m0006", _extraction(("atlas", "ENTITY", "six"), ("Atlas", "ENTITY", "seven"))),
]


async def _apply(
    platform: Platform,
    room_id: str,
    chunks: list[tuple[str, str, Extraction]],
    gone: tuple[str, ...] = (),
) -> Any:
    new = [SimpleNamespace(id=cid, position=pos, text="") for cid, pos, _ in chunks]
    async with platform.session() as session:
        merged = await _apply_chunks(
            session, room_id, list(gone), new, {cid: (pos, ext) for cid, pos, ext in chunks}
        )
        await session.commit()
    return merged


def _folded(chunks: list[tuple[str, str, Extraction]]) -> list[tuple[Any, ...]]:
    merger = GraphMerger()
    for cid, _, ext in chunks:
        merger.add_extraction(cid, ext)
    return [
        (
            e.name,
            e.display_name,
            e.type,
            dict(merger.types[e.name]),
            e.descriptions,
            e.source_chunk_ids,
            e.mentions,
        )
        for e in merger.graph().entities
    ]


async def test_the_delta_merge_of_names_is_the_fold_of_all_their_mentions(
    platform: Platform,
) -> None:
    """The delta path folds new mentions into the stored merged rows, takes re-chunked tail
    chunks back out of them, or merges a name from all its mentions in the server; a full
    build folds every mention in Python. All four give the same rows."""
    expected = _folded(MERGE_CHUNKS)
    assert expected[0][:3] == ("atlas", "Atlas", "PRODUCT")  # PRODUCT 2, PROJECT 2: code point
    assert expected[0][4:] == (
        ["one", "two", "three", "four", "five"],
        ["c-z", "c-y", "c-x", "c-w", "c-v", "c-u"],
        9,
    )
    assert expected[1][:3] == ("neo", "neo", "ENTITY") and expected[1][4] == ["n"]

    # Appended in two refreshes: the second folds into the rows the first wrote.
    appended = f"merge-{uuid.uuid4().hex[:12]}"
    first = await _apply(platform, appended, MERGE_CHUNKS[:3])
    second = await _apply(platform, appended, MERGE_CHUNKS[3:])
    assert await merged_rows(platform, appended) == expected
    assert first.names_folded == second.names_folded == 2
    assert first.mentions_read == second.mentions_read == 0  # nothing read back

    # The last chunk re-chunked (gone, and back with one mention more): taken out, folded in.
    rechunked = (
        "c-t",
        "m0006",
        _extraction(("atlas", "ENTITY", "six"), ("Atlas", "ENTITY", "seven"), ("Neo", "X", "")),
    )
    third = await _apply(platform, appended, [rechunked], gone=("c-u",))
    assert await merged_rows(platform, appended) == _folded([*MERGE_CHUNKS[:5], rechunked])
    assert third.mentions_read == 0 and third.names_folded == 2

    # A chunk gone from the middle cannot be taken out of a fold: merged from the mentions.
    fourth = await _apply(platform, appended, [], gone=("c-x",))
    after = [c for c in MERGE_CHUNKS[:5] if c[0] != "c-x"] + [rechunked]
    assert await merged_rows(platform, appended) == _folded(after)
    assert fourth.names_folded == 0 and fourth.mentions_read == 7  # atlas' remaining mentions

    # A re-chunked tail that had brought a description the row keeps: merged from mentions.
    late = ("c-s", "m0007", _extraction(("Neo", "X", "late")))
    await _apply(platform, appended, [late])
    assert await merged_rows(platform, appended) == _folded([*after, late])
    without = ("c-r", "m0007", _extraction(("Neo", "X", "")))
    sixth = await _apply(platform, appended, [without], gone=("c-s",))
    after.append(without)
    assert await merged_rows(platform, appended) == _folded(after)
    assert sixth.names_folded == 0 and sixth.mentions_read == 4

    # The first chunk gone: neo's display name was its mention there (no description).
    seventh = await _apply(platform, appended, [], gone=("c-z",))
    after = after[1:]
    assert await merged_rows(platform, appended) == _folded(after)
    assert seventh.names_folded == 0 and seventh.mentions_read == 6 + 3

    # Rows without their type counts (written before 0017) are merged from their mentions.
    async with platform.session() as session:
        await session.execute(
            update(GraphMergedEntity)
            .where(GraphMergedEntity.room_id == appended)
            .values(type_counts=None)
        )
        out = _Merged(names={"atlas", "neo", "solo"})
        await _merge_names(session, appended, out, {}, {})
        await session.commit()
    assert await merged_rows(platform, appended) == _folded(after)
    assert out.mentions_read == 6 + 3 + 1 and out.names_folded == 0
