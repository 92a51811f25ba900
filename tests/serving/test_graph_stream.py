"""``POST /rooms/{id}/graph/query`` with ``stream: true``: Server-Sent Events (offline path; the
LLM path's token streaming is tested in tests/llm/test_llm_path.py)."""

from __future__ import annotations

import json
from typing import Any

from tests.serving.conftest import Api


def parse_sse(raw: str) -> list[tuple[str, Any]]:
    events = []
    for block in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((lines["event"], json.loads(lines["data"])))
    return events


async def test_a_streamed_query_sends_deltas_then_evidence_citations_and_the_answer(
    api: Api, built_room: str
) -> None:
    client = await api.client(await api.member_of(built_room))
    url = f"/api/v1/rooms/{built_room}/graph/query"
    question = {"question": "What did Menenius say about the belly?", "route": "local"}
    async with client.stream("POST", url, json={**question, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = (await response.aread()).decode()
    events = parse_sse(raw)
    kinds = [kind for kind, _ in events]
    deltas = [data["text"] for kind, data in events if kind == "delta"]
    assert len(deltas) > 1 and kinds[: len(deltas)] == ["delta"] * len(deltas)
    assert kinds[len(deltas) :] == ["evidence", "citations", "done"]
    done = events[-1][1]
    assert "".join(deltas) == done["answer"]
    assert events[-3][1] == done["evidence"] and events[-2][1] == done["citations"]
    # The same answer as the JSON response.
    plain = (await client.post(url, json=question)).json()
    assert plain["answer"] == done["answer"] and plain["citations"] == done["citations"]


async def test_a_streamed_query_refuses_bad_input_before_streaming(
    api: Api, built_room: str
) -> None:
    member = await api.client(await api.member_of(built_room))
    url = f"/api/v1/rooms/{built_room}/graph/query"
    blank = await member.post(url, json={"question": "   ", "stream": True})
    assert blank.status_code == 422 and blank.headers["content-type"].startswith("application/json")
    outsider = await api.client(await api.user())
    refused = await outsider.post(url, json={"question": "Who is Menenius?", "stream": True})
    assert refused.status_code in (403, 404)
