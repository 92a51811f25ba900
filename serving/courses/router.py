"""``/courses``: courses and their members."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from serving.courses import service
from serving.courses.schemas import (
    CourseCreate,
    CourseMemberIn,
    CourseMemberOut,
    CourseOut,
    CourseUpdate,
)
from serving.deps import CurrentUser, PermissionsDep, SessionDep, StateDep
from serving.errors import ERROR_RESPONSES
from serving.pagination import Page, PageDep

router = APIRouter(prefix="/courses", tags=["courses"], responses=ERROR_RESPONSES)


@router.get("", response_model=Page[CourseOut])
async def list_courses(session: SessionDep, user: CurrentUser, page: PageDep) -> Page[CourseOut]:
    """Every course for admins; otherwise the courses you own, belong to or have a room in."""
    return await service.list_courses(session, user, page)


@router.post("", response_model=CourseOut, status_code=status.HTTP_201_CREATED)
async def create_course(
    body: CourseCreate, session: SessionDep, perms: PermissionsDep, user: CurrentUser
) -> CourseOut:
    return CourseOut.model_validate(await service.create_course(session, perms, user, body))


@router.get("/{course_id}", response_model=CourseOut)
async def read_course(
    course_id: uuid.UUID, session: SessionDep, perms: PermissionsDep, user: CurrentUser
) -> CourseOut:
    return CourseOut.model_validate(await service.get_course(session, perms, user, course_id))


@router.patch("/{course_id}", response_model=CourseOut)
async def update_course(
    course_id: uuid.UUID,
    body: CourseUpdate,
    session: SessionDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> CourseOut:
    course = await service.update_course(session, perms, user, course_id, body)
    return CourseOut.model_validate(course)


@router.delete("/{course_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_course(
    course_id: uuid.UUID,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> Response:
    """Delete the course and its rooms; their open WebSockets close (4404)."""
    await service.delete_course(session, perms, user, course_id, state.broadcaster)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{course_id}/members", response_model=Page[CourseMemberOut])
async def list_course_members(
    course_id: uuid.UUID,
    session: SessionDep,
    perms: PermissionsDep,
    user: CurrentUser,
    page: PageDep,
) -> Page[CourseMemberOut]:
    return await service.list_members(session, perms, user, course_id, page)


@router.put("/{course_id}/members", response_model=CourseMemberOut)
async def set_course_member(
    course_id: uuid.UUID,
    body: CourseMemberIn,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> CourseMemberOut:
    """Add a member or change their role (``teacher`` members manage the course)."""
    return await service.set_member(session, perms, user, course_id, body, state.broadcaster)


@router.delete("/{course_id}/members/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_course_member(
    course_id: uuid.UUID,
    user_id: uuid.UUID,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> Response:
    """Remove a member; WebSockets they held on the course's rooms as a manager close."""
    await service.remove_member(session, perms, user, course_id, user_id, state.broadcaster)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
