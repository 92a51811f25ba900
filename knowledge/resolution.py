"""Entity resolution within a room: aliases merged into one entity, with their provenance.

Three rules, in order, each merging a name into exactly one other entity of the same room:

0. **trim** — "Tell Valeria" (a capitalized verb at a line start) is "Valeria": boundary words
   the room also writes in lower case are no part of a name;
1. **containment** — a name whose words all occur, in order, in longer names ("cruz" in "taylor
   cruz", "marcius" in "caius marcius coriolanus") merges into the longest of them, when those
   longer names nest in one another (one person); two unrelated containers ("first senator",
   "second senator" for "senator") leave it alone;
2. **abbreviation** — an acronym ("TC", "PRD") that spells the initials of exactly one
   multi-word entity, or a short form of a person's first name ("Sam", "Mik", "Tay") that
   begins exactly one person's name;
3. **embedding** — with a real embedding model, names whose vectors are nearly identical
   (cosine ≥ 0.92) and share a type; on the LLM path a borderline pair (≥ 0.85) is adjudicated
   by the model (cached like every call).

The room's speakers take part as people even when no message names them in full, so "Cruz"
and "TC" resolve to the member "Taylor Cruz". Types must agree where both are specific (a PERSON never absorbs a LOCATION). The merge is
recomputed on every graph build from the current extractions, and each alias keeps the chunks
it came from: deleting the messages an alias was read in removes the alias and so the merge.
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field

from knowledge.graph import MAX_DESCRIPTIONS, Entity, Relationship, RoomGraph

_GENERIC = "ENTITY"
_EMBED_MERGE = 0.92
_EMBED_ASK = 0.85


@dataclass(frozen=True)
class AliasRecord:
    alias: str
    canonical: str
    method: str  # containment | abbreviation | embedding | llm
    score: float
    source_chunk_ids: tuple[str, ...] = field(default=())


def _compatible(a: Entity, b: Entity) -> bool:
    return a.type == b.type or _GENERIC in (a.type, b.type) or "CONCEPT" in (a.type, b.type)


def _contains(longer: list[str], shorter: list[str]) -> bool:
    """``shorter`` is a contiguous run of ``longer``'s words."""
    n = len(shorter)
    return any(longer[i : i + n] == shorter for i in range(len(longer) - n + 1))


def trimmed_aliases(entities: Sequence[Entity], ordinary: set[str]) -> dict[str, tuple[str, float]]:
    """ "tell valeria" → "valeria": a name whose first or last words the room also writes in
    lower case (verse and headings capitalize them) is that name without them, when the
    shorter name is an entity too."""
    names = {e.name for e in entities}
    out: dict[str, tuple[str, float]] = {}
    for e in entities:
        words = e.name.split()
        if len(words) < 2:
            continue
        start, end = 0, len(words)
        while start < end - 1 and words[start] in ordinary:
            start += 1
        while end - 1 > start and words[end - 1] in ordinary:
            end -= 1
        core = " ".join(words[start:end])
        if core != e.name and core in names:
            out[e.name] = (core, (end - start) / len(words))
    return out


def containment_aliases(entities: Sequence[Entity]) -> dict[str, tuple[str, float]]:
    """alias -> (canonical, score) by word containment."""
    by_words = {e.name: e.name.split() for e in entities}
    by_name = {e.name: e for e in entities}
    # Every proper contiguous run of a name's words -> the names it is a run of: a name's
    # containers are one lookup (a room of 100k messages has 12k names; meeting each name
    # with those sharing its words was most of a refresh's entity resolution).
    containing: dict[str, list[str]] = {}
    for name, words in by_words.items():
        k = len(words)
        for size in range(1, k):
            for i in range(k - size + 1):
                containing.setdefault(" ".join(words[i : i + size]), []).append(name)
    out: dict[str, tuple[str, float]] = {}
    for name, words in by_words.items():
        if len(name) < 3:
            continue
        containers = [
            c
            for c in dict.fromkeys(containing.get(" ".join(words), ()))
            if _compatible(by_name[name], by_name[c])
        ]
        if not containers:
            continue
        containers.sort(key=lambda c: (-len(by_words[c]), c))
        top = containers[0]
        # One referent only: every container must be part of the longest one.
        if all(c == top or _contains(by_words[top], by_words[c]) for c in containers):
            out[name] = (top, len(words) / len(by_words[top]))
    return out


