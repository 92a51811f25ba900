"""Entity and relationship extraction behind one interface."""

from knowledge.extraction.base import (
    ExtractedEntity,
    ExtractedRelationship,
    Extraction,
    ExtractionFailure,
    Extractor,
)
from knowledge.extraction.fast import FastExtractor

__all__ = [
    "ExtractedEntity",
    "ExtractedRelationship",
    "Extraction",
    "ExtractionFailure",
    "Extractor",
    "FastExtractor",
]
