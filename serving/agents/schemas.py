from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from knowledge.search import MAX_QUESTION_CHARS
from serving.schemas import Text

#: Tools an agent may use. ``graph_query``: answer from the room's knowledge graph.
ToolName = Literal["graph_query"]
AgentName = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="mentioned in chat as @name (letters, digits, _ . -)",
        examples=["tutor"],
    ),
]
Prompt = Annotated[Text, Field(max_length=20_000)]
Model = Annotated[Text, Field(min_length=1, max_length=200)]


class AgentIn(BaseModel):
    name: AgentName
    system_prompt: Prompt = ""
    #: Chat model; the server's LLM_CHAT_MODEL when omitted.
    model: Model | None = None
    tools: list[ToolName] = Field(default_factory=list, max_length=8)


class AgentUpdate(BaseModel):
    name: AgentName | None = None
    system_prompt: Prompt | None = None
    model: Model | None = None
    tools: list[ToolName] | None = Field(default=None, max_length=8)


class AgentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    room_id: uuid.UUID
    #: The agent's own identity (role ``agent``): the author of its messages.
    user_id: uuid.UUID
    name: str
    system_prompt: str
    model: str
    tools: list[str]
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class SandboxIn(BaseModel):
    message: Text = Field(min_length=1, max_length=MAX_QUESTION_CHARS)


class ToolCallOut(BaseModel):
    tool: str
    route: str | None = None
    citations: list[dict[str, str | None]] = Field(default_factory=list)
    reports_as_of: datetime | None = None


class SandboxOut(BaseModel):
    """What the agent would answer; nothing is stored or broadcast."""

    agent: str
    model: str
    reply: str
    tool_calls: list[ToolCallOut]
    #: True when the reply was composed without a language model (no LLM configured).
    offline: bool
