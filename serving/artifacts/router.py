"""``/rooms/{room_id}/artifacts``: shared text documents, versioned."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from serving.artifacts import service
from serving.artifacts.schemas import (
    ArtifactIn,
    ArtifactOut,
    ArtifactSummary,
    ArtifactUpdate,
    ArtifactVersionOut,
    ArtifactVersionSummary,
)
from serving.deps import CurrentUser, PermissionsDep, SessionDep, StateDep
from serving.errors import ERROR_RESPONSES, ErrorResponse
from serving.pagination import Page, PageDep

router = APIRouter(
    prefix="/rooms/{room_id}/artifacts", tags=["artifacts"], responses=ERROR_RESPONSES
)

Version = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get("", response_model=Page[ArtifactSummary])
async def list_artifacts(
    room_id: uuid.UUID,
    session: SessionDep,
    perms: PermissionsDep,
    user: CurrentUser,
    page: PageDep,
) -> Page[ArtifactSummary]:
    return await service.list_artifacts(session, perms, user, room_id, page)


@router.post("", response_model=ArtifactOut, status_code=status.HTTP_201_CREATED)
async def create_artifact(
    room_id: uuid.UUID,
    body: ArtifactIn,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> ArtifactOut:
    """Create an artifact (version 1); 413 above MAX_ARTIFACT_CHARS characters."""
    artifact = await service.create_artifact(session, state, perms, user, room_id, body)
    return ArtifactOut.model_validate(artifact)


@router.get("/{artifact_id}", response_model=ArtifactOut)
async def read_artifact(
    room_id: uuid.UUID,
    artifact_id: uuid.UUID,
    session: SessionDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> ArtifactOut:
    artifact = await service.get_artifact(session, perms, user, room_id, artifact_id)
    return ArtifactOut.model_validate(artifact)


@router.patch(
    "/{artifact_id}",
    response_model=ArtifactOut,
    responses={409: {"model": ErrorResponse, "description": "expected_version is stale"}},
)
async def update_artifact(
    room_id: uuid.UUID,
    artifact_id: uuid.UUID,
    body: ArtifactUpdate,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> ArtifactOut:
    """Save a new version (title and/or content)."""
    artifact = await service.update_artifact(
        session, state, perms, user, room_id, artifact_id, body
    )
    return ArtifactOut.model_validate(artifact)


@router.delete("/{artifact_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_artifact(
    room_id: uuid.UUID,
    artifact_id: uuid.UUID,
    session: SessionDep,
    state: StateDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> Response:
    await service.delete_artifact(session, state, perms, user, room_id, artifact_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{artifact_id}/versions", response_model=Page[ArtifactVersionSummary])
async def list_artifact_versions(
    room_id: uuid.UUID,
    artifact_id: uuid.UUID,
    session: SessionDep,
    perms: PermissionsDep,
    user: CurrentUser,
    page: PageDep,
) -> Page[ArtifactVersionSummary]:
    """Versions, newest first."""
    return await service.list_versions(session, perms, user, room_id, artifact_id, page)


@router.get("/{artifact_id}/versions/{version}", response_model=ArtifactVersionOut)
async def read_artifact_version(
    room_id: uuid.UUID,
    artifact_id: uuid.UUID,
    version: Version,
    session: SessionDep,
    perms: PermissionsDep,
    user: CurrentUser,
) -> ArtifactVersionOut:
    found = await service.get_version(session, perms, user, room_id, artifact_id, version)
    return ArtifactVersionOut.model_validate(found)
