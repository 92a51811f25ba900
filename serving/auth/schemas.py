from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

from serving.auth.security import MAX_PASSWORD_CHARS
from serving.schemas import Text
from serving.users.schemas import UserOut


class LoginIn(BaseModel):
    email: Annotated[Text, Field(min_length=3, max_length=320, examples=["admin@example.com"])]
    password: Annotated[Text, Field(min_length=1, max_length=MAX_PASSWORD_CHARS)]


class SessionOut(BaseModel):
    """The logged-in user. The tokens themselves travel only in HttpOnly cookies; the CSRF
    token is repeated here (it is also in the readable ``coagent_csrf`` cookie)."""

    user: UserOut
    access_expires_at: datetime
    refresh_expires_at: datetime
    csrf_token: str
