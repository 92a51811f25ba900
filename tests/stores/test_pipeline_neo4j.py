"""The Dagster room jobs once on Neo4j (graph, Leiden in GDS) + Qdrant (vectors).

Real runs on the PostgreSQL-backed instance, with the ``knowledge`` resource pointed at the
Neo4j server of the run and the Qdrant server of the run (``COAGENT_TEST_QDRANT_URL``; a local
mode folder where none is given, outside CI). Every asset step opens and closes its own platform,
so the Neo4j driver (and a local-mode folder lock) are released between steps. The resource has
no collection-prefix setting, so on the server the room's points go to the default
``coagent_*`` collections; the room id is unique, and its points are removed afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dagster import DagsterEventType, DagsterInstance

from knowledge.graph import Community
from knowledge.platform import Platform
from knowledge.sample import load_sample
from knowledge.search import Route, answer_question
from knowledge.settings import Settings
from knowledge.stores.neo4j_graph import Neo4jGraphStore
from knowledge.stores.qdrant_store import QdrantVectorStore
from pipelines.resources import KnowledgeResource
from tests.conftest import make_room, run_job, stored_state, with_platform

pytestmark = pytest.mark.neo4j

SAMPLE = [(s.speaker, s.text) for s in load_sample()[:160]]


@pytest.fixture(scope="module")
def overrides(
    neo4j_settings: Settings, qdrant_url: str | None, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    assert neo4j_settings.neo4j_uri
    return {
        "neo4j_uri": neo4j_settings.neo4j_uri,
        "neo4j_user": neo4j_settings.neo4j_user,
        "neo4j_password": neo4j_settings.neo4j_password,
        "neo4j_database": neo4j_settings.neo4j_database,
        "qdrant_url": qdrant_url or str(tmp_path_factory.mktemp("qdrant-neo4j-job")),
    }


@pytest.fixture(scope="module")
def services(overrides: dict[str, str]) -> Settings:
    return KnowledgeResource(overrides=overrides).settings()


@pytest.fixture(scope="module")
def room(
    settings: Settings,
    services: Settings,
    overrides: dict[str, str],
    dagster_instance: DagsterInstance,
) -> Iterator[str]:
    room_id = with_platform(settings, lambda p: make_room(p, SAMPLE, "neo4j + qdrant"))
    outcome = run_job(dagster_instance, room_id, overrides=overrides)
    assert outcome.success, outcome.error
    yield room_id

    async def clean(platform: Platform) -> None:
        await platform.vectors.wipe_room(room_id)

    with_platform(services, clean)


def test_refresh_writes_the_graph_to_neo4j_and_the_vectors_to_qdrant(
    room: str, settings: Settings, services: Settings, dagster_instance: DagsterInstance
) -> None:
    async def stores(platform: Platform) -> tuple[str, str]:
        return type(platform.graph).__name__, type(platform.vectors).__name__

    assert with_platform(services, stores) == (Neo4jGraphStore.__name__, QdrantVectorStore.__name__)
    state = stored_state(services, room)
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
    # Nothing went to the embedded graph tables or pgvector.
    embedded = stored_state(settings, room)
    assert embedded["entities"] == embedded["communities"] == embedded["reports"] == 0
    assert embedded["entities_vectors"] == embedded["chunks_vectors"] == 0

    run = dagster_instance.get_runs(limit=1)[0]
    checks = [
        r.get_dagster_event().event_specific_data
        for r in dagster_instance.all_logs(
            run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
        )
    ]
    # 6 graph checks, all_chunks_extracted, every_message_indexed, golden_questions_recall
    assert len(checks) == 9
    assert all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]

    # GDS Leiden's hierarchy: level 0 partitions every entity, children partition their parent.
    async def read(platform: Platform) -> tuple[list[str], list[Community]]:
        return (
            await platform.graph.entity_names(room),
            await platform.graph.get_communities(room),
        )

    names, communities = with_platform(services, read)
    top = [n for c in communities if c.level == 0 for n in c.entity_names]
    assert sorted(top) == names
    by_id = {c.id: c for c in communities}
    for parent in communities:
        children = [c for c in communities if c.parent_id == parent.id]
        if children:
            assert all(c.level == parent.level + 1 for c in children)
            assert sorted(n for c in children for n in c.entity_names) == parent.entity_names
    assert all(c.parent_id is None or c.parent_id in by_id for c in communities)


def test_second_refresh_extracts_nothing_and_keeps_identicalstored_state(
    room: str, services: Settings, overrides: dict[str, str], dagster_instance: DagsterInstance
) -> None:
    before = stored_state(services, room)
    outcome = run_job(dagster_instance, room, overrides=overrides)
    assert outcome.success, outcome.error
    assert outcome.metadata["chunks"]["chunks_added"] == 0
    assert outcome.metadata["entities"]["chunks_extracted"] == 0
    assert outcome.metadata["community_reports"]["regenerated"] == 0
    assert (
        outcome.metadata["communities"]["unchanged"]
        == outcome.metadata["communities"]["communities"]
    )
    assert stored_state(services, room) == before


def test_rebuild_is_idempotent(
    room: str, services: Settings, overrides: dict[str, str], dagster_instance: DagsterInstance
) -> None:
    async def snapshot(platform: Platform) -> tuple[object, ...]:
        graph = await platform.graph.get_graph(room)
        return (
            graph,
            await platform.graph.get_communities(room),
            sorted(r.community_id for r in await platform.graph.get_reports(room)),
        )

    before = stored_state(services, room)
    stored = with_platform(services, snapshot)
    first = run_job(dagster_instance, room, "rebuild_room", overrides=overrides)
    assert first.success, first.error
    assert first.metadata["chunks"]["wiped"] is True
    assert first.metadata["entities"]["chunks_extracted"] == before["chunks"]
    after_first = stored_state(services, room)
    second = run_job(dagster_instance, room, "rebuild_room", overrides=overrides)
    assert second.success, second.error
    assert stored_state(services, room) == after_first == before
    # Same graph, and the same communities (seeded GDS Leiden on fresh storage ids).
    assert with_platform(services, snapshot) == stored


def test_neo4j_graph_equals_the_embedded_graph_of_the_same_room(
    room: str, settings: Settings, services: Settings, dagster_instance: DagsterInstance
) -> None:
    # The same room through the default resources: the graph goes to the PostgreSQL tables.
    outcome = run_job(dagster_instance, room)
    assert outcome.success, outcome.error

    async def graph(platform: Platform):  # type: ignore[no-untyped-def]
        return await platform.graph.get_graph(room)

    embedded, neo4j = with_platform(settings, graph), with_platform(services, graph)
    assert neo4j.entities == embedded.entities
    assert neo4j.relationships == embedded.relationships
    assert stored_state(settings, room)["entities"] == stored_state(services, room)["entities"]


def test_questions_are_answered_from_neo4j_and_qdrant(room: str, services: Settings) -> None:
    async def ask(platform: Platform) -> None:
        overall = await answer_question(
            platform, room, "What are the main themes of this conversation?"
        )
        assert overall.route == Route.global_
        assert overall.communities
        assert overall.citations
        assert overall.reports_as_of is not None
        local = await answer_question(platform, room, "What does Menenius say?")
        assert local.route == Route.local
        assert any(e.startswith("Menenius") for e in local.entities)
        assert local.citations
        assert any(c.speaker == "Menenius" or "Menenius" in c.excerpt for c in local.citations)

    with_platform(services, ask)
