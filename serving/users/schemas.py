from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, StrictBool

from dbschema.models import UserRole
from serving.schemas import Email, Name, Password

#: Roles a person can have (``agent`` identities are created by the agents API).
PersonRole = Literal["super_admin", "admin", "teacher", "student"]


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    full_name: str
    role: UserRole
    is_active: bool
    created_at: datetime


class UserCreate(BaseModel):
    email: Email
    full_name: Name
    password: Password
    role: PersonRole = "student"


class UserUpdate(BaseModel):
    """Admin changes to another account (omitted fields stay as they are)."""

    email: Email | None = None
    full_name: Name | None = None
    password: Password | None = None
    role: PersonRole | None = None
    is_active: StrictBool | None = None


class MeUpdate(BaseModel):
    full_name: Name | None = None
    password: Password | None = None
    #: Required to set a new password.
    current_password: str | None = None
