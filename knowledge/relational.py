"""What the relational modules (users, courses, rooms, chat, artifacts) share: parsing an id
that names a row, paging a query, checking posted text.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from knowledge.errors import InvalidInputError, NotFoundError


def parse_uuid(value: str | uuid.UUID, what: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFoundError(f"{what} {value!r} does not exist") from None


async def fetch_page(
    session: AsyncSession, query: Select[Any], limit: int, offset: int
) -> tuple[list[Any], int]:
    """One page of ``query``'s rows and the total count of rows it matches."""
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = (await session.execute(query.limit(limit).offset(offset))).scalars().all()
    return list(rows), int(total)


def check_content(content: str, limit: int, what: str) -> str:
    if not content or not content.strip():
        raise InvalidInputError(f"{what} is empty")
    if len(content) > limit:
        raise InvalidInputError(f"{what} has {len(content)} characters; the limit is {limit}")
    return content
