"""What the MCP tools do: the room checks of the graph API, then ``knowledge`` does the work.

Every tool names a room; the caller must be allowed ``graph:read`` there (a member of the
room, a manager of its course, or an admin: ``serving.permissions``), checked on every call
with the caller's account as it is now (a disabled account or a revoked membership stops
working at once). A refused call raises ``ToolError`` with the reason and returns no data.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from difflib import get_close_matches

from mcp.server.mcpserver.exceptions import ToolError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import RoomChunk, User, UserRole
from knowledge.chat import CitedMessage, messages_by_ids
from knowledge.errors import DomainError, InvalidInputError, NotFoundError
from knowledge.graph import normalize_name
from knowledge.platform import Platform
from knowledge.retrieval.pipeline import load_aliases
from knowledge.rooms import parse_room_id
from knowledge.search import Answer, Mode, Route, answer_question
from knowledge.settings import Settings
from knowledge.text import excerpt
from serving.errors import ApiError, Forbidden, Unauthorized
from serving.graph.schemas import CitationOut, EvidenceOut
from serving.graph.service import community_page
from serving.mcp.schemas import (
    CommunityList,
    EntityOut,
    EvidenceResult,
    RelatedEntity,
    RoomAnswer,
    RoomList,
    SourceMessage,
)
from serving.pagination import PageParams
from serving.permissions import Action, Permissions
from serving.rooms import service as rooms_service
from serving.state import SessionFactory

MAX_ENTITY_NAME_CHARS = 500
MAX_RELATIONSHIPS = 25
MAX_SOURCE_MESSAGES = 20
#: Chunks of an entity whose messages are read for its source messages.
MAX_SOURCE_CHUNKS = 50
_EXCERPT_CHARS = 300


@dataclass(frozen=True)
class RoomKnowledge:
    """What the tools read through: the platform, and sessions for the room checks."""

    settings: Settings
    platform: Platform
    sessions: SessionFactory


@dataclass(frozen=True)
class Caller:
    """Who is calling: authenticated by the transport (HTTP: an access token; stdio: the
    user named when ``coagent mcp`` started)."""

    knowledge: RoomKnowledge
    user_id: uuid.UUID


@asynccontextmanager
async def tool_errors() -> AsyncIterator[None]:
    """API and domain errors as tool errors (``is_error`` results the assistant can read)."""
    try:
        yield
    except ToolError:
        raise
    except ApiError as error:
        raise ToolError(f"{error.code}: {error.message}") from None
    except NotFoundError as error:
        raise ToolError(f"not_found: {error}") from None
    except DomainError as error:
        raise ToolError(f"invalid_input: {error}") from None


async def _active_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await session.get(User, user_id)
    if user is None or not user.is_active or user.role == UserRole.agent:
        raise Unauthorized("this account is disabled or does not exist", "inactive_user")
    return user


async def authorize(caller: Caller, room_id: str) -> uuid.UUID:
    """The room's id, if the room exists and the caller may read its graph."""
    room_key = parse_room_id(room_id.strip())
    async with caller.knowledge.sessions() as session:
        user = await _active_user(session, caller.user_id)
        try:
            room = await rooms_service.authorize_room(
                session, Permissions(session), user, room_key, Action.GRAPH_READ
            )
        except Forbidden:
            raise Forbidden(
                f"you may not read room {room_key}: only its members, its course's teachers "
                "and admins may"
            ) from None
        return room.id


async def list_rooms(caller: Caller, limit: int, offset: int) -> RoomList:
    async with caller.knowledge.sessions() as session:
        user = await _active_user(session, caller.user_id)
        page = await rooms_service.list_rooms(session, user, PageParams(limit, offset), None)
    return RoomList(items=page.items, total=page.total, limit=page.limit, offset=page.offset)


async def _ask(
    caller: Caller, room_id: str, question: str, route: str | None, top_k: int, mode: Mode
) -> tuple[uuid.UUID, Answer]:
    room = await authorize(caller, room_id)
    answer = await answer_question(
        caller.knowledge.platform,
        str(room),
        question,
        Route(route) if route else None,
        top_k=top_k,
        mode=mode,
    )
    return room, answer


def _evidence(answer: Answer, top_k: int) -> list[EvidenceOut]:
    return [EvidenceOut.model_validate(e, from_attributes=True) for e in answer.evidence[:top_k]]


async def query_room(
    caller: Caller, room_id: str, question: str, route: str | None, top_k: int
) -> RoomAnswer:
    room, answer = await _ask(caller, room_id, question, route, top_k, Mode.answer)
    return RoomAnswer(
        room_id=room,
        question=answer.question,
        route=answer.route.value,  # type: ignore[arg-type]
        answer=answer.answer,
        citations=[CitationOut.model_validate(c, from_attributes=True) for c in answer.citations],
        evidence=_evidence(answer, top_k),
        entities=answer.entities,
        communities=answer.communities,
        reports_as_of=answer.reports_as_of,
    )


