"""Graph-store and vector-store protocols and their implementations."""

from knowledge.stores.base import GraphStore, VectorHit, VectorRecord, VectorStore

__all__ = ["GraphStore", "VectorHit", "VectorRecord", "VectorStore"]
