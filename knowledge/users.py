"""Users: create, read, list, delete.

Functions take an ``AsyncSession`` and flush, never commit: the caller owns the transaction
(the API commits per request, tests roll back).
"""

from __future__ import annotations

import uuid

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import User, UserRole
from knowledge.errors import InvalidInputError, NotFoundError
from knowledge.relational import fetch_page, parse_uuid


async def create_user(
    session: AsyncSession,
    email: str,
    full_name: str,
    role: UserRole = UserRole.student,
    hashed_password: str | None = None,
) -> User:
    email = email.strip().lower()
    if "@" not in email or not full_name.strip():
        raise InvalidInputError("a user needs a valid email and a name")
    user = User(
        email=email, full_name=full_name.strip(), role=role, hashed_password=hashed_password
    )
    session.add(user)
    await session.flush()
    return user


async def get_user(session: AsyncSession, user_id: str | uuid.UUID) -> User:
    user = await session.get(User, parse_uuid(user_id, "user"))
    if user is None:
        raise NotFoundError(f"user {user_id} does not exist")
    return user


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.execute(select(User).where(User.email == email.strip().lower()))
    return result.scalar_one_or_none()


async def list_users(
    session: AsyncSession, limit: int, offset: int, search: str | None = None
) -> tuple[list[User], int]:
    query = select(User).order_by(User.created_at, User.id)
    if search and search.strip():
        pattern = "%" + search.strip().lower().replace("\\", "\\\\").replace("%", "\\%") + "%"
        query = query.where(
            or_(User.email.like(pattern, escape="\\"), func.lower(User.full_name).like(pattern))
        )
    return await fetch_page(session, query, limit, offset)


async def delete_user(session: AsyncSession, user_id: uuid.UUID) -> None:
    user = await get_user(session, user_id)
    await session.delete(user)
    await session.flush()
