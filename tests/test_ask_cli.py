"""``coagent ask``: human output with the ranked evidence, ``--json``, ``--top-k``, ``--mode``."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest

from coagent.cli import main
from knowledge import indexing
from knowledge.platform import Platform
from knowledge.settings import Settings
from tests.conftest import make_room, with_platform

LINES = [
    ("Ann", "The launch of the Orion dashboard slipped to May."),
    ("Bob", "Orion needs the billing export before launch."),
    ("Cy", "The billing export is done; Orion can launch."),
    ("Dee", "Marketing prepares the Orion launch email."),
    ("Eve", "The printer on the second floor is jammed."),
]


@pytest.fixture(scope="module")
def room(settings: Settings) -> str:
    async def build(platform: Platform) -> str:
        room_id = await make_room(platform, LINES, "cli ask")
        await indexing.sync_chunks(platform, room_id)
        await indexing.sync_evidence(platform, room_id)
        await indexing.build_graph(platform, room_id)
        await indexing.detect_communities(platform, room_id)
        await indexing.write_reports(platform, room_id)
        return room_id

    return with_platform(settings, build)


def test_ask_json_prints_one_object(room: str, capsys: pytest.CaptureFixture[str]) -> None:
    main(["ask", "--room", room, "--top-k", "3", "--json", "When does Orion launch?"])
    out = capsys.readouterr().out
    body = json.loads(out)  # one JSON object and nothing else
    assert out.count("\n") == 1
    assert body["question"] == "When does Orion launch?"
    assert body["route"] == "local" and body["mode"] == "answer" and body["answer"]
    assert body["citations"] and len(body["evidence"]) == 3
    assert [e["rank"] for e in body["evidence"]] == [1, 2, 3]
    for item in [*body["citations"], *body["evidence"]]:
        assert item["kind"] == "message" and item["id"].isdigit()
        assert datetime.fromisoformat(item["time"]).tzinfo is not None
    assert all(e["signals"] for e in body["evidence"])
    stages = {s["stage"]: s for s in body["stages"]}
    assert {"plan", "lexical", "fusion", "rerank"} <= set(stages)
    assert all(isinstance(s["seconds"], float) and s["seconds"] >= 0 for s in stages.values())

    main(["ask", "--room", room, "--mode", "evidence", "--json", "When does Orion launch?"])
    evidence = json.loads(capsys.readouterr().out)
    assert evidence["mode"] == "evidence" and evidence["answer"] == ""
    assert 3 <= len(evidence["evidence"]) <= 10
    assert evidence["evidence"][0]["id"] == body["evidence"][0]["id"]


def test_ask_prints_the_answer_and_the_evidence(
    room: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["ask", "--room", room, "--top-k", "2", "Is the billing export done?"])
    out = capsys.readouterr().out
    assert "route: local" in out and "answer: " in out and "citations:" in out
    assert re.search(r"\[message \d+\] \w+: ", out)
    rows = re.findall(r"^\s+(\d)\. message (\d+) · (\w+) · (\d{4}-\d{2}-\d{2}) · (\S+)", out, re.M)
    assert [r[0] for r in rows] == ["1", "2"]
    assert all("#" in r[4] for r in rows)  # signal#rank

    main(["ask", "--room", room, "--mode", "evidence", "--top-k", "2", "billing export"])
    out = capsys.readouterr().out
    assert "answer:" not in out and "citations:" not in out
    assert len(re.findall(r"^\s+\d\. message \d+ · ", out, re.M)) == 2


@pytest.mark.parametrize("bad", ["0", "51", "x"])
def test_ask_refuses_a_bad_top_k(room: str, bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["ask", "--room", room, "--top-k", bad, "anything"])
    assert exit_.value.code == 2 and "--top-k" in capsys.readouterr().err
