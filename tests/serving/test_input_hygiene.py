"""Text PostgreSQL cannot store (NUL, invalid UTF-8, lone surrogates) is refused with 422
wherever it comes from — query string, path, login body, any JSON body field or key, a form
body — and changes nothing; a non-UTF-8 body is a documented 422; ``OPTIONS`` and 405 name
every method a path serves."""

from __future__ import annotations

import uuid

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from dbschema.models import AuthSession, Course, UserRole
from tests.serving.conftest import PASSWORD, Api, client_with, error_code

JSON = {"content-type": "application/json"}


def _refused_at(response, loc: list[str]) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.text
    assert error_code(response) == "validation_error"
    assert response.json()["error"]["details"][0]["loc"] == loc


async def test_nul_in_the_login_body_is_a_422_not_a_500(api: Api, app: FastAPI) -> None:
    user = await api.user(password=PASSWORD)
    sessions = await api.session.scalar(select(func.count()).select_from(AuthSession))
    anonymous = client_with(app)
    for body in (
        {"email": "x\u0000@example.com", "password": "p"},
        {"email": user.email, "password": PASSWORD + "\u0000"},
    ):
        response = await anonymous.post("/api/v1/auth/login", json=body)
        assert response.status_code == 422, response.text
        assert error_code(response) == "validation_error"
    # An escaped lone surrogate (json.dumps cannot write one): refused too.
    surrogate = b'{"email": "x\\ud800@example.com", "password": "p"}'
    response = await anonymous.post("/api/v1/auth/login", content=surrogate, headers=JSON)
    assert response.status_code == 422
    assert await api.session.scalar(select(func.count()).select_from(AuthSession)) == sessions


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ("q=a%00b", ["query", "q"]),  # psycopg raises DataError on a NUL before the query runs
        ("q%00=1", ["query", "q"]),
        ("q=a%ED%A0%80b", ["query"]),  # an encoded lone surrogate: not UTF-8
        ("q=a%FFb", ["query"]),
        ("limit=1%00", ["query", "limit"]),
    ],
)
async def test_bad_text_in_the_query_string(api: Api, query: str, loc: list[str]) -> None:
    admin = await api.client(await api.user(UserRole.admin))
    _refused_at(await admin.get(f"/api/v1/users?{query}"), loc)
    assert (await admin.get("/api/v1/users?q=%C3%A9t%C3%A9")).status_code == 200  # UTF-8 is fine


async def test_bad_text_in_the_path(api: Api) -> None:
    admin = await api.client(await api.user(UserRole.admin))
    _refused_at(await admin.get("/api/v1/users/a%00b"), ["path"])
    _refused_at(await admin.get("/api/v1/rooms/%ED%A0%80/messages"), ["path"])


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b'{"name": "a\\u0000b"}', ["body", "name"]),
        (b'{"name": "ok", "description": "x\\ud800"}', ["body", "description"]),
        (b'{"name": "ok", "extra": {"k\\u0000": 1}}', ["body", "extra"]),
        (b'{"name": "ok", "extra": [["", "\\udc00"]]}', ["body", "extra", "0", "1"]),
        (b'{"name": "a\\\\\\u0000"}', ["body", "name"]),  # an escaped backslash, then a NUL
        (b'{"name": "caf\xe9"}', ["body"]),  # Latin-1, not UTF-8
    ],
)
async def test_bad_text_in_a_json_body_changes_nothing(
    api: Api, body: bytes, loc: list[str]
) -> None:
    teacher = await api.client(await api.user(UserRole.teacher))
    before = await api.session.scalar(select(func.count()).select_from(Course))
    _refused_at(await teacher.post("/api/v1/courses", content=body, headers=JSON), loc)
    assert await api.session.scalar(select(func.count()).select_from(Course)) == before


async def test_what_only_looks_like_a_nul_escape_is_stored(api: Api) -> None:
    teacher = await api.client(await api.user(UserRole.teacher))
    # ``\\u0000`` in JSON is a backslash followed by "u0000": ordinary text.
    created = await teacher.post(
        "/api/v1/courses", content=b'{"name": "a\\\\u0000 \\ud83d\\ude00"}', headers=JSON
    )
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "a\\u0000 \U0001f600"


async def test_a_form_body_is_checked_too(api: Api) -> None:
    teacher = await api.client(await api.user(UserRole.teacher))
    form = {"content-type": "application/x-www-form-urlencoded"}
    _refused_at(
        await teacher.post("/api/v1/courses", content=b"name=a%00b", headers=form), ["body", "name"]
    )
    _refused_at(await teacher.post("/api/v1/courses", content=b"name=%FF", headers=form), ["body"])


async def test_the_422_is_documented_on_every_operation(app: FastAPI) -> None:
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            assert "422" in operation["responses"], (method, path)
            assert "400" in operation["responses"], (method, path)


async def test_options_and_405_list_every_method_of_the_path(api: Api) -> None:
    admin = await api.client(await api.user(UserRole.admin))
    expected = {
        "/api/v1/users": "GET, OPTIONS, POST",
        "/api/v1/users/me": "GET, OPTIONS, PATCH",
        f"/api/v1/users/{uuid.uuid4()}": "DELETE, GET, OPTIONS, PATCH",
        f"/api/v1/rooms/{uuid.uuid4()}/members": "GET, OPTIONS, PUT",
    }
    for path, allow in expected.items():
        options = await admin.options(path)
        assert options.status_code == 204, path
        assert options.headers["allow"] == allow
        put_or_post = "POST" if "PUT" in allow else "PUT"
        refused = await admin.request(put_or_post, path)
        assert refused.status_code == 405, path
        assert refused.headers["allow"] == allow
        assert error_code(refused) == "method_not_allowed"
    # DELETE /users/me is not DELETE /users/{user_id} with user_id="me".
    me = await admin.delete("/api/v1/users/me")
    assert me.status_code == 405 and "DELETE" not in me.headers["allow"]
    # A CORS preflight is still answered by the CORS middleware.
    preflight = await admin.options(
        "/api/v1/users",
        headers={"Origin": "http://spa.test", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://spa.test"
