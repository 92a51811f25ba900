from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import User, UserRole
from knowledge import users as user_db
from serving.auth.security import hash_password, verify_password
from serving.auth.service import revoke_user_sessions
from serving.chat.broadcast import CLOSE_SESSION_ENDED, Broadcaster
from serving.errors import Conflict, Forbidden, Unauthorized
from serving.pagination import Page, PageParams
from serving.permissions import Action, Permissions
from serving.users.schemas import MeUpdate, UserCreate, UserOut, UserUpdate


async def list_users(
    session: AsyncSession, perms: Permissions, actor: User, page: PageParams, search: str | None
) -> Page[UserOut]:
    await perms.check(actor, Action.USER_LIST)
    users, total = await user_db.list_users(session, page.limit, page.offset, search)
    return Page(
        items=[UserOut.model_validate(u) for u in users],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


async def _check_email_free(session: AsyncSession, email: str, user_id: uuid.UUID | None) -> None:
    existing = await user_db.get_user_by_email(session, email)
    if existing is not None and existing.id != user_id:
        raise Conflict(f"a user with email {email.strip().lower()} already exists", "email_taken")


async def create_user(
    session: AsyncSession, perms: Permissions, actor: User, body: UserCreate
) -> User:
    role = UserRole(body.role)
    await perms.check(actor, Action.USER_CREATE, role)
    await _check_email_free(session, body.email, None)
    user = await user_db.create_user(
        session, body.email, body.full_name, role, await hash_password(body.password)
    )
    await session.commit()
    return user


async def get_user(
    session: AsyncSession, perms: Permissions, actor: User, user_id: uuid.UUID
) -> User:
    user = await user_db.get_user(session, user_id)
    await perms.check(actor, Action.USER_READ, user)
    return user


async def update_user(
    session: AsyncSession,
    perms: Permissions,
    actor: User,
    user_id: uuid.UUID,
    body: UserUpdate,
    sockets: Broadcaster,
) -> User:
    """An admin's change. A new password or a disabled account ends the user's sessions and
    closes their WebSockets; a new role makes their WebSockets re-check their rooms."""
    user = await user_db.get_user(session, user_id)
    await perms.check(actor, Action.USER_MANAGE, user)
    if user.id == actor.id and (body.role is not None or body.is_active is not None):
        raise Forbidden("you cannot change your own role or disable your own account")
    revoke = role_changed = False
    if body.role is not None and UserRole(body.role) != user.role:
        await perms.check(actor, Action.USER_GRANT_ROLE, UserRole(body.role))
        user.role = UserRole(body.role)
        role_changed = True
    if body.email is not None:
        await _check_email_free(session, body.email, user.id)
        user.email = body.email.strip().lower()
    if body.full_name is not None:
        user.full_name = body.full_name.strip() or user.full_name
    if body.password is not None:
        user.hashed_password = await hash_password(body.password)
        revoke = True
    if body.is_active is not None:
        revoke = revoke or (user.is_active and not body.is_active)
        user.is_active = body.is_active
    if revoke:
        await revoke_user_sessions(session, user.id, "changed by an admin")
    await session.commit()
    if revoke:
        await sockets.close_sockets(
            CLOSE_SESSION_ENDED, "the account was changed by an admin", user_id=user.id
        )
    elif role_changed:
        await sockets.recheck_sockets(user.id)
    return user


async def update_me(
    session: AsyncSession,
    actor: User,
    body: MeUpdate,
    current_session: uuid.UUID | None,
    sockets: Broadcaster,
) -> User:
    if body.full_name is not None and body.full_name.strip():
        actor.full_name = body.full_name.strip()
    if body.password is not None:
        ok, _ = await verify_password(actor.hashed_password, body.current_password or "")
        if not ok:
            raise Unauthorized("the current password is wrong", "invalid_credentials")
        actor.hashed_password = await hash_password(body.password)
        await revoke_user_sessions(session, actor.id, "password changed", keep=current_session)
    await session.commit()
    if body.password is not None:
        await sockets.close_sockets(
            CLOSE_SESSION_ENDED,
            "the password was changed",
            user_id=actor.id,
            keep_session_id=current_session,
        )
    return actor


async def delete_user(
    session: AsyncSession,
    perms: Permissions,
    actor: User,
    user_id: uuid.UUID,
    sockets: Broadcaster,
) -> None:
    user = await user_db.get_user(session, user_id)
    await perms.check(actor, Action.USER_DELETE, user)
    await user_db.delete_user(session, user.id)
    await session.commit()
    await sockets.close_sockets(CLOSE_SESSION_ENDED, "the account was deleted", user_id=user_id)
