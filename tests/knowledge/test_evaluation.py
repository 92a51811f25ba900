"""Golden questions (validated against the room's live messages) and the retrieval scores."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from dbschema.models import GoldenQuestion, Message
from knowledge import chat, evaluation, rooms
from knowledge.errors import InvalidInputError, NotFoundError
from knowledge.indexing import sync_chunks, sync_evidence
from knowledge.platform import Platform
from tests.conftest import make_room

ANSWER = "The turquoise zeppelin hangar stands behind the Quixotl observatory."
UNRELATED = "Bring sandwiches and lemonade for the Tuesday picnic."
FILLER = [
    "The bakery on Elm street sells rye bread on Mondays.",
    "Our chess club meets in the library basement.",
    "The river flooded the meadow after the storm.",
    "Grandmother knitted a scarf with seven colours.",
    "The violin recital was postponed until spring.",
    "Tomatoes grow best with plenty of sunlight.",
    "The train to the coast leaves at dawn.",
    "Someone painted the fence a cheerful yellow.",
    "The museum opened a wing for ancient pottery.",
    "Penguins huddle together through the polar winter.",
    "The marathon route passes the old cathedral.",
    "My laptop battery drains faster every week.",
    "The orchestra tuned their instruments before the concert.",
    "A fox crossed the road near the farm.",
    "The recipe needs two cups of flour and an egg.",
    "The lighthouse keeper logs every passing ship.",
]


def _lines() -> list[tuple[str, str]]:
    speakers = ["Ann", "Bob", "Cid"]
    texts = [ANSWER, *FILLER, UNRELATED]  # the unrelated gold is far from the answer
    return [(speakers[i % 3], text) for i, text in enumerate(texts)]


async def _message_id(platform: Platform, room_id: str, content: str) -> int:
    async with platform.session() as session:
        found = await session.execute(
            select(Message.id).where(Message.room_id == room_id, Message.content == content)
        )
        return int(found.scalar_one())


async def _stored(platform: Platform, room_id: str) -> int:
    async with platform.session() as session:
        total = await session.execute(
            select(func.count())
            .select_from(GoldenQuestion)
            .where(GoldenQuestion.room_id == room_id)
        )
        return int(total.scalar_one())


async def test_a_gold_id_from_another_room_is_refused_and_nothing_is_stored(
    platform: Platform,
) -> None:
    room_id = await make_room(platform, _lines(), "golden")
    other = await make_room(platform, [("Zed", "A message of another room.")], "other")
    own = await _message_id(platform, room_id, ANSWER)
    foreign = await _message_id(platform, other, "A message of another room.")
    async with platform.session() as session:
        with pytest.raises(InvalidInputError, match=rf"not messages of this room: {foreign}\b"):
            await evaluation.add_golden_question(
                session, room_id, "Where is the zeppelin hangar?", [own, foreign]
            )
        await session.commit()
    assert await _stored(platform, room_id) == 0
    assert await _stored(platform, other) == 0


@pytest.mark.parametrize(
    ("question", "gold", "kind", "match"),
    [
        ("", "own", "single-hop", "empty"),
        ("   ", "own", "single-hop", "empty"),
        ("x" * 2001, "own", "single-hop", "limit is 2000"),
        ("bad \x00 byte", "own", "single-hop", "NUL"),
        ("ok?", [], "single-hop", "at least one"),
        ("ok?", list(range(1, 52)), "single-hop", "at most 50"),
        ("ok?", [0], "single-hop", "positive integers: 0"),
        ("ok?", [2**63], "single-hop", "positive integers"),
        ("ok?", [True], "single-hop", "positive integers"),
        ("ok?", [9_000_000_000_000], "single-hop", "not messages of this room: 9000000000000"),
        ("ok?", "deleted", "single-hop", "deleted: "),
        ("ok?", "own", "sideways", "kind 'sideways' is not one of"),
    ],
)
async def test_bad_golden_questions_are_refused(
    platform: Platform, question: str, gold: object, kind: str, match: str
) -> None:
    room_id = await make_room(platform, _lines()[:4], "bad input")
    own = await _message_id(platform, room_id, ANSWER)
    async with platform.session() as session:
        if gold == "own":
            ids = [own]
        elif gold == "deleted":
            removed = await _message_id(platform, room_id, FILLER[0])
            await chat.delete_message(session, rooms.parse_room_id(room_id), removed)
            ids = [own, removed]
        else:
            assert isinstance(gold, list)
            ids = gold
        with pytest.raises(InvalidInputError, match=match):
            await evaluation.add_golden_question(session, room_id, question, ids, kind)
        await session.commit()
    assert await _stored(platform, room_id) == 0


async def test_add_list_delete(platform: Platform) -> None:
    room_id = await make_room(platform, _lines()[:4], "crud")
    other = await make_room(platform, [("Zed", "elsewhere")], "crud other")
    own = await _message_id(platform, room_id, ANSWER)
    async with platform.session() as session:
        first = await evaluation.add_golden_question(
            session, room_id, "  Where is the hangar?  ", [own, own], "alias"
        )
        await evaluation.add_golden_question(session, room_id, "Second?", [own])
        await session.commit()
    assert first.question == "Where is the hangar?"
    assert first.gold_message_ids == [own]  # duplicates dropped
    assert first.kind == "alias" and first.created_at is not None
    async with platform.session() as session:
        found, total = await evaluation.list_golden_questions(session, room_id)
        assert total == 2 and found[0].id == first.id
        assert found[1].kind == "single-hop"
        page, total = await evaluation.list_golden_questions(session, room_id, limit=1, offset=1)
        assert total == 2 and len(page) == 1 and page[0].question == "Second?"
        # another room's id, a missing id and a malformed id are all "does not exist"
        for room, key in ((other, first.id), (room_id, uuid.uuid4()), (room_id, "nope")):
            with pytest.raises(NotFoundError):
                await evaluation.delete_golden_question(session, room, key)
        await evaluation.delete_golden_question(session, room_id, first.id)
        await session.commit()
    assert await _stored(platform, room_id) == 1


def test_scores_of_a_ranking() -> None:
    # ranks 1..10; None is an artifact passage (it takes a rank)
    ranked = [None, 7, 3, None, None, 9, 1, 2, 4, 5, 6]
    assert evaluation.score_ranking([3], ranked) == (1.0, 1.0, 1 / 3, 3)
    assert evaluation.score_ranking([9, 6], ranked) == (0.0, 0.5, 1 / 6, 6)
    assert evaluation.score_ranking([6], ranked) == (0.0, 0.0, 0.0, None)  # rank 11
    assert evaluation.score_ranking([42], []) == (0.0, 0.0, 0.0, None)


async def test_evaluate_room_finds_the_unmistakable_answer_and_misses_unrelated_gold(
    platform: Platform,
) -> None:
    room_id = await make_room(platform, _lines(), "evaluate")
    await sync_chunks(platform, room_id)
    await sync_evidence(platform, room_id)
    answer = await _message_id(platform, room_id, ANSWER)
    unrelated = await _message_id(platform, room_id, UNRELATED)
    question = "Where is the turquoise zeppelin hangar?"
    async with platform.session() as session:
        found = await evaluation.add_golden_question(session, room_id, question, [answer])
        # the same question, with a gold message that has nothing to do with it
        missed = await evaluation.add_golden_question(
            session, room_id, question, [unrelated], "alias"
        )
        await session.commit()

    result = await evaluation.evaluate_room(platform, room_id)
    assert result.questions == 2 and result.top_k == 10
    scores = {r.id: r for r in result.results}
    hit, miss = scores[str(found.id)], scores[str(missed.id)]
    assert (hit.recall_at_5, hit.recall_at_10, hit.reciprocal_rank) == (1.0, 1.0, 1.0)
    assert hit.first_hit_rank == 1 and hit.retrieved_message_ids[0] == answer
    assert (miss.recall_at_5, miss.recall_at_10, miss.reciprocal_rank) == (0.0, 0.0, 0.0)
    assert unrelated not in miss.retrieved_message_ids
    assert (result.recall_at_5, result.recall_at_10, result.mrr) == (0.5, 0.5, 0.5)
    assert result.by_kind["single-hop"].recall_at_10 == 1.0
    assert result.by_kind["alias"].recall_at_10 == 0.0
    assert result.by_kind["alias"].questions == 1
    assert [r.id for r in result.zero_recall] == [str(missed.id)]


async def test_evaluate_a_room_without_questions(platform: Platform) -> None:
    room_id = await make_room(platform, _lines()[:3], "empty")
    result = await evaluation.evaluate_room(platform, room_id)
    assert result.questions == 0 and result.recall_at_10 is None and result.zero_recall == []
    with pytest.raises(NotFoundError):
        await evaluation.evaluate_room(platform, str(uuid.uuid4()))
    with pytest.raises(InvalidInputError):
        await evaluation.evaluate_room(platform, room_id, top_k=0)
