from realtime.debounce import DebounceState, stream_id_ms
from realtime.events import MessageCreated, RoomRebuildRequested


def test_quiet_room_becomes_due_after_the_debounce() -> None:
    state = DebounceState()
    state.add("1000-0", MessageCreated(room_id="a", message_id=1))
    state.add("4000-0", MessageCreated(room_id="a", message_id=2))
    assert state.due(now_ms=13_999, debounce_ms=10_000, max_wait_ms=60_000) == []
    [due] = state.due(now_ms=14_000, debounce_ms=10_000, max_wait_ms=60_000)
    assert (due.room_id, due.last_id, due.events, due.rebuild) == ("a", "4000-0", 2, False)


def test_busy_room_is_due_after_the_max_wait() -> None:
    state = DebounceState()
    for second in range(0, 61):
        state.add(f"{second * 1000}-0", MessageCreated(room_id="busy", message_id=second))
    # never quiet for 10 s, but the first event is 60 s old
    assert [d.room_id for d in state.due(60_500, 10_000, 60_000)] == ["busy"]
    assert state.due(59_000, 10_000, 60_000) == []


def test_rebuild_request_and_cursor_round_trip() -> None:
    state = DebounceState()
    state.add("5-1", MessageCreated(room_id="a", message_id=1))
    state.add("6-0", RoomRebuildRequested(room_id="a", full=True))
    state.add("7-0", MessageCreated(room_id="b", message_id=2))
    restored = DebounceState.from_cursor(state.to_cursor())
    assert restored == state
    assert restored.last_id == "7-0"
    due = {d.room_id: d for d in restored.due(100_000, 10, 60_000)}
    assert due["a"].rebuild and not due["b"].rebuild
    restored.done("a")
    assert set(restored.rooms) == {"b"}


def test_stream_ids_compare_numerically() -> None:
    state = DebounceState(last_id="999-9")
    state.add("1000-0", MessageCreated(room_id="a", message_id=1))
    assert state.last_id == "1000-0"
    assert stream_id_ms("1700000000123-7") == 1700000000123
    assert DebounceState.from_cursor(None) == DebounceState()
