"""Golden questions of a room and the retrieval evaluation they drive.

A golden question is a question with the messages that answer it (its *gold*). Evaluating a
room runs every stored question through :func:`knowledge.search.find_evidence` (the ranked
evidence the answer routes use; no LLM call) and scores the ranking:

- recall@k: the share of the gold messages among the messages of the top ``k`` evidence items;
- reciprocal rank (MRR@10 once averaged): 1 / the rank of the first gold message within the top
  10, else 0.

Ranks are positions in the evidence list (artifact passages take positions too: they are what
a reader would see). The CRUD functions take an ``AsyncSession`` and flush, never commit (like
:mod:`knowledge.rooms` and the other relational modules).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import GoldenQuestion, Message
from knowledge.errors import InvalidInputError, NotFoundError
from knowledge.platform import Platform
from knowledge.retrieval import Evidence
from knowledge.rooms import get_room, parse_room_id
from knowledge.search import check_question, check_top_k, find_evidence

#: What a question exercises; the evaluation reports its means per kind too.
KINDS = ("single-hop", "multi-hop", "temporal", "alias", "global")
DEFAULT_KIND: Final = "single-hop"
MAX_GOLD_IDS = 50
#: Each question is one retrieval per evaluation (after every refresh): keep the set bounded.
MAX_QUESTIONS_PER_ROOM = 500
_MAX_BIGINT = 2**63 - 1


# --- CRUD ----------------------------------------------------------------------------------------


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InvalidInputError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    return kind


def check_gold_ids(gold_message_ids: Sequence[int]) -> list[int]:
    """The gold ids, deduplicated in order; 1 to ``MAX_GOLD_IDS`` positive integers."""
    if not gold_message_ids:
        raise InvalidInputError("a golden question needs at least one gold message id")
    if len(gold_message_ids) > MAX_GOLD_IDS:
        raise InvalidInputError(
            f"a golden question has at most {MAX_GOLD_IDS} gold message ids "
            f"(got {len(gold_message_ids)})"
        )
    bad = [
        repr(i)
        for i in gold_message_ids
        if isinstance(i, bool) or not isinstance(i, int) or not 1 <= i <= _MAX_BIGINT
    ]
    if bad:
        raise InvalidInputError(f"gold message ids must be positive integers: {', '.join(bad)}")
    return list(dict.fromkeys(gold_message_ids))


async def _check_live_messages(session: AsyncSession, room_id: uuid.UUID, ids: list[int]) -> None:
    rows = (
        await session.execute(
            select(Message.id, Message.deleted_at).where(
                Message.room_id == room_id, Message.id.in_(ids)
            )
        )
    ).all()
    in_room = {mid: deleted_at for mid, deleted_at in rows}
    # Messages of other rooms and ids that do not exist are told apart for no one.
    foreign = [i for i in ids if i not in in_room]
    deleted = [i for i in ids if i in in_room and in_room[i] is not None]
    problems = []
    if foreign:
        problems.append("not messages of this room: " + ", ".join(str(i) for i in foreign))
    if deleted:
        problems.append("deleted: " + ", ".join(str(i) for i in deleted))
    if problems:
        raise InvalidInputError(
            "every gold message id must be a live message of the room; " + "; ".join(problems)
        )


async def add_golden_question(
    session: AsyncSession,
    room_id: str | uuid.UUID,
    question: str,
    gold_message_ids: Sequence[int],
    kind: str = DEFAULT_KIND,
    created_by: uuid.UUID | None = None,
) -> GoldenQuestion:
    """Store a golden question; everything is validated first, nothing is written on error."""
    question = check_question(question)
    kind = check_kind(kind)
    gold = check_gold_ids(gold_message_ids)
    room = await get_room(session, room_id)
    await _check_live_messages(session, room.id, gold)
    if await count_golden_questions(session, room.id) >= MAX_QUESTIONS_PER_ROOM:
        raise InvalidInputError(
            f"the room already has {MAX_QUESTIONS_PER_ROOM} golden questions (the limit)"
        )
    stored = GoldenQuestion(
        room_id=room.id,
        question=question,
        kind=kind,
        gold_message_ids=gold,
        created_by=created_by,
    )
    session.add(stored)
    await session.flush()
    await session.refresh(stored)
    return stored


async def count_golden_questions(session: AsyncSession, room_id: uuid.UUID) -> int:
    total = await session.execute(
        select(func.count()).select_from(GoldenQuestion).where(GoldenQuestion.room_id == room_id)
    )
    return int(total.scalar_one())


async def list_golden_questions(
    session: AsyncSession,
    room_id: str | uuid.UUID,
    limit: int | None = None,
    offset: int = 0,
) -> tuple[list[GoldenQuestion], int]:
    """The room's golden questions, oldest first (a page of them with ``limit``), and the total."""
    room = await get_room(session, room_id)
    query = (
        select(GoldenQuestion)
        .where(GoldenQuestion.room_id == room.id)
        .order_by(GoldenQuestion.created_at, GoldenQuestion.id)
        .offset(offset)
    )
    if limit is not None:
        query = query.limit(limit)
    found = list((await session.execute(query)).scalars().all())
    return found, await count_golden_questions(session, room.id)


