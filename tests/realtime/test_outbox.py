"""The transactional outbox of graphrag:events: real PostgreSQL, real Redis servers.

Each test here runs against a database of its own (created on the embedded PostgreSQL and
migrated), so the relay of the session's API app, which serves the shared test database, can
never send these rows and these relays never send anyone else's.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.engine import make_url

from dbschema.migrate import upgrade
from dbschema.models import EventOutbox, Room, UserRole
from knowledge import rooms
from knowledge.platform import Platform, database_url, open_platform, redis_url, with_driver
from knowledge.settings import Settings
from realtime.events import MessageCreated, RoomDeleted, parse_event
from realtime.outbox import OutboxRelay, stage, stream_fields
from realtime.publisher import EventPublisher
from realtime.reader import read_after
from serving.app import create_app
from tests.e2e.harness import RedisServer
from tests.serving.conftest import client_with, committed_person, committed_room, state_of


@pytest.fixture(scope="module")
def own_database(settings: Settings) -> Iterator[str]:
    """A migrated database of this module's own on the embedded server (its URL)."""
    base = make_url(with_driver(database_url(settings), "psycopg"))
    name = f"outbox_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name)
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url.set(drivername="postgresql").render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def own_settings(settings: Settings, own_database: str) -> Settings:
    return settings.model_copy(update={"database_url": own_database})


@pytest.fixture
async def own_platform(own_settings: Settings) -> AsyncIterator[Platform]:
    async with open_platform(own_settings) as platform:
        yield platform


@pytest.fixture
async def publisher(settings: Settings) -> AsyncIterator[EventPublisher]:
    """A publisher on the test Redis, on a stream of the test's own."""
    redis = Redis.from_url(redis_url(settings))
    stream = f"test:outbox:{uuid.uuid4().hex[:8]}"
    yield EventPublisher(redis, stream=stream)
    await redis.delete(stream)
    await redis.aclose()


async def _staged(platform: Platform, count: int) -> list[int]:
    room_id = str(uuid.uuid4())
    async with platform.session() as session:
        ids = await stage(
            session, *(MessageCreated(room_id=room_id, message_id=i) for i in range(count))
        )
        await session.commit()
    return ids


async def _entries(publisher: EventPublisher) -> list[tuple[str, dict[str, str]]]:
    raw = await publisher.redis.xrange(publisher.stream, "-", "+")
    return [(i.decode(), {k.decode(): v.decode() for k, v in f.items()}) for i, f in raw]


async def test_relays_share_the_outbox_without_sending_a_row_twice(
    own_platform: Platform, publisher: EventPublisher
) -> None:
    ids = await _staged(own_platform, 40)
    relays = [OutboxRelay(own_platform.session, publisher, batch_size=4) for _ in range(3)]
    sent_by: list[list[int]] = [[] for _ in relays]

    async def drain(index: int) -> None:
        while sent := await relays[index].deliver(ids):
            sent_by[index] += sent

    await asyncio.gather(*(drain(i) for i in range(len(relays))))

    # every row was sent by exactly one relay (the row locks are the lease) ...
    everything = [i for sent in sent_by for i in sent]
    assert sorted(everything) == ids
    assert sum(1 for sent in sent_by if sent) >= 2, "the relays did not run side by side"
    # ... appended once each, carrying its outbox id, and marked sent with its stream id
    entries = await _entries(publisher)
    assert sorted(int(f["outbox_id"]) for _, f in entries) == ids
    async with own_platform.session() as session:
        rows = (
            (await session.execute(select(EventOutbox).where(EventOutbox.id.in_(ids))))
            .scalars()
            .all()
        )
    stream_ids = {int(f["outbox_id"]): entry_id for entry_id, f in entries}
    assert all(r.sent_at is not None and r.stream_id == stream_ids[r.id] for r in rows)


async def test_a_row_appended_by_a_relay_that_died_before_its_commit_is_not_appended_again(
    own_platform: Platform, publisher: EventPublisher
) -> None:
    [outbox_id] = await _staged(own_platform, 1)
    async with own_platform.session() as session:
        row = await session.get(EventOutbox, outbox_id)
        assert row is not None
        # a relay appended the row, then died before marking it sent
        [first] = await publisher.append_once([(outbox_id, stream_fields(row))])
    relay = OutboxRelay(own_platform.session, publisher)
    assert await relay.deliver([outbox_id]) == {outbox_id: first}
    entries = await _entries(publisher)
    assert [entry_id for entry_id, _ in entries] == [first]
    assert entries[0][1]["outbox_id"] == str(outbox_id)


def test_the_reader_drops_an_entry_repeating_an_outbox_id(settings: Settings) -> None:
    redis = SyncRedis.from_url(redis_url(settings))
    stream = f"test:reader:{uuid.uuid4().hex[:8]}"
    try:
        fields = {**MessageCreated(room_id="r", message_id=1).to_fields(), "outbox_id": "7"}
        other = {**MessageCreated(room_id="r", message_id=2).to_fields(), "outbox_id": "8"}
        for entry in (fields, other, fields):
            redis.xadd(stream, entry)  # type: ignore[arg-type]
        batch = read_after(redis, "0-0", stream=stream)
        assert [e.message_id for _, e in batch.events] == [1, 2]  # type: ignore[attr-defined]
        assert batch.duplicates == 1
    finally:
        redis.delete(stream)
        redis.close()


