"""Evidence retrieval, end to end on small rooms indexed by the real steps (offline platform:
fast extractor, hashing embedder, pgvector + PostgreSQL graph), and once against the local
OpenAI-compatible server for the no-LLM-call promise of ``mode=evidence``.

Each test names the behaviour it guards, and each was seen failing with that behaviour broken
(the temporal test carries its own counter-check: without the time window the newer message
wins).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from dbschema.models import Artifact, Message
from knowledge import indexing
from knowledge.artifacts import create_artifact
from knowledge.chat import delete_message
from knowledge.errors import InvalidInputError, NotFoundError
from knowledge.extraction.fast import FastExtractor
from knowledge.platform import Platform, open_platform
from knowledge.retrieval import SIGNALS, Evidence, RetrievalOptions
from knowledge.retrieval.units import load_units, room_profile
from knowledge.rooms import parse_room_id
from knowledge.search import Answer, Mode, Route, answer_question, find_evidence
from knowledge.settings import Settings
from knowledge.transcripts import TranscriptRow, import_transcript
from pipelines.resources import KnowledgeResource
from tests.conftest import add_messages, make_room
from tests.llm_server import FakeOpenAI


async def index(platform: Platform, room_id: str) -> None:
    """Every step of the room index, in pipeline order."""
    await indexing.sync_chunks(platform, room_id)
    await indexing.sync_evidence(platform, room_id)
    await indexing.build_graph(platform, room_id)
    await indexing.detect_communities(platform, room_id)
    await indexing.write_reports(platform, room_id)


async def timed_room(platform: Platform, rows: Sequence[TranscriptRow]) -> str:
    room_id = await make_room(platform, [], "timed room")
    async with platform.session() as session:
        await import_transcript(session, room_id, rows, platform.settings.max_message_chars)
        await session.commit()
    return room_id


async def message_ids(platform: Platform, room_id: str) -> dict[str, int]:
    """Text -> message id, for the room's live messages."""
    async with platform.session() as session:
        rows = await session.execute(
            select(Message.content, Message.id).where(
                Message.room_id == parse_room_id(room_id), Message.deleted_at.is_(None)
            )
        )
        return {content: mid for content, mid in rows.tuples()}


def ranked_ids(evidence: Sequence[Evidence]) -> list[str]:
    return [e.id for e in evidence if e.kind == "message"]


def without(*signals: str, rerank: str = "auto") -> RetrievalOptions:
    return RetrievalOptions(signals=frozenset(SIGNALS) - set(signals), rerank=rerank)


def at(day: str, hour: int = 10) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


# A team chat with a budget thread among other threads. The answer names no entity and shares
# one word ("spend") with the question; other messages share more.
BUDGET_ROOM = [
    ("Ann", "Morning all. Quick one on the budget for the spring offsite."),
    ("Bob", "Go ahead, I have ten minutes before standup."),
    ("Ann", "Marketing asked how far we can stretch it this year."),
    ("Cy", "yes, we can spend twelve thousand on it"),
    ("Bob", "Nice. I will book the train tickets tomorrow."),
    ("Dee", "The printer on the second floor is jammed again."),
    ("Eve", "I spend too much time on email; any tips?"),
    ("Bob", "Mute the notifications and check twice a day."),
    ("Dee", "The quarterly budget spreadsheet is in the shared drive."),
    ("Eve", "How much coffee is left in the kitchen?"),
    ("Ann", "Two bags, I ordered more."),
    ("Cy", "Reminder: the security training is due Friday."),
    ("Dee", "Who can review my pull request for the login page?"),
    ("Bob", "I can, after lunch."),
    ("Eve", "The budget for the new laptops was approved last month."),
    ("Cy", "Please spend a minute on the team survey."),
    ("Ann", "The offsite agenda draft is ready for comments."),
    ("Dee", "How much notice do we need to give for vacation?"),
    ("Bob", "Two weeks, according to the handbook."),
    ("Eve", "The parking garage closes early on Thursday."),
    ("Cy", "We should spend less on cloud storage; the bill doubled."),
    ("Dee", "Lunch order closes at eleven."),
    ("Ann", "The offsite hotel has a big garden."),
    ("Bob", "Can someone water the plants while I am away?"),
    ("Eve", "The budget review meeting moved to Wednesday."),
    ("Cy", "The release notes are published on the wiki."),
    ("Dee", "How much memory does the build server have?"),
    ("Bob", "Sixty-four gigabytes."),
    ("Ann", "The new intern starts on the first of the month."),
    ("Eve", "Thanks everyone for a productive week."),
]
BUDGET_ANSWER = "yes, we can spend twelve thousand on it"


