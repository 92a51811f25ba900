"""Property-based requests generated from the OpenAPI schema: no input gives a 5xx.

Runs against the live uvicorn server, logged in as a super admin (so requests reach the
services, not just the auth check), with room ids replaced by a real room half of the time.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from dbschema.models import UserRole
from knowledge.platform import open_platform
from knowledge.settings import Settings
from serving.app import create_app
from serving.auth.security import CSRF_COOKIE, CSRF_HEADER
from tests.serving.conftest import LiveServer, committed_person, committed_room

schema = schemathesis.openapi.from_dict(create_app().openapi())
_calls = itertools.count()


@pytest.fixture(scope="module")
def fuzz_target(live: LiveServer, api_settings: Settings) -> dict[str, Any]:
    async def prepare() -> dict[str, Any]:
        async with open_platform(api_settings) as platform:
            admin = await committed_person(platform, api_settings, UserRole.super_admin)
            room = await committed_room(platform, admin)
        return {"cookies": admin.cookies, "room_id": room, "url": live.url}

    return asyncio.run(prepare())


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_input_gives_a_server_error(case: Any, fuzz_target: dict[str, Any]) -> None:
    params = case.path_parameters or {}
    deletes_the_room = case.method == "DELETE" and case.path == "/api/v1/rooms/{room_id}"
    if "room_id" in params and not deletes_the_room and next(_calls) % 3:
        params["room_id"] = fuzz_target["room_id"]
    cookies = fuzz_target["cookies"]
    if case.path.endswith("/auth/logout"):
        # Logging out would end the session every other case runs in: fuzz it anonymously.
        response = case.call(base_url=fuzz_target["url"], timeout=60)
    else:
        response = case.call(
            base_url=fuzz_target["url"],
            cookies=cookies,
            headers={CSRF_HEADER: cookies[CSRF_COOKIE]},
            timeout=60,
        )
    case.validate_response(response, checks=[not_a_server_error])
