from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import GoldenQuestion, User
from knowledge import evaluation
from serving.evaluation.schemas import (
    EvaluationOut,
    GoldenQuestionIn,
    GoldenQuestionOut,
    KindScoresOut,
    QuestionScoreOut,
)
from serving.pagination import Page, PageParams
from serving.permissions import Action, Permissions
from serving.rooms.service import authorize_room
from serving.state import AppState

#: The depth the scores are computed at (the asset check uses the same).
TOP_K = 10


async def list_questions(
    session: AsyncSession, perms: Permissions, actor: User, room_id: uuid.UUID, page: PageParams
) -> Page[GoldenQuestionOut]:
    room = await authorize_room(session, perms, actor, room_id, Action.GRAPH_READ)
    found, total = await evaluation.list_golden_questions(session, room.id, page.limit, page.offset)
    return Page(
        items=[GoldenQuestionOut.model_validate(q) for q in found],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


async def add_question(
    session: AsyncSession,
    perms: Permissions,
    actor: User,
    room_id: uuid.UUID,
    body: GoldenQuestionIn,
) -> GoldenQuestion:
    room = await authorize_room(session, perms, actor, room_id, Action.GOLDEN_QUESTIONS_MANAGE)
    stored = await evaluation.add_golden_question(
        session, room.id, body.question, body.gold_message_ids, body.kind, actor.id
    )
    await session.commit()
    return stored


async def delete_question(
    session: AsyncSession,
    perms: Permissions,
    actor: User,
    room_id: uuid.UUID,
    question_id: uuid.UUID,
) -> None:
    room = await authorize_room(session, perms, actor, room_id, Action.GOLDEN_QUESTIONS_MANAGE)
    await evaluation.delete_golden_question(session, room.id, question_id)
    await session.commit()


async def evaluate(
    session: AsyncSession, state: AppState, perms: Permissions, actor: User, room_id: uuid.UUID
) -> EvaluationOut:
    room = await authorize_room(session, perms, actor, room_id, Action.GOLDEN_QUESTIONS_MANAGE)
    questions, _ = await evaluation.list_golden_questions(session, room.id)
    result = await evaluation.evaluate_questions(state.platform, str(room.id), questions, TOP_K)
    return EvaluationOut(
        room_id=room.id,
        top_k=result.top_k,
        questions=result.questions,
        recall_at_5=result.recall_at_5,
        recall_at_10=result.recall_at_10,
        mrr=result.mrr,
        by_kind={k: KindScoresOut.model_validate(s) for k, s in result.by_kind.items()},
        results=[QuestionScoreOut.model_validate(r) for r in result.results],
        zero_recall_question_ids=[uuid.UUID(r.id) for r in result.zero_recall],
        seconds=round(result.seconds, 4),
    )
