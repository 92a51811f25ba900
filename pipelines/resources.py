"""Typed Dagster resources around the domain layer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from dagster import ConfigurableResource

from knowledge.platform import Platform, open_platform
from knowledge.settings import Settings, get_settings

T = TypeVar("T")


class KnowledgeResource(ConfigurableResource):
    """The stores, extractor and embedder of one room index.

    Unset fields come from the environment (``knowledge.settings.Settings``), so the same
    definitions run on the embedded defaults and on the production services.
    """

    data_dir: str | None = None
    database_url: str | None = None

    def settings(self) -> Settings:
        settings = get_settings()
        overrides: dict[str, object] = {}
        if self.data_dir:
            overrides["coagent_data_dir"] = Path(self.data_dir)
        if self.database_url:
            overrides["database_url"] = self.database_url
        return settings.model_copy(update=overrides) if overrides else settings

    def run(self, work: Callable[[Platform], Awaitable[T]]) -> T:
        """Run async domain work against a freshly opened platform (one event loop per step)."""

        async def main() -> T:
            async with open_platform(self.settings()) as platform:
                return await work(platform)

        return asyncio.run(main())
