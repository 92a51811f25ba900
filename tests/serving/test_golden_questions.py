"""Golden questions over the API: members read them, room managers add, delete and evaluate."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from dbschema.models import Message, UserRole
from knowledge import chat, rooms
from tests.serving.conftest import Api, error_code


def _url(room_id: object) -> str:
    return f"/api/v1/rooms/{room_id}/graph/golden-questions"


async def _post(api: Api, room_id: uuid.UUID, *texts: str) -> list[int]:
    ids = []
    for text in texts:
        message = await chat.post_message(api.session, room_id, None, text, 1000)
        ids.append(message.id)
    await api.commit()
    return ids


async def test_managers_add_list_and_delete_members_only_read(api: Api) -> None:
    member, moderator, teacher = (
        await api.user(),
        await api.user(),
        await api.user(UserRole.teacher),
    )
    course = await api.course(owner=teacher)
    room = await api.room(member, course=course)
    await rooms.set_room_member(api.session, room.id, moderator.id, "moderator")
    await api.commit()
    (gold,) = await _post(api, room.id, "Menenius tells the fable of the belly.")
    mem, mod = await api.client(member), await api.client(moderator)
    body = {"question": "What fable does Menenius tell?", "gold_message_ids": [gold]}

    # a member who is not a manager: 403 on every change, nothing stored
    refused = await mem.post(_url(room.id), json=body)
    assert refused.status_code == 403, refused.text
    assert error_code(refused) == "forbidden"
    assert (await mem.post(f"{_url(room.id)}/evaluate")).status_code == 403
    assert (await mem.get(_url(room.id))).json()["total"] == 0

    created = await mod.post(_url(room.id), json={**body, "kind": "multi-hop"})
    assert created.status_code == 201, created.text
    stored = created.json()
    assert stored["gold_message_ids"] == [gold] and stored["kind"] == "multi-hop"
    assert stored["created_by"] == str(moderator.id) and stored["room_id"] == str(room.id)
    # the course's teacher manages its rooms without being a member
    by_teacher = await (await api.client(teacher)).post(_url(room.id), json=body)
    assert by_teacher.status_code == 201, by_teacher.text
    assert by_teacher.json()["kind"] == "single-hop"

    listed = await mem.get(_url(room.id), params={"limit": 1})
    assert listed.status_code == 200
    page = listed.json()
    assert page["total"] == 2 and page["limit"] == 1 and page["items"][0]["id"] == stored["id"]

    one = f"{_url(room.id)}/{stored['id']}"
    assert (await mem.delete(one)).status_code == 403
    assert (await mod.delete(one)).status_code == 204
    assert (await mod.delete(one)).status_code == 404
    assert (await mem.get(_url(room.id))).json()["total"] == 1


async def test_bad_input_is_refused_clearly_and_nothing_is_stored(api: Api) -> None:
    admin = await api.user(UserRole.admin)
    room, other = await api.room(), await api.room()
    (own,) = await _post(api, room.id, "The Volsces are in arms.")
    (foreign,) = await _post(api, other.id, "Elsewhere entirely.")
    client = await api.client(admin)
    question = "Who is in arms?"

    mixed = await client.post(
        _url(room.id), json={"question": question, "gold_message_ids": [own, foreign]}
    )
    assert mixed.status_code == 422, mixed.text
    assert error_code(mixed) == "invalid_input"
    assert f"not messages of this room: {foreign}" in mixed.json()["error"]["message"]

    for bad in (
        {"question": question, "gold_message_ids": []},
        {"question": question, "gold_message_ids": list(range(1, 52))},
        {"question": question, "gold_message_ids": [0]},
        {"question": question, "gold_message_ids": [2**63]},
        {"question": question, "gold_message_ids": [own], "kind": "sideways"},
        {"question": "", "gold_message_ids": [own]},
        {"question": "x" * 2001, "gold_message_ids": [own]},
        {"question": "nul \x00", "gold_message_ids": [own]},
        {"gold_message_ids": [own]},
    ):
        response = await client.post(_url(room.id), json=bad)
        assert response.status_code == 422, (bad, response.text)
        assert error_code(response) == "validation_error"
    blank = await client.post(_url(room.id), json={"question": "   ", "gold_message_ids": [own]})
    assert blank.status_code == 422 and error_code(blank) == "invalid_input"
    assert "empty" in blank.json()["error"]["message"]

    assert (await client.get(_url(room.id))).json()["total"] == 0
    assert (await client.get(_url(other.id))).json()["total"] == 0
    missing = await client.post(
        _url(uuid.uuid4()), json={"question": question, "gold_message_ids": [own]}
    )
    assert missing.status_code == 404
    assert (await client.delete(f"{_url(room.id)}/{uuid.uuid4()}")).status_code == 404


async def test_non_members_are_refused(api: Api) -> None:
    member, outsider = await api.user(), await api.user()
    room = await api.room(member)
    stranger = await api.client(outsider)
    assert (await stranger.get(_url(room.id))).status_code == 403
    assert (await stranger.post(f"{_url(room.id)}/evaluate")).status_code == 403
    assert (await (await api.client()).get(_url(room.id))).status_code == 401


async def test_evaluate_scores_the_questions_now(api: Api, built_room: str) -> None:
    room_id = uuid.UUID(built_room)

    async def message(content: str) -> int:
        found = await api.session.execute(
            select(Message.id).where(Message.room_id == room_id, Message.content == content)
        )
        return int(found.scalar_one())

    moon = await message("Be-mock the modest moon.")
    unrelated = await message("Lets along.")
    admin = await api.client(await api.user(UserRole.admin))
    question = "Who would be-mock the modest moon?"
    hit = await admin.post(_url(room_id), json={"question": question, "gold_message_ids": [moon]})
    miss = await admin.post(
        _url(room_id),
        json={"question": question, "gold_message_ids": [unrelated], "kind": "alias"},
    )
    assert hit.status_code == 201 and miss.status_code == 201, (hit.text, miss.text)

    response = await admin.post(f"{_url(room_id)}/evaluate")
    assert response.status_code == 200, response.text
    scores = response.json()
    assert scores["questions"] == 2 and scores["top_k"] == 10
    by_id = {r["id"]: r for r in scores["results"]}
    found, missed = by_id[hit.json()["id"]], by_id[miss.json()["id"]]
    assert found["recall_at_10"] == 1.0 and found["reciprocal_rank"] > 0
    assert moon in found["retrieved_message_ids"]
    assert missed["recall_at_10"] == 0.0 and missed["reciprocal_rank"] == 0.0
    assert scores["recall_at_10"] == 0.5
    assert scores["by_kind"]["single-hop"]["recall_at_10"] == 1.0
    assert scores["by_kind"]["alias"]["recall_at_10"] == 0.0
    assert scores["zero_recall_question_ids"] == [miss.json()["id"]]

    # a room without golden questions evaluates to nothing, not to zeros
    empty = await admin.post(f"{_url((await api.room()).id)}/evaluate")
    assert empty.status_code == 200
    assert empty.json()["questions"] == 0 and empty.json()["recall_at_10"] is None
