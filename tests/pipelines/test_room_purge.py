"""The room purge job and a refresh of a deleted room: real Dagster runs, real stores."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus
from sqlalchemy import delete

from dbschema.models import EventOutbox
from knowledge import rooms
from knowledge.platform import Platform
from knowledge.settings import Settings
from pipelines.definitions import defs
from realtime.events import RoomDeleted
from realtime.outbox import stage
from tests.conftest import make_room, run_job, stored_state, with_platform

LINES = [
    ("Ada", "Babbage built the Difference Engine in London; Lovelace wrote its notes."),
    ("Charles", "Lovelace and Babbage showed the Analytical Engine to Somerville in London."),
]


@pytest.fixture(autouse=True)
def _no_outbox_leftovers(settings: Settings) -> Iterator[None]:
    """The ``room.deleted`` rows these tests stage are not for any relay to send (an API app
    of the session would append them to the shared stream the sensor tests read)."""
    yield

    async def clean(platform: Platform) -> None:
        async with platform.session() as session:
            await session.execute(delete(EventOutbox).where(EventOutbox.room_id.in_(_STAGED)))
            await session.commit()

    if _STAGED:
        with_platform(settings, clean)
        _STAGED.clear()


_STAGED: list[uuid.UUID] = []


def _delete(settings: Settings, room_id: str) -> None:
    """As the API deletes a room: the row and its ``room.deleted`` event in one transaction."""
    _STAGED.append(uuid.UUID(room_id))

    async def delete(platform: Platform) -> None:
        async with platform.session() as session:
            await rooms.delete_room(session, uuid.UUID(room_id))
            await stage(session, RoomDeleted(room_id=room_id))
            await session.commit()

    with_platform(settings, delete)


def test_the_purge_removes_a_deleted_rooms_data_and_partition(
    settings: Settings, dagster_instance: DagsterInstance
) -> None:
    room_id = with_platform(settings, lambda platform: make_room(platform, LINES, "purged"))
    assert run_job(dagster_instance, room_id).success
    assert stored_state(settings, room_id)["entities"] > 0
    _delete(settings, room_id)

    result = defs.resolve_job_def("room_purge").execute_in_process(
        instance=dagster_instance, partition_key=room_id, raise_on_error=False
    )
    assert result.success
    assert set(stored_state(settings, room_id).values()) == {0}
    assert not dagster_instance.has_dynamic_partition("rooms", room_id)
    [output] = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_OUTPUT]
    metadata = {k: v.value for k, v in output.step_output_data.metadata.items()}
    assert metadata["removed_total"] > 0 and metadata["postgres:room_chunks"] >= 1
    assert metadata["partition_removed"] is True


def test_a_refresh_of_a_room_deleted_under_it_is_cancelled_not_failed(
    settings: Settings, dagster_instance: DagsterInstance
) -> None:
    room_id = with_platform(settings, lambda platform: make_room(platform, LINES, "gone"))
    _delete(settings, room_id)
    outcome = run_job(dagster_instance, room_id)
    run = dagster_instance.get_run_by_id(outcome.run_id)
    assert run is not None and run.status == DagsterRunStatus.CANCELED
    assert "no longer exists" in (outcome.error or "")


def test_a_refresh_of_a_room_that_never_existed_still_fails_clearly(
    dagster_instance: DagsterInstance,
) -> None:
    outcome = run_job(dagster_instance, str(uuid.uuid4()))
    run = dagster_instance.get_run_by_id(outcome.run_id)
    assert run is not None and run.status == DagsterRunStatus.FAILURE
    assert "does not exist" in (outcome.error or "")
