"""Entity resolution's containment rule against its definition, on random rooms of names.

``containment_aliases`` finds a name's containers through an index of every contiguous run of
words; the definition it must equal: the containers of a name are the compatible names having
all its words, in order, contiguous, and more words; it merges into the longest (ties by name)
when every container is a run of that one.
"""

from __future__ import annotations

import random

import pytest

from knowledge.graph import Entity
from knowledge.resolution import _compatible, _contains, containment_aliases

WORDS = "ann lee cruz taylor first senator second roman volscian camp".split()
TYPES = ("PERSON", "PERSON", "LOCATION", "ENTITY", "CONCEPT", "ORGANIZATION")


def by_definition(entities: list[Entity]) -> dict[str, tuple[str, float]]:
    out: dict[str, tuple[str, float]] = {}
    for e in entities:
        words = e.name.split()
        if len(e.name) < 3:
            continue
        containers = sorted(
            (
                c
                for c in entities
                if len(c.name.split()) > len(words)
                and _contains(c.name.split(), words)
                and _compatible(e, c)
            ),
            key=lambda c: (-len(c.name.split()), c.name),
        )
        if not containers:
            continue
        top = containers[0]
        if all(c is top or _contains(top.name.split(), c.name.split()) for c in containers):
            out[e.name] = (top.name, len(words) / len(top.name.split()))
    return out


@pytest.mark.parametrize("seed", range(8))
def test_containment_equals_its_definition(seed: int) -> None:
    rng = random.Random(seed)
    names: dict[str, Entity] = {}
    for _ in range(rng.randint(5, 60)):
        # Repeated words too ("lee ann lee"): a run found twice in a name is one container.
        name = " ".join(rng.choices(WORDS[: rng.randint(3, len(WORDS))], k=rng.randint(1, 5)))
        names.setdefault(name, Entity(name, name.title(), rng.choice(TYPES)))
    entities = sorted(names.values(), key=lambda e: e.name)
    assert containment_aliases(entities) == by_definition(entities)
