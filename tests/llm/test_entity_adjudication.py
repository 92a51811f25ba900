"""Entity resolution on the model path: near-identical name embeddings merge; borderline ones
are put to the LLM (cached like every call), whose verdict decides.

The embedder is a fixed table of name vectors (the cosines are the test's input); the LLM is
the local OpenAI-compatible server, which answers "same" when both names begin with one word.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import pytest

from knowledge.graph import Entity, RoomGraph
from knowledge.indexing.graph import _model_merges
from knowledge.platform import open_platform
from knowledge.resolution import resolve
from knowledge.settings import Settings
from pipelines.resources import KnowledgeResource
from tests.llm_server import FakeOpenAI


def _unit(angle: float) -> list[float]:
    return [math.cos(angle), math.sin(angle), 0.0]


# cos(0.40) = 0.921 (merge directly), cos(0.50) = 0.878 (ask the LLM), cos(1.2) = 0.36 (apart)
VECTORS = {
    "Acme Corporation": _unit(0.0),
    "Acme Corp": _unit(0.5),  # borderline, same first word: the LLM says same
    "Apex Logistics": _unit(-0.5),  # borderline to Acme Corporation, the LLM says no
    "Northwind": _unit(1.2 + 0.4),
    "Northwind Traders": _unit(1.2),  # containment would catch it; cosine 0.921 too
    "Globex": _unit(2.6),
}


class TableEmbedder:
    """A real-model stand-in for the name embeddings only (not a store)."""

    name = "table-3"
    dim = 3
    semantic = True

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [VECTORS.get(t, [0.0, 0.0, 1.0]) for t in texts]


def _graph() -> RoomGraph:
    mentions = {"Acme Corporation": 5, "Acme Corp": 2, "Apex Logistics": 1, "Globex": 3}
    mentions |= {"Northwind": 1, "Northwind Traders": 4}
    return RoomGraph(
        entities=[
            Entity(
                name=name.lower(),
                display_name=name,
                type="ORGANIZATION",
                description=f"{name} is mentioned.",
                source_chunk_ids=[f"c-{i}"],
                mentions=count,
            )
            for i, (name, count) in enumerate(sorted(mentions.items()))
        ],
        relationships=[],
    )


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def model_settings(settings: Settings, fake: FakeOpenAI) -> Settings:
    return KnowledgeResource(
        overrides={"openai_api_key": "test-key", "llm_base_url": fake.base_url}
    ).settings()


async def test_borderline_names_are_adjudicated_by_the_llm_and_cached(
    model_settings: Settings, fake: FakeOpenAI
) -> None:
    fake.reset()
    async with open_platform(model_settings) as platform:
        platform.embedder = TableEmbedder()
        decided = await _model_merges(platform, _graph())
        asked = fake.calls["chat"]
        # Two borderline pairs: Acme Corp / Acme Corporation (same), Apex / Acme (not).
        assert asked == 2, fake.calls
        assert decided["acme corp"] == ("acme corporation", "llm", pytest.approx(0.8776, 1e-3))
        assert "apex logistics" not in decided
        # At or above 0.92 the embedding alone merges (the less mentioned name into the more).
        assert decided["northwind"][:2] == ("northwind traders", "embedding")
        assert "globex" not in decided

        # Cached: the same question is not asked twice.
        await _model_merges(platform, _graph())
        assert fake.calls["chat"] == asked

        merged, records = resolve(_graph(), decided)
        names = {e.name for e in merged.entities}
        assert "acme corp" not in names and "acme corporation" in names
        assert {"apex logistics", "globex"} <= names
        by_alias = {r.alias: r for r in records}
        assert by_alias["acme corp"].method == "llm"
        assert by_alias["acme corp"].source_chunk_ids == ("c-0",)
        acme = next(e for e in merged.entities if e.name == "acme corporation")
        assert acme.mentions == 7  # 5 + 2: the alias's mentions moved with it
