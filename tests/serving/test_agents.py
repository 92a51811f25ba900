"""Room agents: configs and the sandbox (replies to mentions: test_agent_replies.py)."""

from __future__ import annotations

from dbschema.models import UserRole
from serving.agents.service import mentioned
from tests.serving.conftest import Api, error_code


async def test_agent_configs_crud(api: Api) -> None:
    moderator, member = await api.user(), await api.user()
    room = await api.room(member)
    from knowledge import rooms

    await rooms.set_room_member(api.session, room.id, moderator.id, "moderator")
    await api.commit()
    mod, mem = await api.client(moderator), await api.client(member)
    url = f"/api/v1/rooms/{room.id}/agents"

    body = {"name": "tutor", "system_prompt": "Be kind.", "tools": ["graph_query"]}
    assert (await mem.post(url, json=body)).status_code == 403
    created = await mod.post(url, json=body)
    assert created.status_code == 201, created.text
    agent = created.json()
    assert agent["model"] == api.settings.llm_chat_model
    assert agent["tools"] == ["graph_query"]

    # The agent has its own identity, a member of the room with role "agent".
    members = (await mem.get(f"/api/v1/rooms/{room.id}/members")).json()["items"]
    identity = next(m for m in members if m["user"]["id"] == agent["user_id"])
    assert identity["role"] == "agent" and identity["user"]["role"] == "agent"

    assert (await mod.post(url, json={"name": "Tutor"})).status_code == 409
    reserved = await mod.post(url, json={"name": "analytics"})
    assert reserved.status_code == 409 and error_code(reserved) == "agent_name_taken"
    for bad in ({"name": "has space"}, {"name": ""}, {"name": "ok", "tools": ["shell"]}):
        assert (await mod.post(url, json=bad)).status_code == 422, bad

    listed = (await mem.get(url)).json()
    assert [a["name"] for a in listed] == ["tutor"]
    updated = await mod.patch(f"{url}/{agent['id']}", json={"name": "coach", "model": "m-2"})
    assert updated.json()["name"] == "coach" and updated.json()["model"] == "m-2"
    assert (await mem.get(f"{url}/{agent['id']}")).json()["name"] == "coach"
    assert (await mod.delete(f"{url}/{agent['id']}")).status_code == 204
    assert (await mem.get(f"{url}/{agent['id']}")).status_code == 404
    members = (await mem.get(f"/api/v1/rooms/{room.id}/members")).json()["items"]
    assert all(m["user"]["id"] != agent["user_id"] for m in members)


async def test_sandbox_tries_an_agent_without_side_effects(api: Api, built_room: str) -> None:
    teacher = await api.user(UserRole.admin)
    client = await api.client(teacher)
    url = f"/api/v1/rooms/{built_room}/agents"
    with_tool = (await client.post(url, json={"name": "analyst", "tools": ["graph_query"]})).json()
    without = (await client.post(url, json={"name": "idle"})).json()
    before = (await client.get(f"/api/v1/rooms/{built_room}/messages", params={"limit": 1})).json()

    tried = await client.post(
        f"{url}/{with_tool['id']}/sandbox", json={"message": "What are the main themes?"}
    )
    assert tried.status_code == 200, tried.text
    result = tried.json()
    assert result["agent"] == "analyst" and result["offline"] is True
    assert result["tool_calls"][0]["tool"] == "graph_query"
    assert result["reply"]

    idle = (await client.post(f"{url}/{without['id']}/sandbox", json={"message": "hi"})).json()
    assert idle["tool_calls"] == [] and "graph_query" in idle["reply"]
    analytics = await client.post(f"{url}/analytics/sandbox", json={"message": "Who is Menenius?"})
    assert analytics.status_code == 200 and analytics.json()["agent"] == "Analytics Agent"

    after = (await client.get(f"/api/v1/rooms/{built_room}/messages", params={"limit": 1})).json()
    assert after["items"] == before["items"]


def test_mention_parsing() -> None:
    assert mentioned("@Analytics, what now? cc @bob. and @bob") == ["analytics", "bob"]
    assert mentioned("write to a@b.com") == []
    assert mentioned("no mentions") == []
