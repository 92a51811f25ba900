"""The MCP server over stdin/stdout (``coagent mcp --user EMAIL``), for local MCP clients.

The process reads the platform's databases directly (like ``coagent ask``), so whoever can
start it can read them anyway: the user it runs as is named, not authenticated. It scopes
every tool to what that account may read through the API, with the same room checks.
"""

from __future__ import annotations

import asyncio

from dbschema.models import UserRole
from knowledge import users
from knowledge.errors import InvalidInputError
from knowledge.platform import database_url, open_platform
from knowledge.settings import Settings
from serving.mcp.server import build_server
from serving.mcp.service import Caller, RoomKnowledge
from serving.state import platform_sessions


async def serve_stdio(settings: Settings, email: str) -> None:
    """Serve until the client closes stdin. An unknown, disabled or agent account is an
    ``InvalidInputError`` before anything is served."""
    email = email.strip()
    if not email:
        raise InvalidInputError("name the user the server runs as (an email address)")
    await asyncio.to_thread(database_url, settings)  # starts the embedded PostgreSQL if used
    async with open_platform(settings) as platform:
        knowledge = RoomKnowledge(settings, platform, platform_sessions(platform))
        async with knowledge.sessions() as session:
            user = await users.get_user_by_email(session, email)
        if user is None or not user.is_active or user.role == UserRole.agent:
            raise InvalidInputError(f"no active user account {email!r}")
        caller = Caller(knowledge, user.id)
        await build_server(lambda _ctx: caller).run_stdio_async()
