"""Artifacts: CRUD, versions, optimistic concurrency, size limits, events."""

from __future__ import annotations

from fastapi import FastAPI

from tests.serving.conftest import Api, error_code, last_stream_id, stream_events


async def test_artifact_lifecycle_with_versions_and_events(api: Api, app: FastAPI) -> None:
    owner, member, outsider = await api.user(), await api.user(), await api.user()
    room = await api.room(owner, member)
    o, m = await api.client(owner), await api.client(member)
    url = f"/api/v1/rooms/{room.id}/artifacts"
    since = await last_stream_id(app)

    created = await o.post(url, json={"title": " Plan ", "content": "Draft one"})
    assert created.status_code == 201, created.text
    artifact = created.json()
    assert artifact["title"] == "Plan" and artifact["version"] == 1
    aid = artifact["id"]

    v2 = await m.patch(f"{url}/{aid}", json={"content": "Draft two", "expected_version": 1})
    assert v2.status_code == 200 and v2.json()["version"] == 2
    stale = await o.patch(f"{url}/{aid}", json={"content": "Draft 2b", "expected_version": 1})
    assert stale.status_code == 409
    assert error_code(stale) == "version_conflict"
    v3 = await o.patch(f"{url}/{aid}", json={"title": "Plan B"})
    assert v3.json()["version"] == 3 and v3.json()["content"] == "Draft two"

    versions = (await m.get(f"{url}/{aid}/versions")).json()
    assert [v["version"] for v in versions["items"]] == [3, 2, 1]
    first = (await m.get(f"{url}/{aid}/versions/1")).json()
    assert first["content"] == "Draft one" and first["title"] == "Plan"
    assert (await m.get(f"{url}/{aid}/versions/9")).status_code == 404

    listed = (await m.get(url)).json()
    assert listed["total"] == 1 and "content" not in listed["items"][0]
    assert (await (await api.client(outsider)).get(f"{url}/{aid}")).status_code == 403

    # Only the creator (or a moderator) deletes.
    assert (await m.delete(f"{url}/{aid}")).status_code == 403
    assert (await o.delete(f"{url}/{aid}")).status_code == 204
    assert (await m.get(f"{url}/{aid}")).status_code == 404
    assert (await m.get(url)).json()["total"] == 0

    events = await stream_events(app, room.id, since)
    assert [e["type"] for e in events] == [
        "artifact.changed",
        "artifact.changed",
        "artifact.changed",
        "artifact.deleted",
    ]


async def test_size_limits(api: Api) -> None:
    user = await api.user()
    room = await api.room(user)
    client = await api.client(user)
    url = f"/api/v1/rooms/{room.id}/artifacts"
    limit = api.settings.max_artifact_chars
    too_long = await client.post(url, json={"title": "big", "content": "x" * (limit + 1)})
    assert too_long.status_code == 413
    assert error_code(too_long) == "artifact_too_large"
    at_limit = await client.post(url, json={"title": "big", "content": "y" * limit})
    assert at_limit.status_code == 201
    aid = at_limit.json()["id"]
    grow = await client.patch(f"{url}/{aid}", json={"content": "z" * (limit + 1)})
    assert grow.status_code == 413

    huge_body = b'{"title": "t", "content": "' + b"a" * (api.settings.max_request_bytes + 1) + b'"}'
    response = await client.post(
        url, content=huge_body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert error_code(response) == "payload_too_large"
    assert (await client.get(url)).json()["total"] == 1


async def test_streamed_body_without_length_is_limited(api: Api) -> None:
    user = await api.user()
    room = await api.room(user)
    client = await api.client(user)
    size = api.settings.max_request_bytes

    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"title": "t", "content": "'
        for _ in range(size // 65536 + 2):
            yield b"b" * 65536
        yield b'"}'

    response = await client.post(
        f"/api/v1/rooms/{room.id}/artifacts",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert error_code(response) == "payload_too_large"
