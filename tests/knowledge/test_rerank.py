"""The rerank stage's remote rerankers against real local HTTP servers (tests/llm_server.py):

- ``HttpReranker``: a cross-encoder behind ``POST /rerank`` (TEI / vLLM / Jina / Cohere), both
  reply shapes; what the request carries; a failing or slow endpoint keeps the fused order and
  answers are still produced; ``rerank="http"`` without ``RERANK_URL`` is a clear error;
- ``LLMReranker``: the chat model's listwise ranking is applied, cached, and a failure keeps
  the fused order.

The fake cross-encoder and the fake LLM both rank the passages in the reverse of the order they
were sent, so "the reranker's order was applied" is checkable exactly: the evidence comes out in
the reverse of the fused order (the rooms are small enough for the whole pool to be reranked).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from knowledge.errors import InvalidInputError
from knowledge.indexing import index_room
from knowledge.platform import Platform, open_platform
from knowledge.retrieval import Retrieval, RetrievalOptions, retrieve
from knowledge.sample import load_sample
from knowledge.search import answer_question
from knowledge.settings import Settings
from pipelines.resources import KnowledgeResource
from tests.conftest import make_room
from tests.llm_server import FakeOpenAI

#: 16 speeches: every one is a candidate (the pool is the whole room, under the LLM's 20).
ROOM = [(s.speaker, s.text) for s in load_sample()[:16]]
QUESTION = "What do the citizens say about Caius Marcius and the corn?"
MODEL = "bge-reranker-v2-m3"
KEY = "rk-test-secret"
ALL = 50  # top_k: the whole pool


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def server(fake: FakeOpenAI) -> FakeOpenAI:
    fake.reset()
    return fake


@pytest.fixture(scope="module")
async def room(settings: Settings) -> str:
    """A room indexed on the offline platform (hashing embedder, fast extractor)."""
    async with open_platform(settings) as platform:
        room_id = await make_room(platform, ROOM, "rerank room")
        await index_room(platform, room_id)
        return room_id


def rerank_settings(settings: Settings, fake: FakeOpenAI, timeout: float = 10.0) -> Settings:
    return settings.model_copy(
        update={
            # The base URL: the client appends /rerank.
            "rerank_url": fake.base_url,
            "rerank_model": MODEL,
            "rerank_api_key": KEY,
            "rerank_timeout_seconds": timeout,
        }
    )


def order(retrieval: Retrieval) -> list[str]:
    return [e.unit_id for e in retrieval.evidence]


def rerank_note(stages: list) -> str:  # type: ignore[type-arg]
    (stage,) = [s for s in stages if s.stage == "rerank"]
    return str(stage.note)


def flat(text: str) -> str:
    return " ".join(text.split())


async def fused_order(platform: Platform, room_id: str, question: str) -> Retrieval:
    fused = await retrieve(
        platform, room_id, question, top_k=ALL, options=RetrievalOptions(rerank="none")
    )
    assert len(fused.evidence) >= 3
    return fused


# --- HttpReranker ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["results", "tei"])
async def test_http_reranker_reorders_the_evidence(
    server: FakeOpenAI, settings: Settings, room: str, shape: str
) -> None:
    server.rerank_shape = shape
    async with open_platform(rerank_settings(settings, server)) as platform:
        fused = await fused_order(platform, room, QUESTION)
        assert server.rerank_requests == []
        reranked = await retrieve(
            platform, room, QUESTION, top_k=ALL, options=RetrievalOptions(rerank="http")
        )
        # With RERANK_URL set, the default ("auto") is the HTTP reranker too.
        auto = await retrieve(platform, room, QUESTION, top_k=ALL)

    assert order(reranked) == order(fused)[::-1]
    assert reranked.reranker == "http" and rerank_note(reranked.stages) == "http"
    assert order(auto) == order(reranked) and auto.reranker == "http"

    request = server.rerank_requests[0]
    assert request["authorization"] == f"Bearer {KEY}"
    body = request["body"]
    assert body["query"] == QUESTION
    assert body["model"] == MODEL
    # The documents are the pool in fused order, each with its speaker and text.
    assert len(body["documents"]) == len(fused.evidence)
    for document, evidence in zip(body["documents"], fused.evidence, strict=True):
        assert document.startswith(f"{evidence.speaker} (")
        assert flat(evidence.text) in document


@pytest.mark.parametrize("fault", ["status 500", "timeout"])
async def test_a_failing_rerank_endpoint_keeps_the_fused_order(
    server: FakeOpenAI, settings: Settings, room: str, fault: str
) -> None:
    if fault == "status 500":
        server.rerank_status = 500
    else:
        server.rerank_delay = 2.0
    async with open_platform(rerank_settings(settings, server, timeout=0.3)) as platform:
        fused = await fused_order(platform, room, QUESTION)
        kept = await retrieve(
            platform, room, QUESTION, top_k=ALL, options=RetrievalOptions(rerank="http")
        )
        assert len(server.rerank_requests) == 1  # it was asked, and failed
        assert order(kept) == order(fused)
        assert kept.reranker == "http (failed: fused order kept)"
        assert rerank_note(kept.stages) == kept.reranker

        # An answer (default options: auto → http) is still produced, from the fused order.
        answer = await answer_question(platform, room, QUESTION)
    assert len(server.rerank_requests) == 2
    assert "failed" in rerank_note(answer.stages)
    assert answer.answer and answer.citations
    assert [e.unit_id for e in answer.evidence] == order(fused)[: len(answer.evidence)]


async def test_rerank_http_without_rerank_url_is_a_clear_error(
    platform: Platform, room: str
) -> None:
    assert platform.settings.rerank_url is None
    for question in (QUESTION, "xyzzy plugh"):  # the second finds nothing: still an error
        with pytest.raises(InvalidInputError, match="RERANK_URL"):
            await retrieve(platform, room, question, options=RetrievalOptions(rerank="http"))
    with pytest.raises(InvalidInputError, match="needs an LLM"):
        await retrieve(platform, room, QUESTION, options=RetrievalOptions(rerank="llm"))
    with pytest.raises(InvalidInputError, match="unknown reranker 'htpp'"):
        await retrieve(platform, room, QUESTION, options=RetrievalOptions(rerank="htpp"))
    # Without RERANK_URL the default is the offline reranker.
    assert (await retrieve(platform, room, QUESTION)).reranker == "offline"


# --- LLMReranker -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llm_settings(settings: Settings, fake: FakeOpenAI) -> Settings:
    return KnowledgeResource(
        overrides={
            "openai_api_key": "test-key",
            "llm_base_url": fake.base_url,
            "llm_embedding_dim": "64",
            "llm_timeout_seconds": "5",
            "llm_backoff_seconds": "0.01",
        }
    ).settings()


@pytest.fixture(scope="module")
async def llm_room(llm_settings: Settings) -> str:
    """A room indexed through the LLM (its embeddings are the LLM's)."""
    async with open_platform(llm_settings) as platform:
        room_id = await make_room(platform, ROOM, "llm rerank room")
        await index_room(platform, room_id)
        return room_id


async def test_llm_reranker_ranking_is_applied_and_cached(
    server: FakeOpenAI, llm_settings: Settings, llm_room: str
) -> None:
    question = f"{QUESTION} ({uuid.uuid4().hex[:8]})"  # never asked before: not in the cache
    async with open_platform(llm_settings) as platform:
        assert platform.llm is not None
        server.reset()
        fused = await fused_order(platform, llm_room, question)
        assert server.calls["chat"] == 0
        options = RetrievalOptions(rerank="llm")
        ranked = await retrieve(platform, llm_room, question, top_k=ALL, options=options)
        assert server.calls["chat"] == 1
        hits_before = platform.llm.usage.cache_hits
        again = await retrieve(platform, llm_room, question, top_k=ALL, options=options)
        assert server.calls["chat"] == 1, "the second rerank must come from the cache"
        assert platform.llm.usage.cache_hits > hits_before  # the rerank (and the query vector)

    # The LLM saw the pool in fused order and its (reversed) ranking is the evidence order.
    (passages,) = server.rerank_prompts
    assert len(passages) == len(fused.evidence) <= 20
    for passage, evidence in zip(passages, fused.evidence, strict=True):
        assert flat(evidence.text) in passage
    assert order(ranked) == order(fused)[::-1]
    assert ranked.reranker == "llm" and rerank_note(ranked.stages) == "llm"
    assert order(again) == order(ranked)


async def test_an_llm_rerank_failure_keeps_the_fused_order(
    server: FakeOpenAI, llm_settings: Settings, llm_room: str
) -> None:
    # Every answer to a prompt with this marker is malformed: re-asked, then given up.
    question = f"{QUESTION} FAULT-ALWAYS-BAD {uuid.uuid4().hex[:8]}"
    async with open_platform(llm_settings) as platform:
        server.reset()
        fused = await fused_order(platform, llm_room, question)
        kept = await retrieve(
            platform, llm_room, question, top_k=ALL, options=RetrievalOptions(rerank="llm")
        )
        calls = server.calls["chat"]
        assert calls == 1 + platform.settings.llm_reasks
        assert server.faults_served["FAULT-ALWAYS-BAD"] == calls
        assert order(kept) == order(fused)
        assert kept.reranker == "llm (failed: fused order kept)"
        assert rerank_note(kept.stages) == kept.reranker
        # A failure is not cached: the next question asks again.
        await retrieve(
            platform, llm_room, question, top_k=ALL, options=RetrievalOptions(rerank="llm")
        )
        assert server.calls["chat"] == 2 * calls
