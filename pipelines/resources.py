"""Typed Dagster resources around the domain layer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from dagster import ConfigurableResource
from pydantic import Field

from knowledge.platform import Platform, open_platform
from knowledge.settings import Settings, get_settings

T = TypeVar("T")


class KnowledgeResource(ConfigurableResource):
    """The stores, extractor and embedder of one room index.

    Unset fields come from the environment (``knowledge.settings.Settings``), so the same
    definitions run on the embedded defaults and on the production services.
    """

    #: Settings that differ from the environment, by field name (e.g. ``llm_base_url``).
    overrides: dict[str, str] = Field(default_factory=dict)

    def settings(self) -> Settings:
        settings = get_settings()
        if not self.overrides:
            return settings
        return Settings.model_validate({**settings.model_dump(), **self.overrides})

    def run(self, work: Callable[[Platform], Awaitable[T]]) -> tuple[T, dict[str, Any]]:
        """Run async domain work against a freshly opened platform (one event loop per step).

        Returns the work's result and the LLM usage it caused (empty in the offline mode).
        """

        async def main() -> tuple[T, dict[str, Any]]:
            async with open_platform(self.settings()) as platform:
                # The chat LLM, or an embeddings-only provider (EMBEDDING_BASE_URL).
                provider = platform.llm or platform.embedding_llm
                before = provider.usage.snapshot() if provider else None
                result = await work(platform)
                usage = provider.usage.since(before) if provider and before else {}
                return result, usage

        return asyncio.run(main())