def abbreviation_aliases(entities: Sequence[Entity]) -> dict[str, tuple[str, float]]:
    initials: dict[str, list[str]] = {}
    by_display = {e.name: e.display_name for e in entities}
    for e in entities:
        words = e.name.split()
        if len(words) >= 2:
            initials.setdefault("".join(w[0] for w in words if w), []).append(e.name)
    out: dict[str, tuple[str, float]] = {}
    for e in entities:
        display = e.display_name.replace(".", "")
        if " " in e.name or not (2 <= len(display) <= 6) or not display.isupper():
            continue
        targets = initials.get(e.name.replace(".", ""), [])
        # Proper names first: "PN" is Priya Natarajan before it is "production nodes".
        proper = [t for t in targets if by_display[t][:1].isupper()]
        targets = proper or targets
        if len(targets) == 1:
            out[e.name] = (targets[0], 1.0)
    return out


def _nickname_of(short: str, first_name: str) -> bool:
    """ "sam", "sammy", "mik", "tay" for "samantha", "mikkel", "taylor"."""
    if short == first_name or len(short) < 3:
        return False
    if first_name.startswith(short):
        return True
    stem = short[:-1] if short.endswith("y") else short[:-2] if short.endswith("ie") else ""
    common = len(stem.rstrip(stem[-1:])) if stem else 0  # "sammy" → "samm" → "sam"
    return common >= 3 and first_name.startswith(stem[:common])


def nickname_aliases(
    entities: Sequence[Entity],
    people: set[str] = frozenset(),  # type: ignore[assignment]
) -> dict[str, tuple[str, float]]:
    """A one-word name that is a short form of the first name of exactly one multi-word
    person (a speaker or a PERSON entity)."""
    # A short form shares its first three letters with the first name (``_nickname_of``), so
    # each name only meets the persons of its three-letter prefix.
    persons: dict[str, list[Entity]] = {}
    for e in entities:
        if len(e.name.split()) >= 2 and (e.type == "PERSON" or e.name in people):
            persons.setdefault(e.name.split()[0][:3], []).append(e)
    out: dict[str, tuple[str, float]] = {}
    for e in entities:
        if " " in e.name or len(e.name) < 3 or not e.name.isalpha():
            continue
        if e.type not in ("PERSON", _GENERIC):
            continue
        targets = [
            p.name for p in persons.get(e.name[:3], ()) if _nickname_of(e.name, p.name.split()[0])
        ]
        if len(targets) == 1:
            out[e.name] = (targets[0], len(e.name) / len(targets[0].split()[0]))
    return out


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def embedding_pairs(
    entities: Sequence[Entity], vectors: Sequence[Sequence[float]], max_entities: int = 2000
) -> list[tuple[str, str, float]]:
    """Pairs of same-type names at cosine ≥ the ask threshold (most mentioned entities only:
    the comparison is quadratic)."""
    ranked = sorted(range(len(entities)), key=lambda i: (-entities[i].mentions, entities[i].name))
    chosen = ranked[:max_entities]
    pairs = []
    for x, i in enumerate(chosen):
        for j in chosen[x + 1 :]:
            a, b = entities[i], entities[j]
            if a.type != b.type:
                continue
            score = _cosine(vectors[i], vectors[j])
            if score >= _EMBED_ASK:
                pairs.append((a.name, b.name, score))
    return pairs


def alias_root(aliases: dict[str, tuple[str, str, float]], name: str) -> str:
    """The name an alias finally merges into (itself when it is no alias)."""
    if name not in aliases:
        return name
    seen = set()
    while name in aliases and name not in seen:
        seen.add(name)
        name = aliases[name][0]
    return name