async def test_an_answer_that_names_no_entity_is_found(platform: Platform) -> None:
    assert FastExtractor().extract_one(f"Cy: {BUDGET_ANSWER}").entities == []
    room = await make_room(platform, BUDGET_ROOM, "budget")
    await index(platform, room)
    answer_id = str((await message_ids(platform, room))[BUDGET_ANSWER])
    question = "how much can we spend on the budget?"

    found = await find_evidence(platform, room, question, top_k=10)
    assert answer_id in ranked_ids(found.evidence), [e.text for e in found.evidence]
    hit = next(e for e in found.evidence if e.id == answer_id)
    assert hit.speaker == "Cy" and hit.text == BUDGET_ANSWER
    assert {"lexical", "context"} & set(hit.signals)
    answer = await answer_question(platform, room, question)
    assert answer_id in ranked_ids(answer.evidence)


async def test_a_paraphrased_question_finds_its_message(platform: Platform) -> None:
    target = "I had to postpone the vendor meeting until next week."
    lines = [
        ("Ann", "The meetings calendar is shared with everyone now."),
        ("Bob", target),
        ("Cy", "The vendor sent the new price list."),
        ("Dee", "Our weekly sync stays on Tuesday."),
        ("Eve", "The conference room projector works again."),
        ("Ann", "Please book meetings rooms a day in advance."),
    ]
    room = await make_room(platform, lines, "paraphrase")
    await index(platform, room)
    target_id = str((await message_ids(platform, room))[target])
    # "postponed" / "postpone" and "meetings" / "meeting": only stemming matches them, and
    # the message holding both forms ranks first.
    for question in ("Which meetings were postponed?", "Has anything been postponed?"):
        found = await find_evidence(platform, room, question, top_k=5)
        assert ranked_ids(found.evidence)[:1] == [target_id], (question, found.evidence)
        assert found.evidence[0].signals.get("lexical") == 1


TIMED_ROWS = [
    TranscriptRow(
        "Ann",
        "After a long call with the organisers, we decided that the conference venue will "
        "be the big hall next to the station.",
        at("2025-03-04"),
    ),
    TranscriptRow("Bob", "Great, I will tell catering.", at("2025-03-04", 11)),
    TranscriptRow("Cy", "The speaker list is almost complete.", at("2025-03-20")),
    TranscriptRow("Dee", "Slides are due two weeks before the event.", at("2025-03-27")),
    TranscriptRow("Bob", "Badges are ordered.", at("2025-04-02")),
    TranscriptRow("Ann", "Venue decided: the Old Mill.", at("2025-04-15")),
    TranscriptRow("Dee", "The hotel block is reserved.", at("2025-04-22")),
    TranscriptRow("Cy", "See you all at the conference.", at("2025-05-02")),
]


async def test_a_temporal_question_picks_the_dated_message(platform: Platform) -> None:
    room = await timed_room(platform, TIMED_ROWS)
    await index(platform, room)
    ids = await message_ids(platform, room)
    march, april = str(ids[TIMED_ROWS[0].text]), str(ids["Venue decided: the Old Mill."])
    question = "What did we decide about the venue in March?"

    for options in (None, RetrievalOptions(rerank="none")):
        found = await find_evidence(platform, room, question, options=options)
        assert found.plan.time.has_window and found.plan.time.phrase == "in March"
        ranked = ranked_ids(found.evidence)
        assert ranked.index(march) < ranked.index(april), (options, found.evidence)
        assert found.evidence[0].id == march and "time" in found.evidence[0].signals
        assert found.evidence[0].time == at("2025-03-04")
    # Without the time window the shorter April message wins on words alone.
    timeless = await find_evidence(platform, room, question, options=without("time", rerank="none"))
    ranked = ranked_ids(timeless.evidence)
    assert ranked.index(april) < ranked.index(march)


