from knowledge.extraction import (
    ExtractedEntity,
    ExtractedRelationship,
    Extraction,
    FastExtractor,
)
from knowledge.graph import merge_extractions, normalize_name


def test_normalize_name() -> None:
    assert normalize_name("  Caius   MARCIUS ") == "caius marcius"
    assert normalize_name("Zoë") == "zoë"


def test_merge_normalizes_names_and_keeps_first_casing() -> None:
    first = Extraction(
        entities=[
            ExtractedEntity(name="Neo4j", type="technology", description="A graph database."),
            ExtractedEntity(name="Alice", type="PERSON", description="An engineer."),
        ],
        relationships=[ExtractedRelationship(source="Alice", target="Neo4j", weight=2)],
    )
    second = Extraction(
        entities=[
            ExtractedEntity(name=" NEO4J ", type="TECHNOLOGY", description="Runs Cypher."),
            ExtractedEntity(name="alice", type="ENTITY", description="An engineer."),
        ],
        relationships=[
            ExtractedRelationship(source="neo4j", target="ALICE", weight=3),
            ExtractedRelationship(source="alice", target="Unknown Thing", weight=1),
        ],
    )
    graph = merge_extractions([("c1", first), ("c2", second)])
    by_name = {e.name: e for e in graph.entities}
    assert set(by_name) == {"neo4j", "alice"}
    assert by_name["neo4j"].display_name == "Neo4j"
    assert by_name["neo4j"].type == "TECHNOLOGY"
    assert by_name["alice"].type == "PERSON"  # a specific type beats the generic one
    assert by_name["neo4j"].description == "A graph database. Runs Cypher."
    assert by_name["alice"].description == "An engineer."  # duplicates merged
    assert by_name["neo4j"].source_chunk_ids == ["c1", "c2"]
    assert by_name["neo4j"].mentions == 2
    # one undirected relationship per pair, weights summed, endpoint names normalized
    assert len(graph.relationships) == 1
    rel = graph.relationships[0]
    assert (rel.source, rel.target, rel.weight) == ("alice", "neo4j", 5.0)
    assert rel.source_chunk_ids == ["c1", "c2"]


async def test_merge_is_deterministic() -> None:
    extractor = FastExtractor()
    texts = [
        "Alice: We moved the Graph Store to Neo4j last week.\nBob: Neo4j and Qdrant work well.",
        "Carol: Alice said Qdrant is fast. Bob agreed about Qdrant and Neo4j.",
    ]
    results = await extractor.extract(texts)
    extractions = [(cid, r) for cid, r in zip(["c1", "c2"], results, strict=True)]
    assert all(isinstance(r, Extraction) for _, r in extractions)
    assert merge_extractions(extractions) == merge_extractions(extractions)


def test_fast_extractor_finds_names_and_cooccurrence_but_no_speaker_hubs() -> None:
    text = (
        "Alice: I met Dr. Bob Smith in Paris to talk about the Graph Store.\n"
        "Bob Smith: Paris was lovely. I and Alice will call Acme Corp tomorrow.\n"
        "Alice: Acme Corp wants the Graph Store by Friday."
    )
    extraction = FastExtractor().extract_one(text)
    names = {normalize_name(e.name): e for e in extraction.entities}
    assert {"alice", "bob smith", "paris", "acme corp", "graph store"} <= set(names)
    assert names["bob smith"].type == "PERSON"  # "Dr." before the name
    assert names["acme corp"].type == "ORGANIZATION"
    assert "friday" not in names  # weekdays are not entities
    pairs = {
        tuple(sorted((normalize_name(r.source), normalize_name(r.target))))
        for r in extraction.relationships
    }
    assert ("acme corp", "graph store") in pairs
    # Speakers are not linked to what they mention (that made every speaker a hub); "Alice"
    # is an entity here only because Bob Smith names her.
    assert ("alice", "graph store") not in pairs
    assert ("alice", "paris") not in pairs
    speaker_only = FastExtractor().extract_one("Zed Quinn: Paris and Acme Corp again.")
    assert "zed quinn" not in {normalize_name(e.name) for e in speaker_only.entities}


def test_names_stop_at_punctuation_and_take_at_most_four_words() -> None:
    extraction = FastExtractor().extract_one(
        "Ann: Agents Alex Mercer, Jordan Hayes and Sam Lee joined. "
        "Ann: Alex Mercer, Jordan Hayes and Sam Lee met again."
    )
    names = {normalize_name(e.name) for e in extraction.entities}
    assert {"alex mercer", "jordan hayes", "sam lee"} <= names
    assert not any(len(n.split()) > 4 or "," in n for n in names)
    assert "alex mercer jordan hayes" not in names
