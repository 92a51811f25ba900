"""One provider for any OpenAI-compatible endpoint (OpenAI, Azure, Ollama, vLLM, …).

- Pydantic outputs through ``instructor`` in JSON-schema mode; a server that rejects
  ``response_format: json_schema`` is switched to plain JSON mode once, for good.
- A persistent cache (``LLMCache``): the same (model, messages, schema, parameters) is asked
  once, ever.
- One semaphore bounds concurrent calls across a run.
- 429 / 5xx / timeouts / connection errors are retried with exponential backoff and jitter,
  honouring ``Retry-After``; invalid outputs are re-asked ``reasks`` times by instructor.
- Every HTTP call is counted with its token usage (``Usage``), for Dagster metadata and benches.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import instructor
import openai
from pydantic import BaseModel

from knowledge.llm.cache import LLMCache, cache_key

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")

# USD per 1M tokens (input, output); unknown models are reported at 0.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "text-embedding-3-small": (0.02, 0.0),
    "text-embedding-3-large": (0.13, 0.0),
}
_MAX_BACKOFF_SECONDS = 30.0


class LLMError(Exception):
    """An LLM call failed for good (after retries and re-asks)."""


@dataclass
class Usage:
    calls: int = 0
    failed_calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    by_kind: dict[str, int] = field(default_factory=dict)

    def snapshot(self) -> Usage:
        return Usage(
            self.calls,
            self.failed_calls,
            self.cache_hits,
            self.prompt_tokens,
            self.completion_tokens,
            self.cost_usd,
            dict(self.by_kind),
        )

    def since(self, before: Usage) -> dict[str, Any]:
        return {
            "llm_calls": self.calls - before.calls,
            "llm_failed_calls": self.failed_calls - before.failed_calls,
            "llm_cache_hits": self.cache_hits - before.cache_hits,
            "llm_prompt_tokens": self.prompt_tokens - before.prompt_tokens,
            "llm_completion_tokens": self.completion_tokens - before.completion_tokens,
            "llm_cost_usd": round(self.cost_usd - before.cost_usd, 6),
        }


def _retry_after(error: BaseException) -> float | None:
    response = getattr(error, "response", None)
    if response is None:
        return None
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _retryable(error: BaseException) -> bool:
    if isinstance(
        error, openai.APITimeoutError | openai.APIConnectionError | openai.RateLimitError
    ):
        return True
    return isinstance(error, openai.APIStatusError) and error.status_code >= 500


def _api_error(error: BaseException) -> BaseException | None:
    """The OpenAI API error behind an instructor wrapper, if any."""
    seen = 0
    current: BaseException | None = error
    while current is not None and seen < 10:
        if isinstance(current, openai.APIError):
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    return None


class LLMProvider:
    def __init__(
        self,
        api_key: str,
        base_url: str | None,
        chat_model: str,
        embedding_model: str,
        embedding_dim: int,
        cache: LLMCache | None,
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        reasks: int = 2,
    ) -> None:
        self.chat_model = chat_model
        self.embedding_model = embedding_model
        self.embedding_dim = embedding_dim
        self.cache = cache
        self.usage = Usage()
        self.max_retries = max_retries
        self.backoff = backoff
        self.reasks = reasks
        self._semaphore = asyncio.Semaphore(concurrency)
        self._http = httpx.AsyncClient(
            timeout=timeout,
            event_hooks={"response": [self._count_response]},
            limits=httpx.Limits(max_connections=concurrency * 2),
        )
        self.client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=0,  # retries are ours: they honour Retry-After and are counted
            http_client=self._http,
        )
        self.mode = instructor.Mode.JSON_SCHEMA
        self._instructor = instructor.from_openai(self.client, mode=self.mode)

    async def aclose(self) -> None:
        await self.client.close()
        await self._http.aclose()

    async def _count_response(self, response: httpx.Response) -> None:
        kind = "embeddings" if response.request.url.path.endswith("/embeddings") else "chat"
        self.usage.calls += 1
        self.usage.by_kind[kind] = self.usage.by_kind.get(kind, 0) + 1
        if response.status_code >= 400:
            self.usage.failed_calls += 1
            return
        try:
            await response.aread()
            usage = json.loads(response.content).get("usage") or {}
        except (ValueError, httpx.HTTPError, AttributeError):
            return
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        self.usage.prompt_tokens += prompt
        self.usage.completion_tokens += completion
        model = self.embedding_model if kind == "embeddings" else self.chat_model
        price_in, price_out = PRICES.get(model, (0.0, 0.0))
        self.usage.cost_usd += (prompt * price_in + completion * price_out) / 1_000_000

    async def _with_retries(self, call: Callable[[], Awaitable[R]]) -> R:
        attempt = 0
        while True:
            try:
                async with self._semaphore:
                    return await call()
            except Exception as error:  # classified below; non-retryable errors re-raise
                api_error = _api_error(error)
                if api_error is None or not _retryable(api_error) or attempt >= self.max_retries:
                    raise
                delay = _retry_after(api_error)
                if delay is None:
                    delay = min(_MAX_BACKOFF_SECONDS, self.backoff * 2**attempt)
                    delay += random.uniform(0, self.backoff)
                log.warning(
                    "LLM call failed (%s), retry %d in %.2fs",
                    type(api_error).__name__,
                    attempt + 1,
                    delay,
                )
                attempt += 1
                await asyncio.sleep(delay)

    async def structured(
        self,
        messages: Sequence[dict[str, str]],
        response_model: type[T],
        *,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        kind: str = "chat",
    ) -> T:
        """Ask for a ``response_model`` instance; cached, limited, retried, re-asked."""
        params: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens}
        key = cache_key(
            kind, self.chat_model, list(messages), response_model.model_json_schema(), params
        )
        if self.cache is not None:
            cached = await self.cache.get(key)
            if cached is not None:
                self.usage.cache_hits += 1
                return response_model.model_validate(cached)
        extra = {k: v for k, v in params.items() if v is not None}

        async def call() -> T:
            try:
                result = await self._instructor.chat.completions.create(
                    model=self.chat_model,
                    messages=list(messages),  # type: ignore[arg-type]
                    response_model=response_model,
                    max_retries=self.reasks,  # re-asks after the first answer
                    **extra,
                )
            except Exception as error:
                api_error = _api_error(error)
                if (
                    isinstance(api_error, openai.BadRequestError)
                    and self.mode == instructor.Mode.JSON_SCHEMA
                    and "response_format" in str(api_error)
                ):
                    # The server has no JSON-schema mode: plain JSON mode from now on.
                    log.warning("endpoint rejects json_schema outputs; using JSON mode")
                    self.mode = instructor.Mode.JSON
                    self._instructor = instructor.from_openai(self.client, mode=self.mode)
                    return await call()
                raise
            return result  # type: ignore[no-any-return]

        try:
            result = await self._with_retries(call)
        except Exception as error:
            raise LLMError(f"{kind} call failed: {_describe(error)}") from error
        if self.cache is not None:
            await self.cache.put(key, self.chat_model, kind, result.model_dump(mode="json"))
        return result

    async def stream_text(
        self, messages: Sequence[dict[str, str]], *, temperature: float = 0.0
    ) -> AsyncIterator[str]:
        """A plain-text answer as it is generated (not cached: a stream is read once). Errors
        before the first piece are retried like any call; after it they raise ``LLMError``."""

        async def call() -> Any:
            return await self.client.chat.completions.create(
                model=self.chat_model,
                messages=list(messages),  # type: ignore[arg-type]
                temperature=temperature,
                stream=True,
            )

        try:
            stream = await self._with_retries(call)
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
        except Exception as error:
            raise LLMError(f"streamed answer failed: {_describe(error)}") from error

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embeddings of one batch (callers batch by token budget); cached per text."""
        params: dict[str, Any] = {}
        if self.embedding_model.startswith("text-embedding-3"):
            params["dimensions"] = self.embedding_dim
        keys = [cache_key("embedding", self.embedding_model, t, None, params) for t in texts]
        vectors: list[list[float] | None] = [None] * len(texts)
        if self.cache is not None:
            for i, key in enumerate(keys):
                cached = await self.cache.get(key)
                if cached is not None:
                    vectors[i] = cached
                    self.usage.cache_hits += 1
        missing = [i for i, v in enumerate(vectors) if v is None]
        if missing:

            async def call() -> Any:
                return await self.client.embeddings.create(
                    model=self.embedding_model, input=[texts[i] for i in missing], **params
                )

            try:
                response = await self._with_retries(call)
            except Exception as error:
                raise LLMError(f"embedding call failed: {_describe(error)}") from error
            for i, item in zip(missing, response.data, strict=True):
                vector = list(item.embedding)
                if len(vector) != self.embedding_dim:
                    raise LLMError(
                        f"{self.embedding_model} returned {len(vector)} dimensions; "
                        f"LLM_EMBEDDING_DIM is {self.embedding_dim}"
                    )
                vectors[i] = vector
                if self.cache is not None:
                    await self.cache.put(keys[i], self.embedding_model, "embedding", vector)
        return [v for v in vectors if v is not None]


def _describe(error: BaseException) -> str:
    api_error = _api_error(error)
    if api_error is not None:
        return f"{type(api_error).__name__}: {str(api_error)[:300]}"
    attempts = getattr(error, "n_attempts", None)
    if attempts is not None:
        return f"no valid output after {attempts} attempts"
    return f"{type(error).__name__}: {str(error)[:300]}"
