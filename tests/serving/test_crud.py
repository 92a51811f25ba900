"""Users, courses, rooms and membership: CRUD with pagination."""

from __future__ import annotations

import uuid

from dbschema.models import UserRole
from tests.serving.conftest import PASSWORD, Api, error_code


async def test_admin_manages_users_with_pagination(api: Api) -> None:
    admin = await api.client(await api.user(UserRole.admin))
    marker = uuid.uuid4().hex[:8]
    created = []
    for i in range(5):
        response = await admin.post(
            "/api/v1/users",
            json={
                "email": f"Person{i}.{marker}@Example.com",
                "full_name": f"Person {i}",
                "password": PASSWORD,
                "role": "teacher" if i == 0 else "student",
            },
        )
        assert response.status_code == 201, response.text
        created.append(response.json())
    assert created[0]["email"] == f"person0.{marker}@example.com"
    assert "hashed_password" not in created[0] and "password" not in created[0]

    first = (await admin.get("/api/v1/users", params={"q": marker, "limit": 2})).json()
    assert first["total"] == 5 and first["limit"] == 2 and first["offset"] == 0
    assert len(first["items"]) == 2
    rest = (await admin.get("/api/v1/users", params={"q": marker, "limit": 2, "offset": 2})).json()
    last = (await admin.get("/api/v1/users", params={"q": marker, "limit": 2, "offset": 4})).json()
    seen = [u["id"] for page in (first, rest, last) for u in page["items"]]
    assert sorted(seen) == sorted(u["id"] for u in created)

    duplicate = await admin.post(
        "/api/v1/users",
        json={"email": created[1]["email"], "full_name": "Again", "password": PASSWORD},
    )
    assert duplicate.status_code == 409
    assert error_code(duplicate) == "email_taken"

    target = created[1]["id"]
    updated = await admin.patch(
        f"/api/v1/users/{target}", json={"role": "teacher", "full_name": "P"}
    )
    assert updated.status_code == 200
    assert updated.json()["role"] == "teacher" and updated.json()["full_name"] == "P"
    assert (await admin.get(f"/api/v1/users/{target}")).json()["role"] == "teacher"
    assert (await admin.delete(f"/api/v1/users/{target}")).status_code == 204
    assert (await admin.get(f"/api/v1/users/{target}")).status_code == 404


