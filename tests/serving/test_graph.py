"""The graph API on a room whose graph was built by a real Dagster run."""

from __future__ import annotations

import uuid

from fastapi import FastAPI

from knowledge import rooms
from tests.serving.conftest import Api, error_code, last_stream_id, stream_events


async def _member_client(api: Api, room_id: str):  # type: ignore[no-untyped-def]
    return await api.client(await api.member_of(room_id))


async def test_query_answers_with_route_citations_and_freshness(api: Api, built_room: str) -> None:
    client = await _member_client(api, built_room)
    url = f"/api/v1/rooms/{built_room}/graph/query"
    overview = await client.post(url, json={"question": "What are the main themes?"})
    assert overview.status_code == 200, overview.text
    body = overview.json()
    assert body["route"] == "global"
    assert body["communities"] and body["answer"]
    assert body["freshness"]["reports_as_of"] is not None
    assert body["freshness"]["chunks_materialized_at"] is not None
    assert body["freshness"]["graph_materialized_at"] is not None
    pending_before = body["freshness"]["pending_events"]
    assert pending_before is not None

    # a message posted after the build is an event the answer does not include yet
    posted = await client.post(
        f"/api/v1/rooms/{built_room}/messages", json={"content": "Titus Lartius holds Corioli."}
    )
    assert posted.status_code == 201, posted.text
    again = await client.post(url, json={"question": "What are the main themes?"})
    assert again.json()["freshness"]["pending_events"] == pending_before + 1

    local = await client.post(
        url, json={"question": "What did Menenius say about the belly?", "route": "local"}
    )
    assert local.status_code == 200
    answer = local.json()
    assert answer["route"] == "local"
    assert answer["citations"]
    assert {c["kind"] for c in answer["citations"]} <= {"message", "artifact"}

    for bad in (
        {"question": ""},
        {"question": "x" * 2001},
        {"question": "ok", "route": "sideways"},
    ):
        response = await client.post(url, json=bad)
        assert response.status_code == 422, bad


async def test_visualize_is_bounded_and_carries_communities(api: Api, built_room: str) -> None:
    client = await _member_client(api, built_room)
    url = f"/api/v1/rooms/{built_room}/graph/visualize"
    small = (await client.get(url, params={"limit": 5})).json()
    assert len(small["nodes"]) == 5
    assert small["truncated"] and small["total_nodes"] > 5
    names = {n["id"] for n in small["nodes"]}
    assert all(e["source"] in names and e["target"] in names for e in small["edges"])
    assert all(
        n["community_id"] and n["community_id"] in n["community_ids"] for n in small["nodes"]
    )
    mentions = [n["mentions"] for n in small["nodes"]]
    assert mentions == sorted(mentions, reverse=True)
    assert (await client.get(url, params={"limit": 5000})).status_code == 422


async def test_communities_have_report_titles_and_summaries(api: Api, built_room: str) -> None:
    client = await _member_client(api, built_room)
    url = f"/api/v1/rooms/{built_room}/graph/communities"
    page = (await client.get(url, params={"limit": 3})).json()
    assert page["total"] > 2 and len(page["items"]) == 3
    for community in page["items"]:
        assert community["title"] and community["summary"]
        assert community["size"] >= 1 and community["entities"]
    level0 = (await client.get(url, params={"level": 0, "limit": 200})).json()
    assert all(c["level"] == 0 for c in level0["items"])


