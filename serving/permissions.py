"""Role-based access control: one place, ``Permissions.check(user, action, resource)``.

Roles: ``super_admin`` (everything), ``admin`` (everything but super admins), ``teacher``
(creates courses, runs the courses they own or teach), ``student``, and ``agent`` identities
(speak only in the rooms they are members of; they cannot log in).

Rooms: a *reader* is a room member (any role), a manager of the room's course, or an admin; a
*moderator* is a room member with role ``moderator``, a course manager (owner or ``teacher``
course member) or an admin. Every room endpoint checks one of these.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import AgentConfig, Artifact, Course, Room, User, UserRole
from knowledge import courses, rooms
from knowledge.chat import MessageRecord
from serving.errors import Forbidden

ADMINS = frozenset({UserRole.super_admin, UserRole.admin})
COURSE_MANAGER_ROLES = frozenset({"owner", "teacher"})
ROOM_MEMBER_ROLES = ("member", "moderator")


class Action(enum.StrEnum):
    USER_LIST = "user:list"
    USER_READ = "user:read"
    USER_CREATE = "user:create"  # resource: the role of the new user
    USER_MANAGE = "user:manage"  # update / deactivate another user
    USER_GRANT_ROLE = "user:grant_role"  # resource: the role granted
    USER_DELETE = "user:delete"
    COURSE_CREATE = "course:create"
    COURSE_READ = "course:read"
    COURSE_MANAGE = "course:manage"  # update, delete, members, rooms
    ROOM_READ = "room:read"
    ROOM_MANAGE = "room:manage"  # rename, delete, members
    MESSAGE_POST = "message:post"
    MESSAGE_EDIT = "message:edit"
    MESSAGE_DELETE = "message:delete"
    MESSAGE_IMPORT = "message:import"  # bulk transcript import: admins only
    ARTIFACT_CREATE = "artifact:create"
    ARTIFACT_UPDATE = "artifact:update"
    ARTIFACT_DELETE = "artifact:delete"
    AGENT_MANAGE = "agent:manage"
    AGENT_RUN = "agent:run"
    GRAPH_READ = "graph:read"
    GRAPH_BUILD = "graph:build"  # an incremental refresh
    GRAPH_REBUILD = "graph:rebuild"  # a full rebuild (wipe and re-derive): room managers
    GOLDEN_QUESTIONS_MANAGE = "golden_questions:manage"  # add, delete, evaluate now


class RoomLevel(enum.IntEnum):
    NONE = 0
    READER = 1
    MODERATOR = 2


_ROOM_READER_ACTIONS = frozenset(
    {
        Action.ROOM_READ,
        Action.MESSAGE_POST,
        Action.ARTIFACT_CREATE,
        Action.GRAPH_READ,
        Action.GRAPH_BUILD,
    }
)
_ROOM_MODERATOR_ACTIONS = frozenset(
    {
        Action.ROOM_MANAGE,
        Action.AGENT_MANAGE,
        Action.AGENT_RUN,
        Action.GOLDEN_QUESTIONS_MANAGE,
        Action.GRAPH_REBUILD,
    }
)

Resource = (
    None | User | UserRole | Course | Room | MessageRecord | Artifact | AgentConfig | uuid.UUID
)


@dataclass
class Permissions:
    session: AsyncSession

    async def check(self, user: User, action: Action, resource: Resource = None) -> None:
        """Raise ``Forbidden`` unless ``user`` may do ``action`` on ``resource``."""
        if not await self.allowed(user, action, resource):
            raise Forbidden(f"you may not do {action.value} here")

    async def allowed(self, user: User, action: Action, resource: Resource = None) -> bool:
        if not user.is_active:
            return False
        if user.role == UserRole.super_admin:
            return True
        is_admin = user.role == UserRole.admin
        match action:
            case Action.USER_LIST:
                return is_admin or user.role == UserRole.teacher
            case Action.USER_READ:
                assert isinstance(resource, User)
                return is_admin or user.role == UserRole.teacher or resource.id == user.id
            case Action.USER_CREATE | Action.USER_GRANT_ROLE:
                assert isinstance(resource, UserRole)
                return is_admin and resource != UserRole.super_admin
            case Action.USER_MANAGE | Action.USER_DELETE:
                assert isinstance(resource, User)
                if action == Action.USER_DELETE and resource.id == user.id:
                    return False
                return is_admin and resource.role != UserRole.super_admin
            case Action.COURSE_CREATE:
                return is_admin or user.role == UserRole.teacher
            case Action.COURSE_READ:
                assert isinstance(resource, Course)
                return is_admin or await self._can_see_course(user, resource)
            case Action.COURSE_MANAGE:
                assert isinstance(resource, Course)
                return is_admin or await self._manages_course(user, resource.id)
            case Action.MESSAGE_IMPORT:
                return is_admin
            case Action.MESSAGE_EDIT:
                assert isinstance(resource, MessageRecord)
                return (
                    resource.author_id == user.id
                    and await self.room_level(user, resource.room_id) >= RoomLevel.READER
                )
            case Action.MESSAGE_DELETE:
                assert isinstance(resource, MessageRecord)
                level = await self.room_level(user, resource.room_id)
                return level >= RoomLevel.MODERATOR or (
                    level >= RoomLevel.READER and resource.author_id == user.id
                )
            case Action.ARTIFACT_UPDATE:
                assert isinstance(resource, Artifact)
                return await self.room_level(user, resource.room_id) >= RoomLevel.READER
            case Action.ARTIFACT_DELETE:
                assert isinstance(resource, Artifact)
                level = await self.room_level(user, resource.room_id)
                return level >= RoomLevel.MODERATOR or (
                    level >= RoomLevel.READER and resource.created_by == user.id
                )
        if action in _ROOM_READER_ACTIONS or action in _ROOM_MODERATOR_ACTIONS:
            room_id = _room_id_of(resource)
            needed = RoomLevel.MODERATOR if action in _ROOM_MODERATOR_ACTIONS else RoomLevel.READER
            if user.role == UserRole.agent and needed == RoomLevel.MODERATOR:
                return False
            return await self.room_level(user, room_id) >= needed
        return False

    async def room_level(self, user: User, room_id: uuid.UUID) -> RoomLevel:
        if not user.is_active:
            return RoomLevel.NONE
        if user.role in ADMINS:
            return RoomLevel.MODERATOR
        member = await rooms.room_member(self.session, room_id, user.id)
        if member is not None and member.role == "moderator":
            return RoomLevel.MODERATOR
        if user.role != UserRole.agent:
            room = await rooms.get_room(self.session, room_id)
            if await self._manages_course(user, room.course_id):
                return RoomLevel.MODERATOR
        return RoomLevel.READER if member is not None else RoomLevel.NONE

    async def _manages_course(self, user: User, course_id: uuid.UUID) -> bool:
        role = await courses.course_role(self.session, course_id, user.id)
        return role in COURSE_MANAGER_ROLES

    async def _can_see_course(self, user: User, course: Course) -> bool:
        return await courses.course_visible_to(self.session, course.id, user.id)


def _room_id_of(resource: Resource) -> uuid.UUID:
    if isinstance(resource, Room):
        return resource.id
    if isinstance(resource, uuid.UUID):
        return resource
    if isinstance(resource, MessageRecord | Artifact | AgentConfig):
        return resource.room_id
    raise TypeError(f"no room in {resource!r}")
