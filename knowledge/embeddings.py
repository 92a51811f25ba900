"""Embedders. Offline default: signed feature hashing of words and word bigrams.

The hashing embedder needs no model: it gives lexical-semantic vectors (shared words and
phrases → high cosine) good enough for entity and report retrieval in the offline mode, and it
lets the vector stores run their real dense-vector code paths. A model-backed embedder (the
OpenAI-compatible ``/embeddings`` endpoint) plugs in behind the same protocol.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

from knowledge.extraction.stopwords import STOPWORDS
from knowledge.llm.provider import LLMProvider
from knowledge.tokens import count_tokens

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


class Embedder(Protocol):
    name: str
    dim: int
    #: A real model (dense retrieval is worth running), not the offline feature hashing.
    semantic: bool

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


def lexical_terms(text: str) -> list[str]:
    """Lower-cased content words of a text (shared by the hashing embedder and sparse vectors)."""
    return [w for w in (m.group(0).lower() for m in _WORD.finditer(text)) if w not in STOPWORDS]


class HashingEmbedder:
    semantic = False

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self.name = f"hashing-{dim}"

    def _index(self, feature: str) -> tuple[int, float]:
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        return value % self.dim, (1.0 if (value >> 63) & 1 else -1.0)

    def embed_one(self, text: str) -> list[float]:
        terms = lexical_terms(text)
        features: Counter[str] = Counter(terms)
        features.update(f"{a} {b}" for a, b in itertools.pairwise(terms))
        vector = [0.0] * self.dim
        for feature, count in features.items():
            index, sign = self._index(feature)
            vector[index] += sign * (1.0 + math.log(count))
        norm = math.sqrt(sum(v * v for v in vector))
        if norm == 0:
            # An empty text still needs a valid unit vector for cosine distance.
            vector[0] = 1.0
            return vector
        return [v / norm for v in vector]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.embed_one(t) for t in texts]


class OpenAIEmbedder:
    """The ``/embeddings`` endpoint of the LLM provider, batched by a token budget."""

    semantic = True

    def __init__(self, provider: LLMProvider, batch_tokens: int) -> None:
        self.provider = provider
        self.batch_tokens = batch_tokens
        self.dim = provider.embedding_dim
        self.name = f"openai:{provider.embedding_model}:{self.dim}"

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        batches: list[list[str]] = [[]]
        budget = 0
        for text in texts:
            tokens = count_tokens(text)
            if batches[-1] and budget + tokens > self.batch_tokens:
                batches.append([])
                budget = 0
            batches[-1].append(text)
            budget += tokens
        results = await asyncio.gather(*(self.provider.embed(b) for b in batches if b))
        return [vector for batch in results for vector in batch]