async def get_golden_question(
    session: AsyncSession, room_id: str | uuid.UUID, question_id: str | uuid.UUID
) -> GoldenQuestion:
    room = await get_room(session, room_id)
    try:
        key = question_id if isinstance(question_id, uuid.UUID) else uuid.UUID(str(question_id))
    except ValueError:
        raise NotFoundError(f"golden question {question_id!r} does not exist") from None
    found = await session.get(GoldenQuestion, key)
    if found is None or found.room_id != room.id:
        raise NotFoundError(f"golden question {question_id} does not exist in room {room.id}")
    return found


async def delete_golden_question(
    session: AsyncSession, room_id: str | uuid.UUID, question_id: str | uuid.UUID
) -> None:
    found = await get_golden_question(session, room_id, question_id)
    await session.delete(found)
    await session.flush()


# --- evaluation ----------------------------------------------------------------------------------


@dataclass
class QuestionScore:
    id: str
    question: str
    kind: str
    gold_message_ids: list[int]
    recall_at_5: float
    recall_at_10: float
    #: 1 / rank of the first gold message within the top 10, else 0 (its mean is MRR@10).
    reciprocal_rank: float
    first_hit_rank: int | None
    #: The message ids of the top 10 evidence items, in rank order.
    retrieved_message_ids: list[int]


@dataclass
class KindScores:
    questions: int
    recall_at_5: float
    recall_at_10: float
    mrr: float


@dataclass
class RoomEvaluation:
    room_id: str
    top_k: int
    questions: int
    #: Means over the questions; None when the room has no golden questions.
    recall_at_5: float | None
    recall_at_10: float | None
    mrr: float | None
    by_kind: dict[str, KindScores] = field(default_factory=dict)
    results: list[QuestionScore] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def zero_recall(self) -> list[QuestionScore]:
        """The questions none of whose gold messages is in the top 10."""
        return [r for r in self.results if r.recall_at_10 == 0]


def ranked_message_ids(evidence: Sequence[Evidence]) -> list[int | None]:
    """The message id at each rank (None where the evidence is an artifact passage)."""
    ranked: list[int | None] = []
    for item in evidence:
        ranked.append(int(item.id) if item.kind == "message" and item.id.isdigit() else None)
    return ranked


def score_ranking(
    gold: Sequence[int], ranked: Sequence[int | None]
) -> tuple[float, float, float, int | None]:
    """(recall@5, recall@10, reciprocal rank within 10, rank of the first gold hit)."""
    wanted = set(gold)
    if not wanted:
        raise InvalidInputError("a golden question needs at least one gold message id")

    def recall(k: int) -> float:
        return len(wanted & {mid for mid in ranked[:k] if mid is not None}) / len(wanted)

    first = next((rank for rank, mid in enumerate(ranked[:10], 1) if mid in wanted), None)
    return recall(5), recall(10), (1.0 / first if first else 0.0), first


def _mean(values: Sequence[float]) -> float:
    return round(sum(values) / len(values), 4)


async def evaluate_room(platform: Platform, room_id: str, top_k: int = 10) -> RoomEvaluation:
    """Run every golden question of the room through the evidence ranking and score it.

    ``top_k`` is the depth retrieved (recall@10 cannot see past it).
    """
    check_top_k(top_k)
    async with platform.session() as session:
        stored, _ = await list_golden_questions(session, room_id)
    return await evaluate_questions(platform, room_id, stored, top_k)


async def evaluate_questions(
    platform: Platform, room_id: str, questions: Sequence[GoldenQuestion], top_k: int = 10
) -> RoomEvaluation:
    """Score golden questions of a room loaded by the caller (the API loads them in its
    request's transaction); :func:`evaluate_room` loads them itself. The retrieval of each
    question checks that the room exists."""
    started = time.perf_counter()
    check_top_k(top_k)
    room = parse_room_id(room_id)
    foreign = [str(q.id) for q in questions if q.room_id != room]
    if foreign:
        raise InvalidInputError(f"golden questions of another room: {', '.join(foreign)}")
    key = str(room)
    results = []
    for question in questions:
        retrieval = await find_evidence(platform, key, question.question, top_k)
        ranked = ranked_message_ids(retrieval.evidence)
        at5, at10, reciprocal, first = score_ranking(question.gold_message_ids, ranked)
        results.append(
            QuestionScore(
                id=str(question.id),
                question=question.question,
                kind=question.kind,
                gold_message_ids=list(question.gold_message_ids),
                recall_at_5=round(at5, 4),
                recall_at_10=round(at10, 4),
                reciprocal_rank=round(reciprocal, 4),
                first_hit_rank=first,
                retrieved_message_ids=[mid for mid in ranked[:10] if mid is not None],
            )
        )
    by_kind: dict[str, KindScores] = {}
    for kind in sorted({r.kind for r in results}):
        group = [r for r in results if r.kind == kind]
        by_kind[kind] = KindScores(
            questions=len(group),
            recall_at_5=_mean([r.recall_at_5 for r in group]),
            recall_at_10=_mean([r.recall_at_10 for r in group]),
            mrr=_mean([r.reciprocal_rank for r in group]),
        )
    return RoomEvaluation(
        room_id=key,
        top_k=top_k,
        questions=len(results),
        recall_at_5=_mean([r.recall_at_5 for r in results]) if results else None,
        recall_at_10=_mean([r.recall_at_10 for r in results]) if results else None,
        mrr=_mean([r.reciprocal_rank for r in results]) if results else None,
        by_kind=by_kind,
        results=results,
        seconds=time.perf_counter() - started,
    )
