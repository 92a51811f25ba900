"""The ``golden_questions_recall`` asset check in real Dagster runs of the room jobs."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from dagster import AssetCheckKey, AssetCheckSeverity, AssetKey, DagsterEventType, DagsterInstance

from dbschema.models import Message
from knowledge import chat, evaluation, rooms
from knowledge.platform import Platform
from knowledge.settings import Settings
from pipelines.assets.evaluation import CHECK_NAME, previous_recall
from pipelines.definitions import defs
from tests.conftest import make_room, run_job, with_platform

ANSWER = "Quixotl keeps the turquoise zeppelin in a hangar beside the salt marsh."
LINES = [
    ("Ann", "The bakery on Elm street sells rye bread on Mondays."),
    ("Bob", "Our chess club meets in the library basement with Ann."),
    ("Cid", ANSWER),
    ("Ann", "The river flooded the meadow after the storm."),
    ("Bob", "Grandmother knitted a scarf with seven colours for Cid."),
    ("Cid", "The violin recital was postponed until spring."),
    ("Ann", "Tomatoes grow best with plenty of sunlight, says Bob."),
    ("Bob", "The train to the coast leaves at dawn."),
]
QUESTION = "Where does Quixotl keep the turquoise zeppelin?"


def _check_evaluation(instance: DagsterInstance, run_id: str) -> Any:
    found = [
        record.get_dagster_event().event_specific_data
        for record in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    ]
    ours = [e for e in found if e.check_name == CHECK_NAME]
    assert len(ours) == 1, [e.check_name for e in found]
    return ours[0]


def _meta(evaluation_event: Any) -> dict[str, Any]:
    return {k: v.value for k, v in evaluation_event.metadata.items()}


@pytest.mark.parametrize("job", ["refresh_room", "rebuild_room"])
def test_the_room_jobs_run_the_check(job: str) -> None:
    keys = defs.resolve_job_def(job).asset_layer.asset_graph.asset_check_keys
    assert AssetCheckKey(AssetKey("community_reports"), CHECK_NAME) in keys


def test_refresh_records_recall_and_warns_when_the_gold_can_no_longer_be_found(
    settings: Settings, dagster_instance: DagsterInstance
) -> None:
    room_id = with_platform(settings, lambda platform: make_room(platform, LINES, "eval check"))

    # 1. no golden questions yet: passes and says so
    first = run_job(dagster_instance, room_id)
    assert first.success, first.error
    empty = _check_evaluation(dagster_instance, first.run_id)
    assert empty.passed and empty.partition == room_id
    assert _meta(empty)["questions"] == 0
    assert "no golden questions" in (empty.description or "")

    async def add_question(platform: Platform) -> tuple[int, str]:
        async with platform.session() as session:
            gold = (
                await session.execute(
                    Message.__table__.select().where(
                        Message.room_id == room_id, Message.content == ANSWER
                    )
                )
            ).one()
            stored = await evaluation.add_golden_question(session, room_id, QUESTION, [gold.id])
            await session.commit()
            return gold.id, str(stored.id)

    gold_id, question_id = with_platform(settings, add_question)

    # 2. the answer is unmistakable: recall@10 1.0, recorded with the room's partition
    second = run_job(dagster_instance, room_id)
    assert second.success, second.error
    found = _check_evaluation(dagster_instance, second.run_id)
    meta = _meta(found)
    assert found.passed and found.partition == room_id
    assert found.asset_key == AssetKey("community_reports")
    assert meta["questions"] == 1
    assert meta["recall_at_10"] == 1.0 and meta["recall_at_5"] == 1.0
    assert meta["mrr_at_10"] == 1.0
    assert meta["recall_at_10_by_kind"] == {"single-hop": 1.0}
    assert meta["previous_recall_at_10"] is None  # the empty evaluation has no recall
    assert meta["zero_recall_question_ids"] == []
    assert CHECK_NAME not in second.warnings

    # 3. the gold message is reworded: it can no longer be found, the check warns
    async def reword(platform: Platform) -> None:
        async with platform.session() as session:
            await chat.edit_message(
                session,
                rooms.parse_room_id(room_id),
                gold_id,
                "Fine, see you later.",
                platform.settings.max_message_chars,
            )
            await session.commit()

    with_platform(settings, reword)
    third = run_job(dagster_instance, room_id)
    assert third.success, third.error  # non-blocking: the run goes on
    dropped = _check_evaluation(dagster_instance, third.run_id)
    meta = _meta(dropped)
    assert not dropped.passed and dropped.severity == AssetCheckSeverity.WARN
    assert meta["recall_at_10"] == 0.0
    assert meta["previous_recall_at_10"] == 1.0
    assert meta["zero_recall_question_ids"] == [question_id]
    assert "dropped from 1.000 to 0.000" in (dropped.description or "")
    assert CHECK_NAME in third.warnings

    # the previous value is per room: another partition has none
    assert previous_recall(dagster_instance, room_id, "not-a-run") == 0.0
    assert previous_recall(dagster_instance, str(uuid.uuid4()), "not-a-run") is None
