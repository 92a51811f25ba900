"""Entity and relationship extraction behind one interface."""

from knowledge.extraction.base import (
    ExtractedEntity,
    ExtractedRelationship,
    Extraction,
    Extractor,
)
from knowledge.extraction.fast import FastExtractor

__all__ = [
    "ExtractedEntity",
    "ExtractedRelationship",
    "Extraction",
    "Extractor",
    "FastExtractor",
]
