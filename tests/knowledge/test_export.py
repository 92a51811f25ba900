"""Export in Microsoft GraphRAG's output layout: Parquet tables that match the stored graph."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import polars as pl
import pytest

from coagent.cli import main
from knowledge import artifacts
from knowledge.errors import NotFoundError
from knowledge.export import export_room
from knowledge.indexing import (
    build_graph,
    detect_communities,
    room_state,
    sync_chunks,
    write_reports,
)
from knowledge.platform import Platform
from knowledge.sample import load_sample
from knowledge.settings import Settings
from tests.conftest import make_room, stored_state, with_platform

# GraphRAG 2.x ``graphrag/data_model/schemas.py``: *_FINAL_COLUMNS, in order.
GRAPHRAG_COLUMNS = {
    "entities": [
        "id",
        "human_readable_id",
        "title",
        "type",
        "description",
        "text_unit_ids",
        "frequency",
        "degree",
    ],
    "relationships": [
        "id",
        "human_readable_id",
        "source",
        "target",
        "description",
        "weight",
        "combined_degree",
        "text_unit_ids",
    ],
    "communities": [
        "id",
        "human_readable_id",
        "community",
        "level",
        "parent",
        "children",
        "title",
        "entity_ids",
        "relationship_ids",
        "text_unit_ids",
        "period",
        "size",
    ],
    "community_reports": [
        "id",
        "human_readable_id",
        "community",
        "level",
        "parent",
        "children",
        "title",
        "summary",
        "full_content",
        "rank",
        "rating_explanation",
        "findings",
        "full_content_json",
        "period",
        "size",
    ],
    "text_units": [
        "id",
        "human_readable_id",
        "text",
        "n_tokens",
        "document_ids",
        "entity_ids",
        "relationship_ids",
        "covariate_ids",
    ],
    "documents": [
        "id",
        "human_readable_id",
        "title",
        "text",
        "text_unit_ids",
        "creation_date",
        "metadata",
    ],
}

SAMPLE = [(s.speaker, s.text) for s in load_sample()[:90]]
ARTIFACT = (
    "Notes on act I",
    "Menenius tells the citizens of Rome the fable of the belly. Caius Marcius scorns the "
    "citizens; the Volsces under Tullus Aufidius are in arms against Rome.",
)


async def built_room(platform: Platform) -> str:
    room_id = await make_room(platform, SAMPLE, "export")
    async with platform.session() as session:
        await artifacts.create_artifact(
            session, uuid.UUID(room_id), *ARTIFACT, platform.settings.max_artifact_chars
        )
        await session.commit()
    await sync_chunks(platform, room_id)
    await build_graph(platform, room_id)
    await detect_communities(platform, room_id)
    await write_reports(platform, room_id)
    return room_id


def read_tables(folder: Path) -> dict[str, pl.DataFrame]:
    return {name: pl.read_parquet(folder / f"{name}.parquet") for name in GRAPHRAG_COLUMNS}


async def test_export_matches_the_stored_graph(platform: Platform, tmp_path: Path) -> None:
    room_id = await built_room(platform)
    state = await room_state(platform, room_id)
    assert state["entities"] >= 5 and state["communities"] > 1  # a real graph

    counts = await export_room(platform, room_id, tmp_path / "out")
    t = read_tables(tmp_path / "out")
    for name, columns in GRAPHRAG_COLUMNS.items():
        assert t[name].columns == columns, name
        assert counts[name] == t[name].height
    assert t["entities"].height == state["entities"]
    assert t["relationships"].height == state["relationships"]
    assert t["communities"].height == state["communities"]
    assert t["community_reports"].height == state["reports"]
    assert t["text_units"].height == state["chunks"]
    assert t["documents"].height == 2  # the conversation and the artifact

    entities, relationships = t["entities"], t["relationships"]
    titles = set(entities["title"])
    assert len(titles) == entities.height and entities["id"].n_unique() == entities.height
    assert set(relationships["source"]) | set(relationships["target"]) <= titles
    assert entities["human_readable_id"].to_list() == list(range(entities.height))
    # degree = relationships per entity title; combined_degree = sum of both ends
    degree = dict(zip(entities["title"], entities["degree"], strict=True))
    ends = relationships["source"].to_list() + relationships["target"].to_list()
    assert all(degree[title] == ends.count(title) for title in titles)
    for row in relationships.iter_rows(named=True):
        assert row["combined_degree"] == degree[row["source"]] + degree[row["target"]]
    assert relationships["weight"].dtype == pl.Float64

    # ids join across tables as GraphRAG expects
    unit_ids = set(t["text_units"]["id"])
    entity_ids = set(entities["id"])
    for ids in entities["text_unit_ids"].to_list() + relationships["text_unit_ids"].to_list():
        assert set(ids) <= unit_ids
    document_ids = set(t["documents"]["id"])
    for ids in t["text_units"]["document_ids"].to_list():
        assert len(ids) == 1 and set(ids) <= document_ids
    assert sorted(u for ids in t["documents"]["text_unit_ids"].to_list() for u in ids) == sorted(
        unit_ids
    )
    communities = t["communities"]
    numbers = set(communities["community"])
    for row in communities.iter_rows(named=True):
        assert set(row["entity_ids"]) <= entity_ids and row["size"] == len(row["entity_ids"])
        assert row["parent"] == -1 or row["parent"] in numbers
        for child in row["children"]:
            assert (
                communities.filter(pl.col("community") == child)["parent"].item()
                == (row["community"])
            )
    assert (communities.filter(pl.col("level") == 0)["parent"] == -1).all()
    reports = t["community_reports"]
    assert set(reports["community"]) <= numbers
    for row in reports.iter_rows(named=True):
        content = json.loads(row["full_content_json"])
        assert content["title"] == row["title"] and content["rating"] == row["rank"]
        assert row["full_content"].startswith(f"# {row['title']}")
        assert all(set(f) == {"summary", "explanation"} for f in row["findings"])

    # the artifact is its own document, with its own text units
    artifact_doc = t["documents"].filter(pl.col("title") == ARTIFACT[0])
    assert artifact_doc["text"].item() == ARTIFACT[1]
    assert len(artifact_doc["text_unit_ids"].item()) >= 1

    # stable ids: exporting again gives the same tables
    await export_room(platform, room_id, tmp_path / "again")
    again = read_tables(tmp_path / "again")
    for name in ("entities", "relationships", "text_units", "documents"):
        assert again[name].equals(t[name]), name
    for name in ("communities", "community_reports"):
        assert again[name]["id"].to_list() == t[name]["id"].to_list(), name


async def test_export_of_an_empty_room_and_of_an_unknown_one(
    platform: Platform, tmp_path: Path
) -> None:
    room_id = await make_room(platform, [])
    counts = await export_room(platform, room_id, tmp_path)
    assert counts == dict.fromkeys(GRAPHRAG_COLUMNS, 0)
    for name, frame in read_tables(tmp_path).items():
        assert frame.columns == GRAPHRAG_COLUMNS[name] and frame.height == 0
    with pytest.raises(NotFoundError):
        await export_room(platform, str(uuid.uuid4()), tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


async def test_export_keeps_the_community_hierarchy(platform: Platform, tmp_path: Path) -> None:
    from knowledge.graph import Community

    room_id = await built_room(platform)
    names = sorted(e.name for e in (await platform.graph.get_graph(room_id)).entities)
    half = len(names) // 2
    await platform.graph.replace_communities(
        room_id,
        [
            Community("top", 0, None, names),
            Community("left", 1, "top", names[:half]),
            Community("right", 1, "top", names[half:]),
        ],
    )
    reports = len(await platform.graph.get_reports(room_id))  # now of gone communities
    await export_room(platform, room_id, tmp_path)
    t = read_tables(tmp_path)
    communities = t["communities"].sort("community")
    assert communities["level"].to_list() == [0, 1, 1]
    assert communities["parent"].to_list() == [-1, 0, 0]
    assert communities["children"].to_list() == [[1, 2], [], []]
    sizes = communities["size"].to_list()
    assert sizes[0] == len(names) and sorted(sizes[1:]) == sorted([half, len(names) - half])
    # reports of communities that no longer exist are kept, numbered after the communities
    assert t["community_reports"].height == reports
    assert (t["community_reports"]["community"] >= 3).all()
    assert (t["community_reports"]["parent"] == -1).all()


def test_cli_export(settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    room_id = with_platform(settings, built_room)
    state = stored_state(settings, room_id)
    main(["export", room_id, str(tmp_path / "graphrag")])
    out = capsys.readouterr().out
    assert "Wrote 6 tables in GraphRAG's output layout" in out
    tables = read_tables(tmp_path / "graphrag")
    assert tables["entities"].height == state["entities"]
    assert tables["community_reports"].height == state["reports"]
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(uuid.uuid4()), str(tmp_path / "nothing")])
    assert exit_.value.code != 0 and "does not exist" in capsys.readouterr().err