def merge_entity_group(base: Entity, members: Iterable[Entity]) -> Entity:
    """The canonical entity ``base`` with its alias entities merged in (in the given order):
    mentions add up, chunk provenance and descriptions are unioned, a specific type replaces
    the generic one."""
    into = Entity(
        name=base.name,
        display_name=base.display_name,
        type=base.type,
        description=base.description,
        source_chunk_ids=list(base.source_chunk_ids),
        mentions=base.mentions,
        descriptions=list(base.descriptions),
    )
    # A set beside the list: a busy entity has thousands of chunks (list lookups made merging
    # its aliases quadratic).
    chunks = set(into.source_chunk_ids)
    for entity in members:
        if entity.name == base.name:
            continue
        into.mentions += entity.mentions
        for cid in entity.source_chunk_ids:
            if cid not in chunks:
                chunks.add(cid)
                into.source_chunk_ids.append(cid)
        for text in entity.descriptions:
            if text not in into.descriptions and len(into.descriptions) < MAX_DESCRIPTIONS:
                into.descriptions.append(text)
        into.description = " ".join(into.descriptions)
        if into.type == _GENERIC and entity.type != _GENERIC:
            into.type = entity.type
    return into


def merge_relationship_group(pair: tuple[str, str], rels: Iterable[Relationship]) -> Relationship:
    """One relationship of the resolved pair from the relationships re-pointed to it (in
    (source, target) order): weights summed, descriptions and provenance unioned."""
    merged: Relationship | None = None
    chunks: set[str] = set()
    for rel in rels:
        if merged is None:
            merged = Relationship(
                pair[0], pair[1], rel.weight, rel.description, list(rel.source_chunk_ids)
            )
            chunks = set(merged.source_chunk_ids)
            continue
        merged.weight += rel.weight
        if rel.description and rel.description not in merged.description:
            merged.description = (merged.description + " " + rel.description).strip()
        for cid in rel.source_chunk_ids:
            if cid not in chunks:
                chunks.add(cid)
                merged.source_chunk_ids.append(cid)
    if merged is None:
        raise ValueError(f"no relationship for {pair}")
    return merged


def resolved_pair(
    aliases: dict[str, tuple[str, str, float]], source: str, target: str
) -> tuple[str, str] | None:
    """The pair a relationship is re-pointed to (None: a self-loop, dropped)."""
    a, b = alias_root(aliases, source), alias_root(aliases, target)
    if a == b:
        return None
    return (a, b) if a < b else (b, a)


def apply_aliases(graph: RoomGraph, aliases: dict[str, tuple[str, str, float]]) -> RoomGraph:
    """Merge every alias entity into its canonical one (alias -> (canonical, method, score)).

    Mentions add up, chunk provenance and descriptions are unioned, relationships are
    re-pointed (pairs merged, weights summed, self-loops dropped).
    """
    if not aliases:
        return graph
    by_name = {e.name: e for e in graph.entities}
    groups: dict[str, list[Entity]] = {}
    for entity in graph.entities:
        groups.setdefault(alias_root(aliases, entity.name), []).append(entity)
    merged = {
        target: merge_entity_group(by_name[target], members) for target, members in groups.items()
    }
    pairs: dict[tuple[str, str], list[Relationship]] = {}
    for rel in graph.relationships:
        pair = resolved_pair(aliases, rel.source, rel.target)
        if pair is not None:
            pairs.setdefault(pair, []).append(rel)
    return RoomGraph(
        entities=[merged[k] for k in sorted(merged)],
        relationships=[merge_relationship_group(k, pairs[k]) for k in sorted(pairs)],
    )


def speaker_people(known: set[str], speakers: Sequence[str]) -> list[Entity]:
    """The room's multi-word speakers no extraction named, as PERSON candidates."""
    return [
        Entity(name=key, display_name=" ".join(s.split()), type="PERSON")
        for s in dict.fromkeys(speakers)
        if (key := " ".join(s.lower().split())) and key not in known and len(key.split()) > 1
    ]