async def test_status_build_and_pending_events(api: Api, app: FastAPI, built_room: str) -> None:
    client = await _member_client(api, built_room)
    status = await client.get(f"/api/v1/rooms/{built_room}/graph/status")
    assert status.status_code == 200, status.text
    body = status.json()
    assert body["dagster_available"] and body["partition_registered"]
    assets = {a["asset"]: a for a in body["assets"]}
    assert set(assets) == {
        "chunks",
        "entities",
        "relationships",
        "communities",
        "community_reports",
    }
    assert all(a["last_materialized_at"] and a["run_id"] for a in assets.values())
    assert body["last_run"]["status"] == "SUCCESS"
    assert body["active_runs"] == []
    assert body["counts"]["entities"] > 0
    pending_before = body["pending_events"]

    since = await last_stream_id(app)
    # A member may ask for a refresh but not for a full rebuild (every LLM call again).
    refused = await client.post(f"/api/v1/rooms/{built_room}/graph/build", json={"full": True})
    assert refused.status_code == 403
    assert error_code(refused) == "forbidden"
    assert await stream_events(app, built_room, since) == []
    moderator = await api.member_of(built_room)
    await rooms.set_room_member(api.session, uuid.UUID(built_room), moderator.id, "moderator")
    await api.commit()
    manager = await api.client(moderator)
    build = await manager.post(f"/api/v1/rooms/{built_room}/graph/build", json={"full": True})
    assert build.status_code == 202
    assert build.json()["full"] is True
    events = await stream_events(app, built_room, since)
    assert [e["type"] for e in events] == ["room.rebuild_requested"]
    assert '"full":true' in events[0]["data"]
    no_body = await client.post(f"/api/v1/rooms/{built_room}/graph/build")
    assert no_body.status_code == 202 and no_body.json()["full"] is False

    after = (await client.get(f"/api/v1/rooms/{built_room}/graph/status")).json()
    assert after["pending_events"] == pending_before + 2


async def test_graph_of_an_empty_room(api: Api) -> None:
    user = await api.user()
    room = await api.room(user)
    client = await api.client(user)
    base = f"/api/v1/rooms/{room.id}/graph"
    graph = (await client.get(f"{base}/visualize")).json()
    assert graph["nodes"] == [] and not graph["truncated"]
    assert (await client.get(f"{base}/communities")).json()["total"] == 0
    status = (await client.get(f"{base}/status")).json()
    assert status["last_run"] is None
    assert all(a["last_materialized_at"] is None for a in status["assets"])


async def test_graph_endpoints_on_a_missing_room(api: Api) -> None:
    from dbschema.models import UserRole

    client = await api.client(await api.user(UserRole.admin))
    response = await client.get(f"/api/v1/rooms/{uuid.uuid4()}/graph/status")
    assert response.status_code == 404
    assert error_code(response) == "not_found"


async def test_query_evidence_mode_and_top_k(api: Api, built_room: str) -> None:
    client = await _member_client(api, built_room)
    url = f"/api/v1/rooms/{built_room}/graph/query"
    question = "What did Menenius say about the belly?"

    evidence = await client.post(url, json={"question": question, "mode": "evidence", "top_k": 5})
    assert evidence.status_code == 200, evidence.text
    body = evidence.json()
    assert body["mode"] == "evidence" and body["answer"] == ""
    assert body["route"] == "local"
    assert len(body["evidence"]) == 5
    for item in body["evidence"]:
        assert set(item) == {"kind", "id", "score", "signals", "speaker", "time", "excerpt"}
        assert item["kind"] == "message" and item["id"].isdigit()
        assert item["signals"] and all(rank >= 1 for rank in item["signals"].values())
        assert item["speaker"] and item["time"] and item["excerpt"]
    scores = [item["score"] for item in body["evidence"]]
    assert scores == sorted(scores, reverse=True) and scores[0] == 1.0
    assert "belly" in " ".join(i["excerpt"].lower() for i in body["evidence"])
    # In evidence mode the citations are the evidence, with their times.
    assert [(c["kind"], c["id"]) for c in body["citations"]] == [
        (i["kind"], i["id"]) for i in body["evidence"]
    ]
    assert all(c["time"] for c in body["citations"])

    answered = (await client.post(url, json={"question": question})).json()
    assert answered["mode"] == "answer" and answered["answer"]
    assert 0 < len(answered["evidence"]) <= 10
    assert answered["evidence"][0]["id"] == body["evidence"][0]["id"]
    cited = {(c["kind"], c["id"]) for c in answered["citations"]}
    assert cited <= {(i["kind"], i["id"]) for i in answered["evidence"]}
    assert all(c["time"] for c in answered["citations"])
    one = (await client.post(url, json={"question": question, "top_k": 1})).json()
    assert len(one["evidence"]) == 1
    wide = (await client.post(url, json={"question": question, "top_k": 50})).json()
    assert 10 < len(wide["evidence"]) <= 50

    for bad in (
        {"question": question, "top_k": 0},
        {"question": question, "top_k": 51},
        {"question": question, "top_k": -3},
        {"question": question, "top_k": "many"},
        {"question": question, "mode": "fast"},
    ):
        response = await client.post(url, json=bad)
        assert response.status_code == 422, bad
        assert error_code(response) == "validation_error"
