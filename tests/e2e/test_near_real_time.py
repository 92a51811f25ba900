"""Near-real-time refresh end to end: real processes (coagent dev: API, Dagster webserver and
daemon with the events sensor; a real Redis), messages posted over HTTP, answers from the graph
query. Waits are bounded; nothing is timed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.harness import ApiClient, Platform, wait_until

REFRESH_TIMEOUT = 180


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    running = Platform(debounce_seconds=1.0)
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api(platform: Platform) -> Iterator[ApiClient]:
    client = platform.client()
    yield client
    client.close()


def _sees(api: ApiClient, room_id: str, name: str) -> bool:
    return any(name in e for e in api.entities(room_id, f"What about {name.title()}?"))


def test_posted_messages_become_answerable_then_edits_and_deletes_remove_them(
    platform: Platform, api: ApiClient
) -> None:
    room_id = api.new_room()
    first = api.say(room_id, "Zenobia of Palmyra wrote to Aurelian from Antioch.")
    doomed = api.say(room_id, "Zenobia trusted Longinus in Palmyra; Longinus planned Antioch.")
    api.say(room_id, "Aurelian answered Zenobia: Antioch will open its gates.")

    wait_until(lambda: _sees(api, room_id, "zenobia"), REFRESH_TIMEOUT, 2, "zenobia in answers")
    assert _sees(api, room_id, "longinus")

    # delete the only message naming Longinus: its entity goes
    response = api.http.delete(f"/rooms/{room_id}/messages/{doomed}")
    assert response.status_code == 204, response.text
    wait_until(
        lambda: not _sees(api, room_id, "longinus"), REFRESH_TIMEOUT, 2, "longinus to be gone"
    )
    # edit a message so it names someone new instead
    response = api.http.patch(
        f"/rooms/{room_id}/messages/{first}",
        json={"content": "Vaballathus of Palmyra wrote to Aurelian from Emesa, Vaballathus said."},
    )
    assert response.status_code == 200, response.text
    wait_until(lambda: _sees(api, room_id, "vaballathus"), REFRESH_TIMEOUT, 2, "the edit")
    assert _sees(api, room_id, "emesa")


def test_a_redis_restart_loses_nothing(platform: Platform, api: ApiClient) -> None:
    assert platform.redis is not None
    room_id = api.new_room()
    api.say(room_id, "Odaenathus of Palmyra defeated Shapur near Ctesiphon, Odaenathus wrote.")
    # Redis goes down before the sensor could act on the event (it is in the append-only file)
    platform.redis.stop()
    during = api.http.post(
        f"/rooms/{room_id}/messages",
        json={"content": "Septimia of Palmyra met Odaenathus at Emesa; Septimia stayed."},
    )
    # the message itself is stored whatever happens to the event bus
    assert during.status_code == 201, during.text
    platform.redis.start()
    api.say(room_id, "Odaenathus returned to Palmyra with Septimia.")
    wait_until(lambda: _sees(api, room_id, "odaenathus"), REFRESH_TIMEOUT, 2, "odaenathus")
    wait_until(lambda: _sees(api, room_id, "septimia"), REFRESH_TIMEOUT, 2, "septimia")
