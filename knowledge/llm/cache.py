"""Persistent LLM cache in PostgreSQL, keyed by a hash of everything that shapes the answer."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from dbschema.models import LLMCacheEntry


def cache_key(kind: str, model: str, payload: Any, schema: Any, params: dict[str, Any]) -> str:
    blob = json.dumps(
        {"kind": kind, "model": model, "payload": payload, "schema": schema, "params": params},
        sort_keys=True,
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class LLMCache:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def get(self, key: str) -> Any | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(LLMCacheEntry.response).where(LLMCacheEntry.key == key))
            ).first()
        return None if row is None else row[0]

    async def put(
        self,
        key: str,
        model: str,
        kind: str,
        response: Any,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(LLMCacheEntry)
                .values(
                    key=key,
                    model=model,
                    kind=kind,
                    response=response,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                )
                .on_conflict_do_nothing()
            )