async def test_first_or_latest_orders_by_time_only_when_the_times_differ(
    platform: Platform,
) -> None:
    """ "The first …" orders the topical hits oldest first. An undated transcript's messages
    all carry their import's time: there is no order, and the time signal proposes nothing
    (sorted by equal times it was the lexical list again, counted twice in the fusion)."""
    undated = await timed_room(
        platform, [TranscriptRow(r.speaker, r.text, None) for r in TIMED_ROWS]
    )
    dated = await timed_room(platform, TIMED_ROWS)
    question = "What was the first thing said about the venue?"
    for room in (undated, dated):
        await index(platform, room)
    found = await find_evidence(platform, undated, question)
    assert found.plan.time.direction == -1
    stage = next(s for s in found.stages if s.stage == "time")
    assert stage.found == 0 and "no time order" in stage.note
    assert not any("time" in e.signals for e in found.evidence)

    found = await find_evidence(platform, dated, question)
    stage = next(s for s in found.stages if s.stage == "time")
    assert stage.found >= 2
    timed = [e for e in found.evidence if "time" in e.signals]
    first = min(timed, key=lambda e: e.signals["time"])
    assert first.time == min(e.time for e in timed if e.time is not None)


ALIAS_ROOM = [
    ("Ann", "Taylor Cruz will lead the migration project."),
    ("Bob", "I talked with Taylor Cruz about the migration timeline yesterday."),
    ("Cy", "Taylor Cruz wants the staging database ready by Friday."),
    ("Dee", "The printer on floor two is broken again."),
    ("Bob", "I asked Cruz about the disks, and Cruz agreed to order more."),
]


async def test_aliases_merge_and_unmerge(platform: Platform) -> None:
    room = await make_room(platform, ALIAS_ROOM, "aliases")
    await index(platform, room)
    aliases = {a.alias: a.canonical for a in await indexing.room_aliases(platform, room)}
    assert aliases == {"cruz": "taylor cruz"}
    names = set(await platform.graph.entity_names(room))
    assert "taylor cruz" in names and "cruz" not in names
    # A question by the alias reaches the canonical entity and the messages naming it.
    found = await find_evidence(platform, room, "What did Cruz say about the migration?")
    assert "taylor cruz" in found.plan.entities
    assert "graph" in found.evidence[0].signals

    ids = await message_ids(platform, room)
    async with platform.session() as session:
        await delete_message(session, parse_room_id(room), ids[ALIAS_ROOM[4][1]])
        await session.commit()
    await index(platform, room)
    assert await indexing.room_aliases(platform, room) == []
    assert "taylor cruz" in set(await platform.graph.entity_names(room))


HUB_ROOM = [
    ("Morgan Lee", "Acme Corp signed the contract this morning."),
    ("Morgan Lee", "The Paris office opens in June."),
    ("Morgan Lee", "Project Falcon ships next sprint with the Billing Service."),
    ("Morgan Lee", "Dana Fox joins the Design Team on Monday."),
    ("Ann", "Thanks! Is the Billing Service ready for Acme Corp?"),
    ("Morgan Lee", "The Berlin team reviews Project Falcon tomorrow."),
    ("Morgan Lee", "Globex Industries wants a demo of the Billing Service."),
]


async def test_speakers_do_not_become_hubs(platform: Platform) -> None:
    room = await make_room(platform, HUB_ROOM, "hub")
    await index(platform, room)
    graph = await platform.graph.get_graph(room)
    names = {e.name for e in graph.entities}
    assert {"acme corp", "project falcon", "billing service"} <= names
    assert "morgan lee" not in names and "ann" not in names
    assert graph.relationships
    endpoints = {n for r in graph.relationships for n in (r.source, r.target)}
    assert not endpoints & {"morgan lee", "ann"}, graph.relationships

    # Named in a message, the speaker is an entity like any other.
    await add_messages(platform, room, [("Ann", "Morgan Lee presents the roadmap on Friday.")])
    await index(platform, room)
    graph = await platform.graph.get_graph(room)
    assert "morgan lee" in {e.name for e in graph.entities}
    assert not {n for r in graph.relationships for n in (r.source, r.target)} & {"ann"}


