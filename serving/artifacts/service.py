from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from dbschema.models import Artifact, ArtifactVersion, User
from knowledge import artifacts
from realtime.events import ArtifactChanged, ArtifactDeleted
from serving.artifacts.schemas import (
    ArtifactIn,
    ArtifactSummary,
    ArtifactUpdate,
    ArtifactVersionSummary,
)
from serving.errors import PayloadTooLarge
from serving.notify import after_commit, stage_event
from serving.pagination import Page, PageParams
from serving.permissions import Action, Permissions
from serving.rooms.service import authorize_room
from serving.state import AppState


def _check_size(state: AppState, content: str | None) -> None:
    limit = state.settings.max_artifact_chars
    if content is not None and len(content) > limit:
        raise PayloadTooLarge(
            f"the artifact has {len(content)} characters; the limit is {limit}",
            "artifact_too_large",
        )


async def _stage_change(session: AsyncSession, artifact: Artifact, actor: User) -> list[int]:
    """Before the commit: the ``artifact.changed`` event of the new version (outbox)."""
    return await stage_event(
        session,
        ArtifactChanged(
            room_id=str(artifact.room_id),
            artifact_id=str(artifact.id),
            version=artifact.version,
            actor_id=str(actor.id),
        ),
    )


def _changed_frame(artifact: Artifact) -> dict:
    return {
        "type": "artifact.changed",
        "artifact": ArtifactSummary.model_validate(artifact).model_dump(mode="json"),
    }


async def create_artifact(
    session: AsyncSession,
    state: AppState,
    perms: Permissions,
    actor: User,
    room_id: uuid.UUID,
    body: ArtifactIn,
) -> Artifact:
    room = await authorize_room(session, perms, actor, room_id, Action.ARTIFACT_CREATE)
    _check_size(state, body.content)
    artifact = await artifacts.create_artifact(
        session, room.id, body.title, body.content, state.settings.max_artifact_chars, actor.id
    )
    staged = await _stage_change(session, artifact, actor)
    await session.commit()
    await session.refresh(artifact)
    await after_commit(state, artifact.room_id, _changed_frame(artifact), staged)
    return artifact


async def list_artifacts(
    session: AsyncSession, perms: Permissions, actor: User, room_id: uuid.UUID, page: PageParams
) -> Page[ArtifactSummary]:
    room = await authorize_room(session, perms, actor, room_id, Action.ROOM_READ)
    found, total = await artifacts.list_artifacts(session, room.id, page.limit, page.offset)
    return Page(
        items=[ArtifactSummary.model_validate(a) for a in found],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


async def get_artifact(
    session: AsyncSession,
    perms: Permissions,
    actor: User,
    room_id: uuid.UUID,
    artifact_id: uuid.UUID,
) -> Artifact:
    room = await authorize_room(session, perms, actor, room_id, Action.ROOM_READ)
    return await artifacts.get_artifact(session, room.id, artifact_id)


async def update_artifact(
    session: AsyncSession,
    state: AppState,
    perms: Permissions,
    actor: User,
    room_id: uuid.UUID,
    artifact_id: uuid.UUID,
    body: ArtifactUpdate,
) -> Artifact:
    room = await authorize_room(session, perms, actor, room_id, Action.ROOM_READ)
    artifact = await artifacts.get_artifact(session, room.id, artifact_id)
    await perms.check(actor, Action.ARTIFACT_UPDATE, artifact)
    _check_size(state, body.content)
    artifact = await artifacts.update_artifact(
        session,
        room.id,
        artifact.id,
        state.settings.max_artifact_chars,
        title=body.title,
        content=body.content,
        edited_by=actor.id,
        expected_version=body.expected_version,
    )
    staged = await _stage_change(session, artifact, actor)
    await session.commit()
    await session.refresh(artifact)
    await after_commit(state, artifact.room_id, _changed_frame(artifact), staged)
    return artifact


async def delete_artifact(
    session: AsyncSession,
    state: AppState,
    perms: Permissions,
    actor: User,
    room_id: uuid.UUID,
    artifact_id: uuid.UUID,
) -> None:
    room = await authorize_room(session, perms, actor, room_id, Action.ROOM_READ)
    artifact = await artifacts.get_artifact(session, room.id, artifact_id)
    await perms.check(actor, Action.ARTIFACT_DELETE, artifact)
    await artifacts.delete_artifact(session, room.id, artifact.id)
    staged = await stage_event(
        session,
        ArtifactDeleted(room_id=str(room.id), artifact_id=str(artifact_id), actor_id=str(actor.id)),
    )
    await session.commit()
    await after_commit(
        state, room.id, {"type": "artifact.deleted", "artifact_id": str(artifact_id)}, staged
    )


async def list_versions(
    session: AsyncSession,
    perms: Permissions,
    actor: User,
    room_id: uuid.UUID,
    artifact_id: uuid.UUID,
    page: PageParams,
) -> Page[ArtifactVersionSummary]:
    room = await authorize_room(session, perms, actor, room_id, Action.ROOM_READ)
    found, total = await artifacts.list_artifact_versions(
        session, room.id, artifact_id, page.limit, page.offset
    )
    return Page(
        items=[ArtifactVersionSummary.model_validate(v) for v in found],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


async def get_version(
    session: AsyncSession,
    perms: Permissions,
    actor: User,
    room_id: uuid.UUID,
    artifact_id: uuid.UUID,
    version: int,
) -> ArtifactVersion:
    room = await authorize_room(session, perms, actor, room_id, Action.ROOM_READ)
    return await artifacts.get_artifact_version(session, room.id, artifact_id, version)
