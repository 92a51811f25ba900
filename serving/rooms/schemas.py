from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from serving.schemas import Name
from serving.users.schemas import UserOut


class RoomOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    course_id: uuid.UUID
    name: str
    created_by: uuid.UUID | None
    created_at: datetime


class RoomCreate(BaseModel):
    course_id: uuid.UUID
    name: Name


class RoomUpdate(BaseModel):
    name: Name


class RoomMemberIn(BaseModel):
    user_id: uuid.UUID
    #: Moderators manage the room's members, agents, and anyone's messages.
    role: Literal["member", "moderator"] = "member"


class RoomMemberOut(BaseModel):
    user: UserOut
    role: str
    joined_at: datetime