# --- rooms, deletions, top_k -----------------------------------------------------------------


SHARED_TEXT = [
    ("Ann", "The launch of the Orion dashboard slipped to May."),
    ("Bob", "Orion needs the billing export before launch."),
    ("Cy", "The billing export is done; Orion can launch."),
    ("Dee", "Marketing prepares the Orion launch email."),
    ("Eve", "What are the main themes of the launch so far?"),
]


async def _room_of(platform: Platform, kind: str, ids: Sequence[str]) -> set[str]:
    """The room ids the messages (or artifacts) belong to."""
    model = Message if kind == "message" else Artifact
    key = [int(i) for i in ids] if kind == "message" else [uuid.UUID(i) for i in ids]
    async with platform.session() as session:
        rows = await session.execute(select(model.room_id).where(model.id.in_(key)))
        return {str(r) for r in rows.scalars()}


async def _answers(platform: Platform, room: str, questions: Sequence[str]) -> list[Answer]:
    out = []
    for question in questions:
        for route in (Route.local, Route.global_):
            for mode in (Mode.answer, Mode.evidence):
                out.append(await answer_question(platform, room, question, route, 10, mode))
    return out


async def test_citations_exist_in_the_room_and_never_cross_rooms(platform: Platform) -> None:
    room_a = await make_room(platform, SHARED_TEXT, "room a")
    # Room B says the same things, and more about the same words.
    room_b = await make_room(
        platform,
        [*SHARED_TEXT, ("Fay", "Orion launch, billing export, Orion launch, Orion launch.")],
        "room b",
    )
    async with platform.session() as session:
        await create_artifact(
            session, parse_room_id(room_b), "Orion notes", "Orion launch checklist.", 10_000
        )
        await create_artifact(
            session, parse_room_id(room_a), "Orion plan", "The Orion launch plan.", 10_000
        )
        await session.commit()
    for room in (room_a, room_b):
        await index(platform, room)
    questions = [
        "When does Orion launch?",
        "What about the billing export?",
        "What are the main themes?",
    ]
    answers = await _answers(platform, room_a, questions)
    for answer in answers:
        # Citations are units of the answer's evidence.
        assert {(c.kind, c.id) for c in answer.citations} <= {
            (e.kind, e.id) for e in answer.evidence
        }
    for kind in ("message", "artifact"):
        cited = {c.id for a in answers for c in a.citations if c.kind == kind}
        evidence = {e.id for a in answers for e in a.evidence if e.kind == kind}
        assert cited and evidence
        assert await _room_of(platform, kind, sorted(cited | evidence)) == {room_a}

    # A message deleted after indexing (no refresh yet) is never evidence nor cited.
    ids = await message_ids(platform, room_a)
    gone = ids["The billing export is done; Orion can launch."]
    before = await find_evidence(platform, room_a, "Is the billing export done?")
    assert str(gone) in ranked_ids(before.evidence)[:3]
    async with platform.session() as session:
        await delete_message(session, parse_room_id(room_a), gone)
        await session.commit()
    for answer in await _answers(platform, room_a, ["Is the billing export done?", *questions]):
        assert str(gone) not in {c.id for c in answer.citations if c.kind == "message"}
        assert str(gone) not in ranked_ids(answer.evidence)
        assert all(
            e.id in {str(i) for i in ids.values()} for e in answer.evidence if e.kind == "message"
        )


async def test_top_k_bounds_the_evidence(platform: Platform) -> None:
    room = await make_room(platform, BUDGET_ROOM, "top k")
    await index(platform, room)
    question = "What about the budget and the offsite?"
    for top_k in (1, 3, 10):
        for mode in (Mode.answer, Mode.evidence):
            answer = await answer_question(platform, room, question, top_k=top_k, mode=mode)
            assert len(answer.evidence) == top_k, (top_k, mode)
            scores = [e.score for e in answer.evidence]
            assert scores == sorted(scores, reverse=True)
    everything = await find_evidence(platform, room, question, top_k=50)
    assert 10 < len(everything.evidence) <= 50
    for bad in (0, 51, -1):
        with pytest.raises(InvalidInputError):
            await answer_question(platform, room, question, top_k=bad)


