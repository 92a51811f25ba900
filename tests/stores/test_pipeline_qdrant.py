"""The whole room pipeline and question answering with Qdrant as the vector store.

The Platform is the conftest one with its vector store swapped: the relational rows and the graph
stay in the embedded PostgreSQL, the vectors go to Qdrant: the server of the run
(``COAGENT_TEST_QDRANT_URL``, under a collection prefix of this test's own), else local mode.
"""

from __future__ import annotations

import dataclasses

import pytest

from knowledge import invariants
from knowledge.indexing import index_room, room_state, wipe_room
from knowledge.platform import Platform
from knowledge.sample import load_sample
from knowledge.search import Route, answer_question
from knowledge.stores.base import CHUNKS, COLLECTIONS, COMMUNITIES, ENTITIES, EVIDENCE
from knowledge.stores.qdrant_store import QdrantVectorStore
from tests.conftest import make_room

SAMPLE = [(s.speaker, s.text) for s in load_sample()[:120]]


@pytest.fixture
async def qdrant_platform(platform: Platform, qdrant_store: QdrantVectorStore) -> Platform:
    return dataclasses.replace(platform, vectors=qdrant_store)


async def build(platform: Platform, room_id: str) -> dict[str, int]:
    """Run every step; return how many vectors each step (re)wrote."""
    index = await index_room(platform, room_id)
    return {
        CHUNKS: index.chunks.vectors.written,
        ENTITIES: index.graph.vectors.written,
        COMMUNITIES: index.reports.vectors.written,
        EVIDENCE: index.evidence.vectors.written,
    }


async def check_invariants(
    platform: Platform, room_id: str, collections: tuple[str, ...] = COLLECTIONS
) -> None:
    outcomes = [
        await invariants.relationships_have_entities(platform, room_id),
        await invariants.names_normalized(platform, room_id),
        await invariants.entities_in_communities(platform, room_id),
        *[await invariants.vectors_match_rows(platform, room_id, kind) for kind in collections],
    ]
    failed = [(o.description, o.examples) for o in outcomes if not o.passed]
    assert not failed, failed


async def test_room_index_and_answers_with_qdrant(
    platform: Platform, qdrant_platform: Platform
) -> None:
    room_id = await make_room(platform, SAMPLE, "qdrant pipeline room")

    written = await build(qdrant_platform, room_id)
    state = await room_state(qdrant_platform, room_id)
    assert state["chunks"] > 1 and state["entities"] > 5 and state["reports"] > 0
    assert state["chunks_vectors"] == state["chunks"] == written[CHUNKS]
    assert state["entities_vectors"] == state["entities"] == written[ENTITIES]
    assert state["communities_vectors"] == state["reports"] == written[COMMUNITIES]
    await check_invariants(qdrant_platform, room_id)

    # Idempotent: a second run re-embeds nothing (fingerprints match) and changes nothing.
    assert await build(qdrant_platform, room_id) == dict.fromkeys(
        (CHUNKS, ENTITIES, COMMUNITIES, EVIDENCE), 0
    )
    assert await room_state(qdrant_platform, room_id) == state

    # The same room indexed into pgvector holds the same points with the same fingerprints.
    await build(platform, room_id)
    assert await room_state(platform, room_id) == state
    for collection in COLLECTIONS:
        assert await qdrant_platform.vectors.fingerprints(
            collection, room_id
        ) == await platform.vectors.fingerprints(collection, room_id)

    # Local question about the most mentioned entity.
    graph = await qdrant_platform.graph.get_graph(room_id)
    top = max(graph.entities, key=lambda e: (e.mentions, e.name))
    local = await answer_question(qdrant_platform, room_id, f"What did {top.display_name} do?")
    assert local.route == Route.local
    assert top.display_name in local.entities
    assert local.citations
    assert top.display_name in local.answer

    # Global question: answered from the community reports Qdrant ranked.
    overall = await answer_question(qdrant_platform, room_id, "What are the main themes?")
    assert overall.route == Route.global_
    assert overall.communities
    assert overall.citations
    assert overall.reports_as_of is not None

    # Wiping the room empties every Qdrant collection for it.
    await wipe_room(qdrant_platform, room_id)
    wiped = await room_state(qdrant_platform, room_id)
    assert all(value == 0 for value in wiped.values()), wiped


async def test_room_state_of_an_unbuilt_room_with_qdrant(
    platform: Platform, qdrant_platform: Platform
) -> None:
    # No collection exists yet: counting must still work (room_state reads all three).
    room_id = await make_room(platform, [("Ann", "Hello Bob.")], "unbuilt")
    state = await room_state(qdrant_platform, room_id)
    assert state["chunks_vectors"] == state["entities_vectors"] == 0
    assert state["communities_vectors"] == state["evidence_vectors"] == 0
    # Derived stores agree with each other; the evidence index is behind the messages until
    # the room is indexed (what the every_message_indexed check reports).
    await check_invariants(qdrant_platform, room_id, tuple(c for c in COLLECTIONS if c != EVIDENCE))
    assert not (await invariants.vectors_match_rows(qdrant_platform, room_id, EVIDENCE)).passed


async def test_platform_uses_qdrant_when_configured(platform: Platform) -> None:
    from knowledge.platform import make_stores
    from knowledge.stores.pgvector_store import PgVectorStore
    from knowledge.stores.postgres_graph import PostgresGraphStore

    settings = platform.settings.model_copy(update={"qdrant_url": None, "qdrant_host": None})
    graph, default = make_stores(settings, platform.engine)
    assert isinstance(graph, PostgresGraphStore)
    assert isinstance(default, PgVectorStore)

    for configured in (
        {"qdrant_url": "http://127.0.0.1:9"},
        {"qdrant_host": "127.0.0.1", "qdrant_port": 9},
    ):
        _, vectors = make_stores(settings.model_copy(update=configured), platform.engine)
        assert isinstance(vectors, QdrantVectorStore)
        assert not vectors.local
        await vectors.close()