async def test_bad_user_input_is_422(api: Api) -> None:
    admin = await api.client(await api.user(UserRole.admin))
    for body in (
        {"email": "no-at-sign", "full_name": "X", "password": PASSWORD},
        {"email": "a@b.c", "full_name": "", "password": PASSWORD},
        {"email": "a@b.c", "full_name": "X", "password": "short"},
        {"email": "a@b.c", "full_name": "X", "password": PASSWORD, "role": "agent"},
        {"email": "a@b.c", "full_name": "X\x00", "password": PASSWORD},
    ):
        response = await admin.post("/api/v1/users", json=body)
        assert response.status_code == 422, body
        assert error_code(response) == "validation_error"
        assert response.json()["error"]["details"]
    not_json = await admin.post(
        "/api/v1/users", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 422


async def test_students_cannot_manage_users(api: Api) -> None:
    student = await api.user()
    other = await api.user()
    client = await api.client(student)
    assert (await client.get("/api/v1/users")).status_code == 403
    assert (await client.get(f"/api/v1/users/{other.id}")).status_code == 403
    assert (await client.get(f"/api/v1/users/{student.id}")).status_code == 200
    assert (
        await client.patch(f"/api/v1/users/{student.id}", json={"role": "admin"})
    ).status_code == 403
    me = await client.patch("/api/v1/users/me", json={"full_name": "New Name"})
    assert me.json()["full_name"] == "New Name"


async def test_disabling_a_user_ends_their_sessions(api: Api) -> None:
    admin = await api.client(await api.user(UserRole.admin))
    victim = await api.user()
    victim_client = await api.client(victim)
    assert (await victim_client.get("/api/v1/users/me")).status_code == 200
    response = await admin.patch(f"/api/v1/users/{victim.id}", json={"is_active": False})
    assert response.status_code == 200 and response.json()["is_active"] is False
    assert (await victim_client.get("/api/v1/users/me")).status_code == 401


async def test_courses_rooms_and_membership(api: Api) -> None:
    teacher = await api.user(UserRole.teacher)
    student = await api.user()
    outsider = await api.user()
    t = await api.client(teacher)
    s = await api.client(student)
    o = await api.client(outsider)

    assert (await s.post("/api/v1/courses", json={"name": "nope"})).status_code == 403
    course = (await t.post("/api/v1/courses", json={"name": "Drama", "description": "d"})).json()
    assert course["owner_id"] == str(teacher.id)
    course_id = course["id"]
    assert (await s.get(f"/api/v1/courses/{course_id}")).status_code == 403

    rooms_created = []
    for name in ("Act I", "Act II", "Act III"):
        response = await t.post("/api/v1/rooms", json={"course_id": course_id, "name": name})
        assert response.status_code == 201, response.text
        rooms_created.append(response.json())
    assert (
        await s.post("/api/v1/rooms", json={"course_id": course_id, "name": "x"})
    ).status_code == 403
    room_id = rooms_created[0]["id"]

    listed = (await t.get("/api/v1/rooms", params={"course_id": course_id, "limit": 2})).json()
    assert listed["total"] == 3 and len(listed["items"]) == 2
    assert (await s.get("/api/v1/rooms")).json()["total"] == 0

    added = await t.put(f"/api/v1/rooms/{room_id}/members", json={"user_id": str(student.id)})
    assert added.status_code == 200 and added.json()["role"] == "member"
    mine = (await s.get("/api/v1/rooms")).json()
    assert [r["id"] for r in mine["items"]] == [room_id]
    assert (await s.get(f"/api/v1/courses/{course_id}")).status_code == 200
    assert [c["id"] for c in (await s.get("/api/v1/courses")).json()["items"]] == [course_id]
    members = (await s.get(f"/api/v1/rooms/{room_id}/members")).json()
    assert {m["user"]["id"] for m in members["items"]} == {str(teacher.id), str(student.id)}
    # Members read; only moderators and course teachers manage.
    assert (await s.patch(f"/api/v1/rooms/{room_id}", json={"name": "mine"})).status_code == 403
    renamed = await t.patch(f"/api/v1/rooms/{room_id}", json={"name": "Act One"})
    assert renamed.json()["name"] == "Act One"
    assert (await o.get(f"/api/v1/rooms/{room_id}")).status_code == 403

    # Course membership: a teacher member manages the course like its owner.
    co_teacher = await api.user(UserRole.teacher)
    put = await t.put(
        f"/api/v1/courses/{course_id}/members",
        json={"user_id": str(co_teacher.id), "role": "teacher"},
    )
    assert put.status_code == 200
    ct = await api.client(co_teacher)
    assert (
        await ct.patch(f"/api/v1/courses/{course_id}", json={"name": "Drama 2"})
    ).status_code == 200
    assert (await ct.get(f"/api/v1/rooms/{room_id}")).status_code == 200
    course_members = (await t.get(f"/api/v1/courses/{course_id}/members")).json()
    assert course_members["total"] == 1
    assert (
        await t.delete(f"/api/v1/courses/{course_id}/members/{co_teacher.id}")
    ).status_code == 204
    assert (await ct.get(f"/api/v1/rooms/{room_id}")).status_code == 403

    removed = await t.delete(f"/api/v1/rooms/{room_id}/members/{student.id}")
    assert removed.status_code == 204
    assert (await s.get(f"/api/v1/rooms/{room_id}")).status_code == 403
    assert (await t.delete(f"/api/v1/rooms/{room_id}/members/{student.id}")).status_code == 404

    assert (await t.delete(f"/api/v1/rooms/{room_id}")).status_code == 204
    assert (await t.get(f"/api/v1/rooms/{room_id}")).status_code == 404
    assert (await t.delete(f"/api/v1/courses/{course_id}")).status_code == 204
    assert (await t.get(f"/api/v1/rooms/{rooms_created[1]['id']}")).status_code == 404


async def test_unknown_ids_and_routes(api: Api) -> None:
    admin = await api.client(await api.user(UserRole.admin))
    assert (await admin.get(f"/api/v1/courses/{uuid.uuid4()}")).status_code == 404
    response = await admin.put(
        f"/api/v1/courses/{(await api.course()).id}/members",
        json={"user_id": str(uuid.uuid4()), "role": "student"},
    )
    assert response.status_code == 404
    missing_route = await admin.get("/api/v1/nothing-here")
    assert missing_route.status_code == 404
    assert error_code(missing_route) == "not_found"
    wrong_method = await admin.put("/api/v1/users")
    assert wrong_method.status_code == 405
    assert error_code(wrong_method) == "method_not_allowed"