async def search_messages(
    caller: Caller, room_id: str, question: str, route: str | None, top_k: int
) -> EvidenceResult:
    room, answer = await _ask(caller, room_id, question, route, top_k, Mode.evidence)
    return EvidenceResult(
        room_id=room,
        question=answer.question,
        route=answer.route.value,  # type: ignore[arg-type]
        evidence=_evidence(answer, top_k),
        entities=answer.entities,
    )


async def list_communities(
    caller: Caller, room_id: str, level: int | None, limit: int, offset: int
) -> CommunityList:
    room = await authorize(caller, room_id)
    items, total = await community_page(
        caller.knowledge.platform.graph, str(room), level, offset, limit
    )
    return CommunityList(room_id=room, items=items, total=total, limit=limit, offset=offset)


def _forms_pattern(forms: Sequence[str]) -> re.Pattern[str]:
    """Any of the names, as whole words, in any casing."""
    alternatives = sorted({re.escape(f) for f in forms if f}, key=len, reverse=True)
    return re.compile(r"(?<![\w])(?:" + "|".join(alternatives) + r")(?![\w])", re.IGNORECASE)


async def get_entity(caller: Caller, room_id: str, name: str) -> EntityOut:
    room = await authorize(caller, room_id)
    if len(name) > MAX_ENTITY_NAME_CHARS or "\x00" in name:
        raise InvalidInputError(f"an entity name has at most {MAX_ENTITY_NAME_CHARS} characters")
    key = normalize_name(name)
    if not key:
        raise InvalidInputError("the entity name is empty")
    platform, room_key = caller.knowledge.platform, str(room)
    aliases = await load_aliases(platform, room_key)
    canonical = aliases.get(key, key)
    found = await platform.graph.get_entities(room_key, [canonical])
    if not found:
        names = await platform.graph.entity_names(room_key)
        close = get_close_matches(key, [*names, *aliases], n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise NotFoundError(f"no entity named {name.strip()!r} in this room{hint}")
    entity = found[0]
    own_aliases = sorted(a for a, c in aliases.items() if c == canonical and a != canonical)

    sub = await platform.graph.neighbourhood(
        room_key, [canonical], hops=1, limit=MAX_RELATIONSHIPS + 2
    )
    by_name = {e.name: e for e in sub.entities}
    touching = sorted(
        (r for r in sub.relationships if canonical in r.pair),
        key=lambda r: (-r.weight, r.target if r.source == canonical else r.source),
    )
    related = []
    for rel in touching[:MAX_RELATIONSHIPS]:
        other = by_name.get(rel.target if rel.source == canonical else rel.source)
        if other is not None:
            related.append(
                RelatedEntity(
                    name=other.name,
                    display_name=other.display_name,
                    type=other.type,
                    weight=rel.weight,
                    description=rel.description,
                )
            )

    chunk_ids = entity.source_chunk_ids[:MAX_SOURCE_CHUNKS]
    async with platform.session() as session:
        rows = (
            await session.execute(
                select(RoomChunk.message_ids, RoomChunk.artifact_id).where(
                    RoomChunk.room_id == room_key, RoomChunk.id.in_(chunk_ids)
                )
            )
        ).all()
        message_ids = sorted({mid for ids, _ in rows for mid in (ids or [])})
        messages = await messages_by_ids(session, room, message_ids)
    forms = [entity.name, entity.display_name, *own_aliases]
    pattern = _forms_pattern(forms)
    speakers = {normalize_name(f) for f in forms}
    naming = [
        m for m in messages if normalize_name(m.speaker) in speakers or pattern.search(m.content)
    ]
    chosen: list[CitedMessage] = naming or messages
    artifacts = sorted({artifact for _, artifact in rows if artifact})
    return EntityOut(
        room_id=room,
        name=entity.name,
        display_name=entity.display_name,
        type=entity.type,
        description=entity.description,
        mentions=entity.mentions,
        aliases=own_aliases,
        relationships=related,
        source_messages=[
            SourceMessage(
                id=str(m.id),
                speaker=m.speaker,
                time=m.created_at,
                excerpt=excerpt(m.content, _EXCERPT_CHARS),
            )
            for m in chosen[:MAX_SOURCE_MESSAGES]
        ],
        source_artifact_ids=artifacts,
        truncated=len(touching) > MAX_RELATIONSHIPS
        or len(chosen) > MAX_SOURCE_MESSAGES
        or len(entity.source_chunk_ids) > MAX_SOURCE_CHUNKS,
    )
