"""Weighted reciprocal-rank fusion of the generators' rankings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from knowledge.retrieval.candidates import CandidateList

#: RRF's rank offset: large enough that one list's top rank does not drown the others.
RRF_K = 60


@dataclass
class Fused:
    unit_id: str
    score: float
    #: signal -> 1-based rank in that generator's list.
    ranks: dict[str, int] = field(default_factory=dict)
    #: signal -> the generator's own score.
    raw: dict[str, float] = field(default_factory=dict)


def fuse(
    lists: Sequence[CandidateList], weights: Mapping[str, float], k: int = RRF_K
) -> list[Fused]:
    """score(u) = Σ_signal weight / (k + rank); ties broken by unit id (deterministic)."""
    fused: dict[str, Fused] = {}
    for found in lists:
        weight = weights.get(found.signal, 0.0)
        if weight <= 0:
            continue
        for rank, candidate in enumerate(found.candidates, start=1):
            entry = fused.setdefault(candidate.unit_id, Fused(candidate.unit_id, 0.0))
            if found.signal in entry.ranks:
                continue
            entry.score += weight / (k + rank)
            entry.ranks[found.signal] = rank
            entry.raw[found.signal] = candidate.score
    return sorted(fused.values(), key=lambda f: (-f.score, f.unit_id))
