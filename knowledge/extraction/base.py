"""The extractor interface and the per-chunk result it returns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pydantic import BaseModel, Field


class ExtractedEntity(BaseModel):
    name: str
    type: str = "CONCEPT"
    description: str = ""


class ExtractedRelationship(BaseModel):
    source: str
    target: str
    description: str = ""
    weight: float = Field(default=1.0, gt=0)


class Extraction(BaseModel):
    """What was found in one chunk. Stored per (chunk, extractor) so a chunk is read once."""

    entities: list[ExtractedEntity] = Field(default_factory=list)
    relationships: list[ExtractedRelationship] = Field(default_factory=list)
    # Relationships dropped because an endpoint was not among the entities.
    dropped_relationships: int = 0


class ExtractionFailure(BaseModel):
    """A chunk that could not be extracted (after retries); it is tried again next run."""

    error: str


class Extractor(Protocol):
    #: Identifies the extractor and its version; stored extractions are keyed by it.
    name: str

    async def extract(self, texts: Sequence[str]) -> list[Extraction | ExtractionFailure]:
        """Extract from several chunk texts; one result per text, in order."""
        ...
