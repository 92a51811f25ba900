from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from knowledge.evaluation import DEFAULT_KIND, KINDS, MAX_GOLD_IDS
from knowledge.search import MAX_QUESTION_CHARS
from serving.schemas import MAX_JSON_ID, Text

Kind = Literal["single-hop", "multi-hop", "temporal", "alias", "global"]
assert get_args(Kind) == KINDS, "serving's Kind must list knowledge.evaluation.KINDS"

MessageId = Annotated[int, Field(ge=1, le=MAX_JSON_ID)]


class GoldenQuestionIn(BaseModel):
    question: Text = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    kind: Kind = DEFAULT_KIND
    #: The live messages of the room that answer the question (duplicates are dropped).
    gold_message_ids: list[MessageId] = Field(min_length=1, max_length=MAX_GOLD_IDS)


class GoldenQuestionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    room_id: uuid.UUID
    question: str
    kind: str
    gold_message_ids: list[int]
    created_by: uuid.UUID | None
    created_at: datetime


class QuestionScoreOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    question: str
    kind: str
    gold_message_ids: list[int]
    recall_at_5: float
    recall_at_10: float
    #: 1 / rank of the first gold message within the top 10, else 0.
    reciprocal_rank: float
    first_hit_rank: int | None
    #: Message ids of the top 10 evidence items, in rank order.
    retrieved_message_ids: list[int]


class KindScoresOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    questions: int
    recall_at_5: float
    recall_at_10: float
    mrr: float


class EvaluationOut(BaseModel):
    """Means over the room's golden questions (null when it has none), per kind, per question."""

    room_id: uuid.UUID
    top_k: int
    questions: int
    recall_at_5: float | None
    recall_at_10: float | None
    mrr: float | None
    by_kind: dict[str, KindScoresOut]
    results: list[QuestionScoreOut]
    #: The questions none of whose gold messages is in the top 10.
    zero_recall_question_ids: list[uuid.UUID]
    seconds: float
