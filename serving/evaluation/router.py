"""``/rooms/{room_id}/graph/golden-questions``: the questions a room's retrieval is measured
with (members read them; room managers add, delete and evaluate them)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from serving.deps import CurrentUser, PermissionsDep, SessionDep, StateDep
from serving.errors import ERROR_RESPONSES
from serving.evaluation import service
from serving.evaluation.schemas import EvaluationOut, GoldenQuestionIn, GoldenQuestionOut
from serving.pagination import Page, PageDep

router = APIRouter(
    prefix="/rooms/{room_id}/graph/golden-questions",
    tags=["evaluation"],
    responses=ERROR_RESPONSES,
)


@router.get("", response_model=Page[GoldenQuestionOut])
async def list_golden_questions(
    room_id: uuid.UUID,
    session: SessionDep,
    perms: PermissionsDep,
    user: CurrentUser,
    page: PageDep,
) -> Page[GoldenQuestionOut]:
    """The room's golden questions, oldest first (anyone who may read the room's graph)."""
    return await service.list_questions(session, perms, user, room_id, page)


@router.post("", response_model=GoldenQuestionOut, status_code=status.HTTP_201_CREATED)
async def add_golden_question(
    room_id: uuid.UUID,
    body: GoldenQuestionIn,
    session: SessionDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> GoldenQuestionOut:
    """Store a question with the messages that answer it (room managers). Every gold id must
    be a live message of this room, else 422 naming the bad ids and nothing is stored."""
    stored = await service.add_question(session, perms, user, room_id, body)
    return GoldenQuestionOut.model_validate(stored)


@router.delete("/{question_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_golden_question(
    room_id: uuid.UUID,
    question_id: uuid.UUID,
    session: SessionDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> Response:
    """Delete a golden question of the room (room managers)."""
    await service.delete_question(session, perms, user, room_id, question_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/evaluate", response_model=EvaluationOut)
async def evaluate(
    room_id: uuid.UUID,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> EvaluationOut:
    """Run the golden questions through the evidence ranking now (room managers): recall@5,
    recall@10 and MRR@10 overall, per kind and per question. No LLM call is made; nothing is
    recorded (the ``golden_questions_recall`` asset check records each refresh's scores)."""
    return await service.evaluate(session, state, perms, user, room_id)
