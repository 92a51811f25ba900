"""LLM extraction: entities and relationships per chunk as Pydantic outputs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from knowledge.extraction.base import (
    ExtractedEntity,
    ExtractedRelationship,
    Extraction,
    ExtractionFailure,
)
from knowledge.graph import normalize_name
from knowledge.llm import prompts
from knowledge.llm.provider import LLMError, LLMProvider
from knowledge.llm.schemas import ExtractionOutput


class LLMExtractor:
    def __init__(
        self, provider: LLMProvider, entity_types: Sequence[str], gleanings: int = 0
    ) -> None:
        self.provider = provider
        self.entity_types = list(entity_types)
        self.gleanings = gleanings
        self.name = f"llm:{provider.chat_model}:{prompts.PROMPT_VERSION}:g{gleanings}"

    async def extract(self, texts: Sequence[str]) -> list[Extraction | ExtractionFailure]:
        return list(await asyncio.gather(*(self._extract_one(t) for t in texts)))

    async def _extract_one(self, text: str) -> Extraction | ExtractionFailure:
        try:
            output = await self.provider.structured(
                prompts.extraction(text, self.entity_types), ExtractionOutput, kind="extraction"
            )
            for _ in range(self.gleanings):
                more = await self.provider.structured(
                    prompts.gleaning(text, self.entity_types, [e.name for e in output.entities]),
                    ExtractionOutput,
                    kind="gleaning",
                )
                if not more.entities and not more.relationships:
                    break
                output = ExtractionOutput(
                    entities=output.entities + more.entities,
                    relationships=output.relationships + more.relationships,
                )
        except LLMError as error:
            return ExtractionFailure(error=str(error))
        return _to_extraction(output)


def _to_extraction(output: ExtractionOutput) -> Extraction:
    """Keep the output's entities; drop (and count) relationships to unknown entities."""
    entities: dict[str, ExtractedEntity] = {}
    for node in output.entities:
        key = normalize_name(node.name)
        if key and key not in entities:
            entities[key] = ExtractedEntity(
                name=node.name.strip(), type=node.type.strip().upper(), description=node.description
            )
    relationships = []
    dropped = 0
    for rel in output.relationships:
        if normalize_name(rel.source) in entities and normalize_name(rel.target) in entities:
            relationships.append(
                ExtractedRelationship(
                    source=rel.source,
                    target=rel.target,
                    description=rel.description,
                    weight=float(rel.strength),
                )
            )
        else:
            dropped += 1
    return Extraction(
        entities=list(entities.values()),
        relationships=relationships,
        dropped_relationships=dropped,
    )
