"""Artifacts of a room and their versions.

Functions take an ``AsyncSession`` and flush, never commit: the caller owns the transaction
(the API commits per request, tests roll back).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import Artifact, ArtifactVersion
from knowledge.errors import InvalidInputError, NotFoundError, VersionConflictError
from knowledge.relational import check_content, fetch_page, parse_uuid
from knowledge.rooms import get_room


async def create_artifact(
    session: AsyncSession,
    room_id: uuid.UUID,
    title: str,
    content: str,
    max_chars: int,
    created_by: uuid.UUID | None = None,
) -> Artifact:
    if not title.strip():
        raise InvalidInputError("an artifact needs a title")
    check_content(content, max_chars, "artifact")
    await get_room(session, room_id)
    artifact = Artifact(
        room_id=room_id, title=title.strip(), content=content, created_by=created_by, version=1
    )
    session.add(artifact)
    await session.flush()
    session.add(
        ArtifactVersion(
            artifact_id=artifact.id,
            version=1,
            title=artifact.title,
            content=content,
            created_by=created_by,
        )
    )
    await session.flush()
    return artifact


async def get_artifact(
    session: AsyncSession, room_id: uuid.UUID, artifact_id: str | uuid.UUID
) -> Artifact:
    artifact = await session.get(Artifact, parse_uuid(artifact_id, "artifact"))
    if artifact is None or artifact.room_id != room_id or artifact.deleted_at is not None:
        raise NotFoundError(f"artifact {artifact_id} does not exist in room {room_id}")
    return artifact


async def list_artifacts(
    session: AsyncSession, room_id: uuid.UUID, limit: int, offset: int
) -> tuple[list[Artifact], int]:
    await get_room(session, room_id)
    query = (
        select(Artifact)
        .where(Artifact.room_id == room_id, Artifact.deleted_at.is_(None))
        .order_by(Artifact.created_at, Artifact.id)
    )
    return await fetch_page(session, query, limit, offset)


async def update_artifact(
    session: AsyncSession,
    room_id: uuid.UUID,
    artifact_id: uuid.UUID,
    max_chars: int,
    title: str | None = None,
    content: str | None = None,
    edited_by: uuid.UUID | None = None,
    expected_version: int | None = None,
) -> Artifact:
    """Save a new version (title and/or content); ``expected_version`` guards lost updates."""
    artifact = await get_artifact(session, room_id, artifact_id)
    # Lock the row so concurrent saves get consecutive versions.
    await session.refresh(artifact, with_for_update=True)
    if expected_version is not None and artifact.version != expected_version:
        raise VersionConflictError(
            f"artifact {artifact_id} is at version {artifact.version}, not {expected_version}"
        )
    if title is not None:
        if not title.strip():
            raise InvalidInputError("an artifact needs a title")
        artifact.title = title.strip()
    if content is not None:
        artifact.content = check_content(content, max_chars, "artifact")
    artifact.version += 1
    artifact.updated_at = datetime.now(UTC)
    session.add(
        ArtifactVersion(
            artifact_id=artifact.id,
            version=artifact.version,
            title=artifact.title,
            content=artifact.content,
            created_by=edited_by,
        )
    )
    await session.flush()
    return artifact


async def delete_artifact(
    session: AsyncSession, room_id: uuid.UUID, artifact_id: uuid.UUID
) -> Artifact:
    artifact = await get_artifact(session, room_id, artifact_id)
    artifact.deleted_at = datetime.now(UTC)
    await session.flush()
    return artifact


async def list_artifact_versions(
    session: AsyncSession, room_id: uuid.UUID, artifact_id: uuid.UUID, limit: int, offset: int
) -> tuple[list[ArtifactVersion], int]:
    await get_artifact(session, room_id, artifact_id)
    query = (
        select(ArtifactVersion)
        .where(ArtifactVersion.artifact_id == artifact_id)
        .order_by(ArtifactVersion.version.desc())
    )
    return await fetch_page(session, query, limit, offset)


async def get_artifact_version(
    session: AsyncSession, room_id: uuid.UUID, artifact_id: uuid.UUID, version: int
) -> ArtifactVersion:
    await get_artifact(session, room_id, artifact_id)
    row = await session.get(ArtifactVersion, (artifact_id, version))
    if row is None:
        raise NotFoundError(f"artifact {artifact_id} has no version {version}")
    return row
