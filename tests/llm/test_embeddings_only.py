"""EMBEDDING_BASE_URL: a model embeds without a chat LLM (and beside one, on its own server)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from knowledge.extraction import FastExtractor
from knowledge.indexing import sync_chunks, sync_evidence
from knowledge.lexical import analyze
from knowledge.platform import open_platform
from knowledge.sample import load_sample
from knowledge.settings import Settings
from knowledge.stores.base import EVIDENCE
from tests.conftest import make_room
from tests.llm_server import FakeOpenAI

# A dimension no other test asks for, so the shared embedding cache cannot answer for the server.
DIM = 40


@pytest.fixture(scope="module")
def embed_server() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


def _settings(settings: Settings, **overrides: str | None) -> Settings:
    return Settings.model_validate(
        {
            **settings.model_dump(),
            "openai_api_key": None,
            "llm_embedding_model": "text-embedding-3-small",
            "llm_embedding_dim": str(DIM),
            **overrides,
        }
    )


async def test_embeddings_only_platform_embeds_through_the_server(
    settings: Settings, embed_server: FakeOpenAI
) -> None:
    only = _settings(settings, embedding_base_url=embed_server.base_url)
    assert not only.uses_llm and only.uses_embedding_model
    marker = uuid.uuid4().hex[:8]  # texts never embedded before: no cache hits
    lines = [(s.speaker, f"{s.text} ({marker})") for s in load_sample()[:30]]
    async with open_platform(only) as platform:
        assert platform.llm is None
        assert platform.embedding_llm is not None
        assert platform.embedder.semantic
        assert platform.embedder.dim == DIM
        assert platform.embedder.name == f"openai:text-embedding-3-small:{DIM}"
        # everything but the embedder stays offline
        assert isinstance(platform.extractor, FastExtractor)
        room_id = await make_room(platform, lines, "embeddings only")
        embed_server.reset()
        synced = await sync_chunks(platform, room_id)
        assert synced.added > 0
        assert synced.vectors.written == synced.total
        assert embed_server.calls["embeddings"] >= 1
        assert embed_server.calls["chat"] == 0
        assert platform.embedding_llm.usage.by_kind["embeddings"] >= 1
        vector = (await platform.embedder.embed(["Menenius speaks to the citizens"]))[0]
        assert len(vector) == DIM
    # closed with the platform
    assert platform.embedding_llm._http.is_closed


async def test_evidence_has_dense_vectors_only_with_a_model(
    settings: Settings, embed_server: FakeOpenAI
) -> None:
    """With a model every message gets a dense vector; offline (the hashing embedder, whose
    vectors nothing searches) the points are lexical-only, and still found by BM25."""
    marker = uuid.uuid4().hex[:8]
    lines = [(s.speaker, f"{s.text} ({marker})") for s in load_sample()[:12]]
    for overrides, dense in (({"embedding_base_url": embed_server.base_url}, True), ({}, False)):
        async with open_platform(_settings(settings, **overrides)) as platform:
            assert platform.embedder.semantic is dense
            room_id = await make_room(platform, lines, f"evidence dense={dense}")
            synced = await sync_evidence(platform, room_id)
            assert synced.vectors.written == len(lines)
            question = (await platform.embedder.embed([lines[3][1]]))[0]
            hits = await platform.vectors.search_dense(EVIDENCE, room_id, question, 20)
            assert len(hits) == (len(lines) if dense else 0), dense
            found = await platform.vectors.search_lexical(
                EVIDENCE, room_id, analyze(lines[3][1]), 3
            )
            assert found[0].text == lines[3][1]
            # Nothing changed: nothing rewritten (the probe agrees with the points as written).
            assert (await sync_evidence(platform, room_id)).mode == "unchanged"


async def test_with_a_chat_llm_embeddings_go_to_the_embedding_server(
    settings: Settings, embed_server: FakeOpenAI
) -> None:
    chat_server = FakeOpenAI().start()
    try:
        both = _settings(
            settings,
            openai_api_key="chat-key",
            llm_base_url=chat_server.base_url,
            embedding_base_url=embed_server.base_url,
            embedding_api_key="embed-key",
        )
        async with open_platform(both) as platform:
            assert platform.llm is not None and platform.embedding_llm is not None
            assert platform.embedder.semantic
            embed_server.reset()
            texts = [f"text {uuid.uuid4().hex}" for _ in range(3)]
            vectors = await platform.embedder.embed(texts)
            assert len(vectors) == 3 and all(len(v) == DIM for v in vectors)
            assert embed_server.calls["embeddings"] == 1
            assert chat_server.calls["embeddings"] == 0
            # one usage account: a run's LLM metadata still counts the embedding calls
            assert platform.llm.usage.by_kind["embeddings"] == 1
        assert platform.llm._http.is_closed and platform.embedding_llm._http.is_closed
    finally:
        chat_server.stop()
