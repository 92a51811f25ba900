from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from serving.schemas import Text

Title = Annotated[Text, Field(min_length=1, max_length=300)]


class ArtifactIn(BaseModel):
    title: Title
    content: Text = Field(min_length=1, description="text, at most MAX_ARTIFACT_CHARS characters")


class ArtifactUpdate(BaseModel):
    """Saves a new version. ``expected_version``: refuse (409) if someone saved meanwhile."""

    title: Title | None = None
    content: Text | None = Field(default=None, min_length=1)
    expected_version: int | None = Field(default=None, ge=1, le=2**31 - 1)


class ArtifactSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    room_id: uuid.UUID
    title: str
    version: int
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class ArtifactOut(ArtifactSummary):
    content: str


class ArtifactVersionSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    artifact_id: uuid.UUID
    version: int
    title: str
    created_by: uuid.UUID | None
    created_at: datetime


class ArtifactVersionOut(ArtifactVersionSummary):
    content: str
