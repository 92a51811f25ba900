from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from serving.schemas import Name, Text
from serving.users.schemas import UserOut


class CourseOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    description: str
    owner_id: uuid.UUID | None
    created_at: datetime


class CourseCreate(BaseModel):
    name: Name
    description: Text = Field(default="", max_length=10_000)


class CourseUpdate(BaseModel):
    name: Name | None = None
    description: Text | None = Field(default=None, max_length=10_000)


class CourseMemberIn(BaseModel):
    user_id: uuid.UUID
    role: Literal["teacher", "student"] = "student"


class CourseMemberOut(BaseModel):
    user: UserOut
    role: str