async def test_sent_rows_are_pruned_after_the_retention_and_unsent_rows_never(
    own_platform: Platform, publisher: EventPublisher
) -> None:
    old, recent, unsent = await _staged(own_platform, 3)
    relay = OutboxRelay(own_platform.session, publisher, retention_seconds=3600)
    await relay.deliver([old, recent])
    async with own_platform.session() as session:
        await session.execute(
            update(EventOutbox)
            .where(EventOutbox.id == old)
            .values(sent_at=text("clock_timestamp() - interval '2 hours'"))
        )
        await session.commit()
    await relay.prune()
    async with own_platform.session() as session:
        left = set(
            (
                await session.execute(
                    select(EventOutbox.id).where(EventOutbox.id.in_([old, recent, unsent]))
                )
            )
            .scalars()
            .all()
        )
    assert left == {recent, unsent}


# --- through the API, with a Redis server the test stops and starts ---------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def _wait_for_entries(
    url: str, room_id: str, count: int, timeout: float
) -> list[tuple[str, dict[str, str]]]:
    """The room's entries in graphrag:events, once there are ``count`` (bounded wait)."""
    client = SyncRedis.from_url(url, socket_connect_timeout=1)
    deadline = time.monotonic() + timeout
    found: list[tuple[str, dict[str, str]]] = []
    try:
        while time.monotonic() < deadline:
            try:
                raw = client.xrange("graphrag:events", "-", "+")
            except (OSError, RedisError):  # not up yet, or still loading its append-only file
                raw = []
            found = [
                (i.decode(), {k.decode(): v.decode() for k, v in f.items()})
                for i, f in raw  # type: ignore[union-attr]
            ]
            found = [(i, f) for i, f in found if f["room_id"] == room_id]
            if len(found) >= count:
                return found
            time.sleep(0.2)
    finally:
        client.close()
    raise AssertionError(f"{len(found)} of {count} events of room {room_id} reached the stream")


async def test_events_committed_while_redis_is_down_reach_the_stream_once_it_is_back(
    own_settings: Settings, redis_server: RedisServer
) -> None:
    settings = own_settings.model_copy(
        update={"redis_url": redis_server.url, "secret_key": "outbox-tests-secret-0123456789abcdef"}
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        state = state_of(app)
        person = await committed_person(state.platform, settings, UserRole.admin)
        room_id = await committed_room(state.platform, person)
        redis_server.stop()
        async with client_with(app, person.cookies) as client:
            posted = await client.post(
                f"/api/v1/rooms/{room_id}/messages", json={"content": "Septimia met Odaenathus."}
            )
            build = await client.post(f"/api/v1/rooms/{room_id}/graph/build", json={"full": True})
        # the change and the build request are accepted whatever happens to the event bus
        assert posted.status_code == 201, posted.text
        assert build.status_code == 202, build.text
        assert build.json()["stream_id"] is None
        async with state.platform.session() as session:
            rows = (
                (
                    await session.execute(
                        select(EventOutbox)
                        .where(EventOutbox.room_id == uuid.UUID(room_id))
                        .order_by(EventOutbox.id)
                    )
                )
                .scalars()
                .all()
            )
        assert [r.event_type for r in rows] == ["message.created", "room.rebuild_requested"]
        assert all(r.sent_at is None for r in rows)
        assert rows[0].attempts >= 1 and rows[0].last_error

        redis_server.start()
        # no later change in the room: the relay alone brings both events to the stream
        entries = await asyncio.to_thread(_wait_for_entries, redis_server.url, room_id, 2, 60)
        events = [parse_event(f) for _, f in entries]
        assert [e.type for e in events] == ["message.created", "room.rebuild_requested"]
        assert events[0].message_id == posted.json()["id"]  # type: ignore[union-attr]
        assert [int(f["outbox_id"]) for _, f in entries] == [r.id for r in rows]

        async with state.platform.session() as session:
            sent = {
                r.id: r.stream_id
                for r in (
                    await session.execute(
                        select(EventOutbox).where(EventOutbox.id.in_([r.id for r in rows]))
                    )
                ).scalars()
            }
        assert sent == {int(f["outbox_id"]): entry_id for entry_id, f in entries}


async def test_staged_events_are_rolled_back_with_their_transaction(own_platform: Platform) -> None:
    room_id = str(uuid.uuid4())
    async with own_platform.session() as session:
        [outbox_id] = await stage(session, RoomDeleted(room_id=room_id))
        await session.rollback()
    async with own_platform.session() as session:
        assert await session.get(EventOutbox, outbox_id) is None


async def test_deleting_a_course_appends_a_room_deleted_event_per_room(
    own_settings: Settings, redis_server: RedisServer
) -> None:
    settings = own_settings.model_copy(
        update={"redis_url": redis_server.url, "secret_key": "outbox-tests-secret-0123456789abcdef"}
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        state = state_of(app)
        admin = await committed_person(state.platform, settings, UserRole.admin)
        first = await committed_room(state.platform, admin)
        async with state.platform.session() as session:
            course_id = (await session.get(Room, uuid.UUID(first))).course_id  # type: ignore[union-attr]
            second = await rooms.create_room(session, course_id, "second room")
            await session.commit()
        async with client_with(app, admin.cookies) as client:
            response = await client.delete(f"/api/v1/courses/{course_id}")
        assert response.status_code == 204, response.text
        for room_id in (first, str(second.id)):
            [(_, fields)] = await asyncio.to_thread(
                _wait_for_entries, redis_server.url, room_id, 1, 60
            )
            assert parse_event(fields) == RoomDeleted.model_validate_json(fields["data"])
            assert fields["type"] == "room.deleted"
