"""The LLM path against a local OpenAI-compatible HTTP server (real HTTP, fault injection)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from dagster import DagsterEventType, DagsterInstance

from knowledge.artifacts import create_artifact
from knowledge.llm import prompts
from knowledge.llm.provider import LLMError, LLMProvider
from knowledge.llm.schemas import ExtractionOutput
from knowledge.platform import open_platform
from knowledge.rooms import parse_room_id
from knowledge.sample import load_sample
from knowledge.search import Answer, AnswerDelta, Route, answer_question, stream_answer
from knowledge.settings import Settings
from pipelines.resources import KnowledgeResource
from tests.conftest import make_room, run_job, stored_state
from tests.llm_server import FakeOpenAI

CONCURRENCY = 3
SPEECHES = [(s.speaker, s.text) for s in load_sample()[:90]]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(latency=0.02, slow_seconds=2.5).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def llm_overrides(fake: FakeOpenAI) -> dict[str, str]:
    return {
        "openai_api_key": "test-key",
        "llm_base_url": fake.base_url,
        "llm_embedding_dim": "64",
        "llm_concurrency": str(CONCURRENCY),
        "llm_timeout_seconds": "1.0",
        "llm_backoff_seconds": "0.05",
        "llm_max_retries": "4",
        "llm_reasks": "2",
    }


@pytest.fixture(scope="module")
def llm_settings(settings: Settings, llm_overrides: dict[str, str]) -> Settings:
    return KnowledgeResource(overrides=llm_overrides).settings()


def _room(settings: Settings, lines, artifact: str | None = None) -> str:  # type: ignore[no-untyped-def]
    async def create() -> str:
        async with open_platform(settings) as platform:
            room_id = await make_room(platform, lines, "llm room")
            if artifact:
                async with platform.session() as session:
                    await create_artifact(
                        session, parse_room_id(room_id), "Broken notes", artifact, 10_000
                    )
                    await session.commit()
            return room_id

    return asyncio.run(create())


def test_extraction_through_dagster_survives_faults_and_records_a_bad_chunk(
    fake: FakeOpenAI,
    llm_settings: Settings,
    llm_overrides: dict[str, str],
    dagster_instance: DagsterInstance,
) -> None:
    lines = list(SPEECHES)
    # Each fault sits in the conversation; the permanently bad text is an artifact, which is
    # chunked on its own, so exactly one chunk can never be extracted.
    lines[5] = ("Menenius", "FAULT-429 Rome is patient, says Menenius to Marcius.")
    lines[25] = ("Cominius", "FAULT-500 Cominius leads the army to Corioli.")
    lines[45] = ("Brutus", "FAULT-MALFORMED Brutus and Sicinius distrust Marcius.")
    lines[65] = ("Volumnia", "FAULT-INVALID Volumnia praises Marcius before Virgilia.")
    lines[80] = ("Valeria", "FAULT-SLOW Valeria visits Volumnia and Virgilia.")
    room_id = _room(llm_settings, lines, artifact="FAULT-ALWAYS-BAD Nothing here parses.")
    fake.reset()

    outcome = run_job(dagster_instance, room_id, overrides=llm_overrides)

    assert outcome.success, outcome.error
    entities = outcome.metadata["entities"]
    assert entities["failed_chunks"] == 1
    assert entities["entities"] > 10
    assert entities["chunks_extracted"] == stored_state(llm_settings, room_id)["chunks"] - 1
    assert outcome.metadata["relationships"]["dropped_relationships"] > 0
    assert outcome.warnings == ["all_chunks_extracted"]
    for fault in ("FAULT-429", "FAULT-500", "FAULT-MALFORMED", "FAULT-INVALID", "FAULT-SLOW"):
        assert fake.faults_served[fault] >= 1, fault
    assert fake.faults_served["FAULT-ALWAYS-BAD"] >= 3  # asked again, then given up
    assert 1 < fake.max_in_flight <= CONCURRENCY
    # usage and cost per materialization
    assert entities["llm_calls"] > 0 and entities["llm_prompt_tokens"] > 0
    assert entities["llm_cost_usd"] > 0
    reports = outcome.metadata["community_reports"]
    assert reports["llm_calls"] > 0
    state = stored_state(llm_settings, room_id)
    assert state["entities_vectors"] == state["entities"]
    assert state["reports"] == state["communities"] > 0
    # the non-blocking check is recorded as failed with a warning, the blocking ones passed
    evaluations = [
        r.get_dagster_event().event_specific_data
        for r in dagster_instance.all_logs(
            outcome.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
        )
    ]
    failed = [e.check_name for e in evaluations if not e.passed]
    assert failed == ["all_chunks_extracted"]


def test_a_rerun_over_unchanged_chunks_makes_no_llm_calls(
    fake: FakeOpenAI,
    llm_settings: Settings,
    llm_overrides: dict[str, str],
    dagster_instance: DagsterInstance,
) -> None:
    room_id = _room(llm_settings, SPEECHES[:50])
    first = run_job(dagster_instance, room_id, overrides=llm_overrides)
    assert first.success and first.metadata["entities"]["llm_calls"] > 0
    before = stored_state(llm_settings, room_id)

    fake.reset()
    second = run_job(dagster_instance, room_id, overrides=llm_overrides)
    assert second.success
    assert fake.total_calls == 0
    assert second.metadata["entities"]["llm_calls"] == 0
    # even a rebuild (wipe + re-derive) is answered from the cache
    rebuilt = run_job(dagster_instance, room_id, "rebuild_room", overrides=llm_overrides)
    assert rebuilt.success
    assert rebuilt.metadata["entities"]["chunks_extracted"] == before["chunks"]
    assert fake.total_calls == 0
    assert rebuilt.metadata["entities"]["llm_cache_hits"] > 0
    assert stored_state(llm_settings, room_id) == before


def test_answers_and_routing_through_the_llm(
    fake: FakeOpenAI,
    llm_settings: Settings,
    llm_overrides: dict[str, str],
    dagster_instance: DagsterInstance,
) -> None:
    room_id = _room(llm_settings, SPEECHES[:60])
    assert run_job(dagster_instance, room_id, overrides=llm_overrides).success

    async def ask() -> None:
        async with open_platform(llm_settings) as platform:
            assert platform.llm is not None
            fake.reset()
            global_answer = await answer_question(
                platform, room_id, "What are the main themes of this conversation?"
            )
            assert global_answer.route == Route.global_
            assert global_answer.answer.startswith("Answer:")
            assert global_answer.message_ids
            assert fake.calls["chat"] >= 3  # route + map (per report) + reduce
            local = await answer_question(
                platform, room_id, "What does Menenius tell the citizens?"
            )
            assert local.route == Route.local
            assert local.answer.startswith("Answer:")
            assert local.citations and all(c.kind == "message" for c in local.citations)
            # Streamed: the model's tokens as they come; its [n] marks become the citations.
            items = [
                item
                async for item in stream_answer(
                    platform, room_id, "What does Menenius tell the citizens?"
                )
            ]
            *deltas, streamed = items
            assert len(deltas) > 2 and all(isinstance(d, AnswerDelta) for d in deltas)
            assert isinstance(streamed, Answer) and streamed.route == Route.local
            assert "".join(d.text for d in deltas) == streamed.answer  # type: ignore[union-attr]
            assert streamed.answer.startswith("Answer:") and "[1]" in streamed.answer
            assert 1 <= len(streamed.citations) <= 2  # the two items the answer marked
            assert {c.id for c in streamed.citations} <= {e.id for e in streamed.evidence}

    asyncio.run(ask())


async def test_provider_falls_back_to_json_mode_and_reports_a_permanent_failure(
    fake: FakeOpenAI,
) -> None:
    provider = LLMProvider(
        "k", fake.base_url, "gpt-4o-mini", "text-embedding-3-small", 32, None,
        concurrency=2, timeout=1.0, backoff=0.01, reasks=1,
    )  # fmt: skip
    try:
        fake.rejects_json_schema = True
        output = await provider.structured(
            prompts.extraction("Ann: Bob Stone met Ann in Lisbon. Lisbon is sunny.", ["PERSON"]),
            ExtractionOutput,
        )
        assert {e.name for e in output.entities} >= {"Bob Stone", "Lisbon"}
        assert provider.mode.value == "json_mode"
        with pytest.raises(LLMError, match="no valid output after 2 attempts"):
            await provider.structured(
                prompts.extraction("Ann: FAULT-ALWAYS-BAD", ["PERSON"]), ExtractionOutput
            )
        vectors = await provider.embed(["one", "two", "three"])
        assert len(vectors) == 3 and all(len(v) == 32 for v in vectors)
    finally:
        fake.rejects_json_schema = False
        await provider.aclose()