def alias_map(
    entities: Sequence[Entity],
    people: Sequence[Entity],
    decided: dict[str, tuple[str, str, float]] | None = None,
    speakers: Sequence[str] = (),
    ordinary_words: set[str] | None = None,
) -> dict[str, tuple[str, str, float]]:
    """alias -> (canonical, method, score) by the rules, for ``entities`` (the merged graph's,
    sorted by name; only ``name``, ``display_name`` and ``type`` are read) and the speakers
    ``people`` (:func:`speaker_people`); no cycles."""
    pool = [*entities, *people]
    aliases: dict[str, tuple[str, str, float]] = {}
    for alias, (canonical, score) in trimmed_aliases(pool, ordinary_words or set()).items():
        aliases[alias] = (canonical, "trim", score)
    # Names that are an ordinary word away from another name are no containers of it.
    kept = [e for e in pool if e.name not in aliases]
    for alias, (canonical, score) in containment_aliases(kept).items():
        aliases.setdefault(alias, (canonical, "containment", score))
    for alias, (canonical, score) in abbreviation_aliases(pool).items():
        aliases.setdefault(alias, (canonical, "abbreviation", score))
    speaker_keys = {" ".join(s.lower().split()) for s in speakers}
    for alias, (canonical, score) in nickname_aliases(pool, speaker_keys).items():
        aliases.setdefault(alias, (canonical, "nickname", score))
    # A speaker is never folded into another name (it is a member, not a mention).
    for person in people:
        aliases.pop(person.name, None)
    for alias, value in (decided or {}).items():
        aliases.setdefault(alias, value)
    # No cycles: a canonical name is never itself merged away into its own alias.
    for alias in list(aliases):
        seen = {alias}
        name = aliases[alias][0]
        while name in aliases:
            if name in seen:
                del aliases[alias]
                break
            seen.add(name)
            name = aliases[name][0]
    return aliases


def alias_record(
    aliases: dict[str, tuple[str, str, float]],
    alias: str,
    final: Container[str],
    source_chunk_ids: Sequence[str],
) -> AliasRecord:
    """The stored record of one alias: its canonical name is the entity it ended up in."""
    canonical, method, score = aliases[alias]
    target = canonical
    while target not in final and target in aliases:
        target = aliases[target][0]
    return AliasRecord(
        alias=alias,
        canonical=target,
        method=method,
        score=round(score, 4),
        source_chunk_ids=tuple(source_chunk_ids),
    )


def resolve(
    graph: RoomGraph,
    decided: dict[str, tuple[str, str, float]] | None = None,
    speakers: Sequence[str] = (),
    ordinary_words: set[str] | None = None,
) -> tuple[RoomGraph, list[AliasRecord]]:
    """The graph with aliases merged, and the merges made (rules 1 and 2 here; ``decided``
    adds merges found by embeddings / the LLM, alias -> (canonical, method, score)).

    ``speakers``: the room's speakers, candidates for canonical names; a speaker becomes an
    entity only when some name of the text resolves to them."""
    people = speaker_people({e.name for e in graph.entities}, speakers)
    pool = RoomGraph(entities=[*graph.entities, *people], relationships=graph.relationships)
    aliases = alias_map(graph.entities, people, decided, speakers, ordinary_words)
    by_name = {e.name: e for e in pool.entities}
    merged = apply_aliases(pool, aliases)
    # Speakers nothing resolved to stay out of the graph.
    resolved = RoomGraph(
        entities=[e for e in merged.entities if e.mentions > 0 or e.source_chunk_ids],
        relationships=merged.relationships,
    )
    final = {e.name for e in resolved.entities}
    records = [
        alias_record(aliases, alias, final, by_name[alias].source_chunk_ids)
        for alias in sorted(aliases)
    ]
    return resolved, records
