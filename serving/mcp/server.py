"""The MCP tools over a room's knowledge (the work is in ``serving.mcp.service``).

``build_server(caller_of)`` makes the server; ``caller_of(ctx)`` says who is calling (the HTTP
transport reads it from the authenticated request, stdio has one fixed user).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import ToolAnnotations
from pydantic import Field

from knowledge.retrieval.pipeline import MAX_TOP_K
from knowledge.search import MAX_QUESTION_CHARS
from serving.mcp import service
from serving.mcp.schemas import CommunityList, EntityOut, EvidenceResult, RoomAnswer, RoomList
from serving.mcp.service import Caller
from serving.pagination import MAX_LIMIT

CallerOf = Callable[[Context[Any]], Caller]

INSTRUCTIONS = """\
CoAgent Studio rooms: conversations of people and AI agents, indexed as a knowledge graph.
Find a room with list_rooms. Ask it with query_room (an answer citing the messages it used),
or search_messages for the ranked messages alone (faster, no LLM call). list_communities
gives the room's themes (community reports); get_entity looks up one person, place or thing
by name or alias, with its relationships and the messages that mention it. You only see the
rooms your account may read."""

_READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)

RoomId = Annotated[
    str, Field(description="The room's id (a UUID, as listed by list_rooms).", max_length=64)
]
Question = Annotated[str, Field(min_length=1, max_length=MAX_QUESTION_CHARS)]
RouteArg = Annotated[
    Literal["global", "local"] | None,
    Field(
        description="global: themes and summaries, from the community reports; local: "
        "specific people, things and events. Default: chosen from the question."
    ),
]
TopK = Annotated[int, Field(ge=1, le=MAX_TOP_K, description="Units of evidence returned.")]
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT)]
Offset = Annotated[int, Field(ge=0, le=1_000_000_000)]


def build_server(caller_of: CallerOf) -> MCPServer[Any]:
    # log_level: MCPServer configures the root logger when nothing else has; keep it quiet.
    server: MCPServer[Any] = MCPServer(
        "coagent",
        title="CoAgent Studio rooms",
        instructions=INSTRUCTIONS,
        log_level="WARNING",
    )

    @server.tool(annotations=_READ_ONLY)
    async def list_rooms(ctx: Context[Any], limit: Limit = 50, offset: Offset = 0) -> RoomList:
        """The rooms you may read (oldest first): their ids, names and courses."""
        async with service.tool_errors():
            return await service.list_rooms(caller_of(ctx), limit, offset)

    @server.tool(annotations=_READ_ONLY)
    async def query_room(
        room_id: RoomId,
        question: Question,
        ctx: Context[Any],
        route: RouteArg = None,
        top_k: TopK = 10,
    ) -> RoomAnswer:
        """Answer a question from what was said in a room: the answer, the messages it cites
        (ids, speakers, times, excerpts) and the ranked evidence it was drawn from."""
        async with service.tool_errors():
            return await service.query_room(caller_of(ctx), room_id, question, route, top_k)

    @server.tool(annotations=_READ_ONLY)
    async def search_messages(
        room_id: RoomId,
        question: Question,
        ctx: Context[Any],
        route: RouteArg = None,
        top_k: TopK = 10,
    ) -> EvidenceResult:
        """The messages (and artifact passages) of a room that best answer a question, ranked,
        with the retrieval signals that found each. No answer is written (no LLM call)."""
        async with service.tool_errors():
            return await service.search_messages(caller_of(ctx), room_id, question, route, top_k)

    @server.tool(annotations=_READ_ONLY)
    async def list_communities(
        room_id: RoomId,
        ctx: Context[Any],
        level: Annotated[
            int | None, Field(ge=0, le=100, description="Only this level (0 is the coarsest).")
        ] = None,
        limit: Limit = 20,
        offset: Offset = 0,
    ) -> CommunityList:
        """The room's communities of related entities with their reports: title, summary,
        level and size, coarse levels and large communities first."""
        async with service.tool_errors():
            return await service.list_communities(caller_of(ctx), room_id, level, limit, offset)

    @server.tool(annotations=_READ_ONLY)
    async def get_entity(
        room_id: RoomId,
        name: Annotated[str, Field(min_length=1, max_length=service.MAX_ENTITY_NAME_CHARS)],
        ctx: Context[Any],
    ) -> EntityOut:
        """One entity of the room's graph by name or alias (any casing): its type,
        description, other names, strongest relationships and the messages it comes from."""
        async with service.tool_errors():
            return await service.get_entity(caller_of(ctx), room_id, name)

    return server