# --- mode=evidence makes no LLM call -----------------------------------------------------------


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def llm_settings(settings: Settings, fake: FakeOpenAI) -> Settings:
    return KnowledgeResource(
        overrides={
            "openai_api_key": "test-key",
            "llm_base_url": fake.base_url,
            "llm_embedding_dim": "64",
            "llm_timeout_seconds": "5",
        }
    ).settings()


async def test_evidence_mode_makes_no_llm_call(fake: FakeOpenAI, llm_settings: Settings) -> None:
    async with open_platform(llm_settings) as platform:
        assert platform.llm is not None
        room = await make_room(platform, SHARED_TEXT, "llm evidence")
        await index(platform, room)
        assert fake.calls["chat"] > 0  # the build went through the LLM
        question = f"When does Orion launch? ({uuid.uuid4().hex[:6]})"

        fake.reset()
        for route in (None, Route.local, Route.global_):
            answer = await answer_question(platform, room, question, route, mode=Mode.evidence)
            assert answer.answer == "" and answer.evidence
            assert [c.id for c in answer.citations] == [e.id for e in answer.evidence]
        assert fake.calls["chat"] == 0, fake.calls

        # The same question answered goes through the LLM (route, then the answer).
        answered = await answer_question(platform, room, question)
        assert answered.answer.startswith("Answer:")
        assert fake.calls["chat"] >= 2, fake.calls


async def test_units_load_with_live_neighbours_of_their_own_room(platform: Platform) -> None:
    # Room B's messages fall between room A's by id, and one of A's is deleted: a unit's
    # neighbouring turns are the previous and next live messages of its own room.
    room_a = await make_room(platform, [("Ann", "a1"), ("Bob", "a2"), ("Ann", "a3")], "units a")
    room_b = await make_room(platform, [("Cy", "b1"), ("Cy", "b2")], "units b")
    await add_messages(platform, room_a, [("Bob", "a4"), ("Ann", "a5"), ("Bob", "a6")])
    ids = await message_ids(platform, room_a)
    other = await message_ids(platform, room_b)
    async with platform.session() as session:
        await delete_message(session, parse_room_id(room_a), ids["a4"])
        await session.commit()

    def uid(mid: int) -> str:
        return f"m:{mid}"

    loaded = await load_units(platform, room_a, [uid(ids["a3"])], neighbours=True)
    assert sorted(u.text for u in loaded.values()) == ["a2", "a3", "a5"]
    a3 = loaded[uid(ids["a3"])]
    assert (a3.previous_id, a3.next_id) == (ids["a2"], ids["a5"])
    assert [u.text for u in (await load_units(platform, room_a, [uid(ids["a3"])])).values()] == [
        "a3"
    ]
    # Another room's message and a deleted one are never loaded, as units or as neighbours.
    assert await load_units(platform, room_a, [uid(other["b1"]), uid(ids["a4"])], True) == {}
    # Before a5: the deleted a4, then room B's two; after a3: room B's two, then a4.
    a5 = (await load_units(platform, room_a, [uid(ids["a5"])], neighbours=True))[uid(ids["a5"])]
    assert (a5.previous_id, a5.next_id) == (ids["a3"], ids["a6"])
    edge = await load_units(platform, room_a, [uid(ids["a6"])], neighbours=True)
    assert sorted(u.text for u in edge.values()) == ["a5", "a6"]


async def test_room_profile_reads_the_plan_inputs(platform: Platform) -> None:
    room = await make_room(platform, [("Ann Lee", "hello"), ("Bob", "hi")], "profile")
    profile = await room_profile(platform, room)
    assert profile.speakers == ["Ann Lee", "Bob"]
    assert profile.aliases == {}
    assert profile.last_time is not None
    with pytest.raises(NotFoundError):
        await room_profile(platform, str(uuid.uuid4()))
