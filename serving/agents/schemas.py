from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from knowledge.search import MAX_QUESTION_CHARS
from serving.schemas import Text

#: Tools an agent may use: ``graph_query`` (an answer with citations from the room's graph),
#: ``search_messages`` (ranked evidence only), ``list_artifacts`` and ``read_artifact``.
ToolName = Literal["graph_query", "search_messages", "list_artifacts", "read_artifact"]
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
BaseUrl = Annotated[
    Text,
    Field(
        max_length=500,
        pattern=r"^https?://[^\s]+$",
        description="the agent's own OpenAI-compatible endpoint (…/v1)",
        examples=["http://localhost:11434/v1"],
    ),
]
#: Write-only: stored encrypted (Fernet, FERNET_SECRET_KEY), never returned. "" clears it.
ApiKey = Annotated[Text, Field(max_length=500, description='write-only; "" clears it')]


class AgentIn(BaseModel):
    name: AgentName
    system_prompt: Prompt = ""
    #: Chat model; the server's LLM_CHAT_MODEL when omitted.
    model: Model | None = None
    tools: list[ToolName] = Field(default_factory=list, max_length=8)
    base_url: BaseUrl | None = None
    api_key: ApiKey | None = None


class AgentUpdate(BaseModel):
    name: AgentName | None = None
    system_prompt: Prompt | None = None
    model: Model | None = None
    tools: list[ToolName] | None = Field(default=None, max_length=8)
    #: "" returns the agent to the server's endpoint.
    base_url: BaseUrl | Literal[""] | None = None
    api_key: ApiKey | None = None


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
    base_url: str | None
    #: Whether the agent has its own API key (the key itself is never returned).
    has_api_key: bool
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class SandboxIn(BaseModel):
    message: Text = Field(min_length=1, max_length=MAX_QUESTION_CHARS)


class ToolCallOut(BaseModel):
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    citations: list[dict[str, Any]] = Field(default_factory=list)
    error: str | None = None


class SandboxOut(BaseModel):
    """What the agent would answer; nothing is stored or broadcast."""

    agent: str
    model: str
    reply: str
    tool_calls: list[ToolCallOut]
    #: True when the reply was composed without a language model (no LLM configured).
    offline: bool
