"""Real Dagster runs of the room jobs on a PostgreSQL-backed instance."""

from __future__ import annotations

import asyncio

import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, RunsFilter
from sqlalchemy import create_engine, text

from coagent.runs import run_room_job
from knowledge.platform import open_platform
from knowledge.sample import load_sample
from knowledge.search import Route, answer_question
from knowledge.settings import Settings
from pipelines.instance import DAGSTER_DATABASE, dagster_storage_url
from tests.conftest import add_messages, make_room, stored_state, with_platform

SAMPLE = [(s.speaker, s.text) for s in load_sample()[:160]]
OTHER_ROOM = [
    ("Ada", "The Analytical Engine needs Babbage and a better punched card reader."),
    ("Charles", "Babbage agrees: the Analytical Engine and the Difference Engine share parts."),
    ("Ada", "Lovelace notes describe the Analytical Engine computing Bernoulli numbers."),
    ("Mary", "Somerville introduced Ada to Babbage in London."),
] * 3


def _new_room(settings: Settings, lines, name: str = "room") -> str:  # type: ignore[no-untyped-def]
    return with_platform(settings, lambda platform: make_room(platform, lines, name))


@pytest.fixture(scope="module")
def sample_room(settings: Settings, dagster_instance: DagsterInstance) -> str:
    room_id = _new_room(settings, SAMPLE, "sample")
    outcome = run_room_job(dagster_instance, "refresh_room", room_id, show_progress=False)
    assert outcome.success, outcome.error
    return room_id


def test_refresh_materializes_every_asset_and_passes_checks(
    sample_room: str, settings: Settings, dagster_instance: DagsterInstance
) -> None:
    state = stored_state(settings, sample_room)
    assert state["chunks"] > 3
    assert state["entities"] > 10
    # Chunk boundaries follow anchor messages chosen by message id, and ids depend on what
    # earlier tests inserted; without speaker edges this room's count ranges over about 8-14.
    assert state["relationships"] >= 5
    assert state["communities"] > 2
    assert state["reports"] == state["communities"]
    assert state["chunks_vectors"] == state["chunks"]
    assert state["entities_vectors"] == state["entities"]
    assert state["communities_vectors"] == state["reports"]
    assert state["evidence_vectors"] > state["chunks"]  # every message is a unit of evidence
    for asset in (
        "chunks",
        "evidence",
        "entities",
        "relationships",
        "communities",
        "community_reports",
    ):
        record = dagster_instance.get_latest_materialization_event(AssetKey(asset))
        assert record is not None
    # every blocking check ran and passed in the recorded run
    # the room's first run (newest first: the last of the room's runs)
    runs = dagster_instance.get_runs(filters=RunsFilter(tags={"dagster/partition": sample_room}))
    assert runs
    checks = [
        r.get_dagster_event()
        for r in dagster_instance.all_logs(
            runs[-1].run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
        )
    ]
    # 6 graph checks, all_chunks_extracted, every_message_indexed, golden_questions_recall
    assert len(checks) == 9
    assert all(c.event_specific_data.passed for c in checks)


def test_second_refresh_extracts_nothing_and_keeps_identicalstored_state(
    sample_room: str, settings: Settings, dagster_instance: DagsterInstance
) -> None:
    before = stored_state(settings, sample_room)
    outcome = run_room_job(dagster_instance, "refresh_room", sample_room, show_progress=False)
    assert outcome.success
    assert outcome.metadata["chunks"]["chunks_added"] == 0
    assert outcome.metadata["entities"]["chunks_extracted"] == 0
    assert outcome.metadata["community_reports"]["regenerated"] == 0
    assert (
        outcome.metadata["communities"]["unchanged"]
        == outcome.metadata["communities"]["communities"]
    )
    assert stored_state(settings, sample_room) == before


def test_incremental_refresh_extracts_only_new_chunks(
    settings: Settings, dagster_instance: DagsterInstance
) -> None:
    room_id = _new_room(settings, SAMPLE[:120], "incremental")
    assert run_room_job(dagster_instance, "refresh_room", room_id, show_progress=False).success
    before = stored_state(settings, room_id)

    async def add() -> None:
        async with open_platform(settings) as platform:
            await add_messages(
                platform, room_id, [("Valeria", "Zenobia of Palmyra visits Corioli with Valeria.")]
            )

    asyncio.run(add())
    outcome = run_room_job(dagster_instance, "refresh_room", room_id, show_progress=False)
    assert outcome.success
    assert 1 <= outcome.metadata["entities"]["chunks_extracted"] <= 2
    assert outcome.metadata["entities"]["chunks_extracted"] < before["chunks"]
    assert outcome.metadata["community_reports"]["regenerated"] < before["reports"]

    async def ask() -> list[str]:
        async with open_platform(settings) as platform:
            answer = await answer_question(platform, room_id, "Who is Zenobia?")
            return answer.entities

    assert asyncio.run(ask())[0] == "Zenobia of Palmyra"


