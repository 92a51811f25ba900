"""Evidence retrieval: a pipeline of small named stages, used by both answer routes, the agents
and the API (see :mod:`knowledge.retrieval.pipeline`)."""

from knowledge.retrieval.pipeline import (
    SIGNALS,
    Evidence,
    Retrieval,
    RetrievalOptions,
    StageReport,
    retrieve,
)

__all__ = ["SIGNALS", "Evidence", "Retrieval", "RetrievalOptions", "StageReport", "retrieve"]
