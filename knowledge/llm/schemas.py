"""Structured outputs asked of the LLM."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class EntityNode(BaseModel):
    name: str = Field(min_length=1, description="The entity's name as written in the text")
    type: str = Field(min_length=1, description="One of the requested entity types")
    description: str = Field(description="What the text says about the entity")


class EntityRelationship(BaseModel):
    source: str = Field(min_length=1, description="Name of the source entity")
    target: str = Field(min_length=1, description="Name of the target entity")
    description: str = Field(description="How the two entities are related")
    strength: int = Field(ge=1, le=10, description="Strength of the relationship, 1-10")


class ExtractionOutput(BaseModel):
    entities: list[EntityNode]
    relationships: list[EntityRelationship]


class EntitySummary(BaseModel):
    description: str


class Finding(BaseModel):
    summary: str
    explanation: str


class ReportOutput(BaseModel):
    title: str = Field(min_length=1)
    summary: str
    findings: list[Finding]
    rating: float = Field(ge=0, le=10, description="Importance of the community, 0-10")
    rating_explanation: str


class KeyPoint(BaseModel):
    description: str
    score: int = Field(ge=0, le=100, description="How much the point helps answer, 0-100")


class KeyPoints(BaseModel):
    points: list[KeyPoint]


class AnswerOutput(BaseModel):
    answer: str = Field(min_length=1)
    sources: list[int] = Field(description="Numbers of the context items the answer uses")


class RouteDecision(BaseModel):
    route: Literal["global", "local"] = Field(
        description="global: about the whole conversation (themes, summary); "
        "local: about specific people, things or events"
    )
    reason: str


class RerankOutput(BaseModel):
    ranking: list[int] = Field(
        description="Numbers of the passages, most useful for answering first; omit useless ones"
    )


class SameEntity(BaseModel):
    same: bool = Field(description="True if both names refer to the same thing in this room")
    reason: str = ""