def test_rebuild_is_idempotent(
    sample_room: str, settings: Settings, dagster_instance: DagsterInstance
) -> None:
    before = stored_state(settings, sample_room)
    first = run_room_job(dagster_instance, "rebuild_room", sample_room, show_progress=False)
    assert first.success
    assert first.metadata["chunks"]["wiped"] is True
    # a rebuild re-extracts every chunk
    assert first.metadata["entities"]["chunks_extracted"] == before["chunks"]
    after_first = stored_state(settings, sample_room)
    second = run_room_job(dagster_instance, "rebuild_room", sample_room, show_progress=False)
    assert second.success
    assert stored_state(settings, sample_room) == after_first == before


def test_two_rooms_never_see_each_other(
    sample_room: str, settings: Settings, dagster_instance: DagsterInstance
) -> None:
    other = _new_room(settings, OTHER_ROOM, "other")
    assert run_room_job(dagster_instance, "refresh_room", other, show_progress=False).success

    async def check() -> None:
        async with open_platform(settings) as platform:
            sample_graph = await platform.graph.get_graph(sample_room)
            other_graph = await platform.graph.get_graph(other)
            assert "babbage" in {e.name for e in other_graph.entities}
            assert "babbage" not in {e.name for e in sample_graph.entities}
            assert "menenius" not in {e.name for e in other_graph.entities}
            vector = (await platform.embedder.embed(["Babbage Analytical Engine"]))[0]
            for collection in ("chunks", "entities", "communities"):
                hits = await platform.vectors.search(
                    collection, sample_room, "Babbage Analytical Engine", vector, 20
                )
                assert all("babbage" not in h.text.lower() for h in hits)
            answer = await answer_question(
                platform, sample_room, "What about Babbage and the Analytical Engine?"
            )
            other_ids = await _message_ids(platform, other)
            assert not set(answer.message_ids) & other_ids
            local = await answer_question(platform, other, "What did Ada say about Babbage?")
            assert local.route == Route.local
            assert set(local.message_ids) <= other_ids and local.message_ids

    asyncio.run(check())


async def _message_ids(platform, room_id: str) -> set[int]:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from dbschema.models import Message

    async with platform.session() as session:
        rows = await session.execute(select(Message.id).where(Message.room_id == room_id))
        return {r[0] for r in rows}


def test_questions_are_answered_with_citations_to_room_messages(
    sample_room: str, settings: Settings
) -> None:
    async def ask() -> None:
        async with open_platform(settings) as platform:
            ids = await _message_ids(platform, sample_room)
            global_answer = await answer_question(
                platform, sample_room, "What are the main themes of this conversation?"
            )
            assert global_answer.route == Route.global_
            assert global_answer.communities
            assert global_answer.message_ids and set(global_answer.message_ids) <= ids
            assert global_answer.reports_as_of is not None
            local = await answer_question(platform, sample_room, "What does Menenius say?")
            assert local.route == Route.local
            assert any(e.startswith("Menenius") for e in local.entities)
            assert local.message_ids and set(local.message_ids) <= ids
            assert any(c.speaker == "Menenius" or "Menenius" in c.excerpt for c in local.citations)

    asyncio.run(ask())


def test_unknown_room_fails_the_run_clearly(
    settings: Settings, dagster_instance: DagsterInstance
) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    outcome = run_room_job(dagster_instance, "refresh_room", missing, show_progress=False)
    assert not outcome.success
    assert "does not exist" in (outcome.error or "")
    assert stored_state(settings, missing)["chunks"] == 0


def dagster_sessions(settings: Settings) -> int:
    """Sessions ever opened on Dagster's database (PostgreSQL 14+ counts them)."""
    engine = create_engine(dagster_storage_url(settings), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            return int(
                conn.execute(
                    text("SELECT sessions FROM pg_stat_database WHERE datname = :name"),
                    {"name": DAGSTER_DATABASE},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def test_a_refresh_run_reuses_its_storage_connections(
    sample_room: str, settings: Settings, dagster_instance: DagsterInstance
) -> None:
    """dagster-postgres opens a connection per storage call unless asked to pool
    (``RoomInstance``); a refresh makes ~250 calls, so unpooled it opens ~250 sessions."""
    before = dagster_sessions(settings)
    outcome = run_room_job(dagster_instance, "refresh_room", sample_room, show_progress=False)
    assert outcome.success
    # The count's own session, and the pool's few; far below one per call.
    assert dagster_sessions(settings) - before < 40
