"""Rerank stage: one interface, three implementations.

- :class:`OfflineReranker` (default): term coverage weighted by the room's IDF on the message
  and on the message with its neighbouring turns, phrase (adjacent term pair) matches, overlap
  with the entities and speakers the question names, and the time window, blended with the
  fused prior;
- :class:`HttpReranker`: a cross-encoder behind the ``/rerank`` HTTP API that TEI, vLLM, Jina
  and Cohere serve (``RERANK_URL``, ``RERANK_MODEL``);
- :class:`LLMReranker`: a listwise rerank by the chat model (cached like every LLM call).

Each returns one score per item, higher is better; the pipeline sorts by it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Protocol

import httpx

from knowledge.lexical import analyzed, bm25_idf, text_terms
from knowledge.llm import prompts
from knowledge.llm.provider import LLMError, LLMProvider
from knowledge.llm.schemas import RerankOutput
from knowledge.retrieval.fusion import Fused
from knowledge.retrieval.query import FormMatcher, QueryPlan
from knowledge.retrieval.units import Unit
from knowledge.text import excerpt


@dataclass
class RerankItem:
    fused: Fused
    unit: Unit
    #: Texts of the turns just before and after (empty when none).
    neighbours: tuple[str, ...] = ()


class Reranker(Protocol):
    name: str

    async def scores(self, plan: QueryPlan, items: Sequence[RerankItem]) -> list[float]: ...


class RerankError(Exception):
    pass


@dataclass(frozen=True)
class OfflineWeights:
    prior: float = 0.30
    coverage: float = 0.30
    context_coverage: float = 0.10
    phrase: float = 0.10
    entities: float = 0.10
    speaker: float = 0.10
    time: float = 0.15
    direction: float = 0.15


class OfflineReranker:
    name = "offline"

    def __init__(self, idf: dict[str, float], weights: OfflineWeights | None = None) -> None:
        #: query term -> IDF in the room (terms absent from the room are dropped).
        self.idf = idf
        self.weights = weights or OfflineWeights()

    @staticmethod
    def idf_from_stats(n_docs: int, frequencies: dict[str, int]) -> dict[str, float]:
        return {t: bm25_idf(n_docs, df) for t, df in frequencies.items() if df > 0}

    async def scores(self, plan: QueryPlan, items: Sequence[RerankItem]) -> list[float]:
        w = self.weights
        query_terms = [t for t in dict.fromkeys(plan.terms) if t in self.idf]
        total = sum(self.idf[t] for t in query_terms) or 1.0
        pairs = {(a, b) for a, b in pairwise(plan.terms) if a != b}
        forms = {name: FormMatcher(fs) for name, fs in plan.entity_forms.items()}
        clauses = [
            (terms, sum(self.idf[t] for t in terms) or 1.0)
            for c in plan.clauses
            if (terms := [t for t in dict.fromkeys(c) if t in self.idf])
        ]
        speakers = {s.lower() for s in plan.speakers}
        best_prior = max((i.fused.score for i in items), default=1.0) or 1.0
        times = sorted(i.unit.time.timestamp() for i in items if i.unit.time is not None)
        out = []
        for item in items:
            words = analyzed(item.unit.text)
            present = text_terms(item.unit.text)
            around = present.union(*(text_terms(text) for text in item.neighbours))
            coverage = self._coverage(query_terms, total, clauses, present)
            context = self._coverage(query_terms, total, clauses, around)
            phrase = sum(1 for p in pairwise(words) if p in pairs) / len(pairs) if pairs else 0.0
            phrase = min(1.0, phrase)
            speaker = (item.unit.speaker or "").lower()
            lowered = item.unit.text.lower()
            entity_hits = sum(
                1
                for name, matcher in forms.items()
                if name == speaker or matcher.names(item.unit.text, lowered)
            )
            entities = entity_hits / len(forms) if forms else 0.0
            said_by = 1.0 if speaker in speakers else 0.0
            in_window = 0.0
            position = 0.5
            if item.unit.time is not None:
                ts = item.unit.time.timestamp()
                if plan.time.has_window:
                    assert plan.time.since is not None and plan.time.until is not None
                    in_window = float(
                        plan.time.since.timestamp() <= ts < plan.time.until.timestamp()
                    )
                if len(times) > 1:
                    position = _rank_position(times, ts)
            score = (
                w.prior * item.fused.score / best_prior
                + w.coverage * coverage
                + w.context_coverage * context
                + w.phrase * phrase
                + w.entities * entities
                + w.speaker * said_by * (1.0 if plan.speech else 0.5)
                + w.time * in_window
                + w.direction * plan.time.direction * (position - 0.5) * 2
            )
            out.append(score)
        return out

    def _coverage(
        self,
        query_terms: list[str],
        total: float,
        clauses: list[tuple[list[str], float]],
        present: frozenset[str],
    ) -> float:
        """The IDF-weighted share of the question's terms ``present`` has; for a question of
        several clauses, half of it is the share of its best-covered clause (a message that
        answers one hop fully is as good evidence as one that touches every hop a little)."""
        whole = sum(self.idf[t] for t in query_terms if t in present) / total
        if not clauses:
            return whole
        best = max(sum(self.idf[t] for t in terms if t in present) / n for terms, n in clauses)
        return 0.5 * whole + 0.5 * best


def _rank_position(sorted_times: list[float], ts: float) -> float:
    """0 for the oldest candidate, 1 for the newest."""
    return bisect.bisect_left(sorted_times, ts) / (len(sorted_times) - 1)


class HttpReranker:
    """A cross-encoder over ``POST {url}/rerank``; accepts Jina/Cohere/vLLM replies
    (``{"results": [{"index", "relevance_score"}]}``) and TEI replies (``[{"index", "score"}]``)."""

    name = "http"

    def __init__(self, url: str, model: str | None, api_key: str | None, timeout: float) -> None:
        self.url = url.rstrip("/")
        if not self.url.endswith("/rerank"):
            self.url += "/rerank"
        self.model = model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout

    async def scores(self, plan: QueryPlan, items: Sequence[RerankItem]) -> list[float]:
        if not items:
            return []
        documents = [_document(i) for i in items]
        body: dict[str, object] = {
            "query": plan.question,
            "documents": documents,
            "texts": documents,
            "top_n": len(documents),
            "return_documents": False,
        }
        if self.model:
            body["model"] = self.model
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.post(self.url, json=body, headers=self.headers)
                response.raise_for_status()
                data = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise RerankError(f"rerank endpoint {self.url} failed: {error}") from error
        results = data.get("results", data) if isinstance(data, dict) else data
        scores = [-math.inf] * len(items)
        try:
            for result in results:
                value = result.get("relevance_score", result.get("score"))
                scores[int(result["index"])] = float(value)
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise RerankError(f"rerank endpoint {self.url} gave an unexpected reply") from error
        return scores


class LLMReranker:
    """Listwise: the chat model orders the candidates; unranked ones keep their prior order."""

    name = "llm"

    def __init__(self, llm: LLMProvider, max_items: int = 20) -> None:
        self.llm = llm
        self.max_items = max_items

    async def scores(self, plan: QueryPlan, items: Sequence[RerankItem]) -> list[float]:
        head = list(items[: self.max_items])
        try:
            output = await self.llm.structured(
                prompts.rerank(plan.question, [_document(i) for i in head]),
                RerankOutput,
                kind="rerank",
            )
        except LLMError as error:
            raise RerankError(str(error)) from error
        n = len(items)
        scores = [float(-i) for i in range(n)]  # prior order below every ranked item
        for position, index in enumerate(dict.fromkeys(output.ranking)):
            if 0 <= index < len(head):
                scores[index] = float(2 * n - position)
        return scores


def _document(item: RerankItem) -> str:
    unit = item.unit
    when = f" ({unit.time:%Y-%m-%d})" if unit.time else ""
    who = unit.speaker or "artifact"
    return f"{who}{when}: {excerpt(unit.text, 1200)}"
