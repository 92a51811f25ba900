import itertools

from knowledge.chunking import (
    SourceArtifact,
    SourceMessage,
    chunk_artifact,
    chunk_messages,
    chunk_room,
)
from knowledge.tokens import count_tokens


def _messages(n: int, words: int = 12) -> list[SourceMessage]:
    return [
        SourceMessage(i, f"Speaker{i % 4}", " ".join(f"word{i}_{j}" for j in range(words)))
        for i in range(1, n + 1)
    ]


def test_empty_room_has_no_chunks() -> None:
    assert chunk_room("r", [], [], 100, 20) == []
    assert chunk_messages("r", [SourceMessage(1, "a", "   ")], 100, 20) == []
    assert chunk_artifact("r", SourceArtifact("a", "t", ""), 100, 20) == []


def test_messages_are_never_split_and_chunks_respect_the_budget() -> None:
    messages = _messages(120)
    chunks = chunk_messages("r", messages, 200, 40)
    assert len(chunks) > 5
    covered = set()
    for chunk in chunks:
        assert chunk.n_tokens <= 200
        assert count_tokens(chunk.text) <= 200
        for mid in chunk.message_ids:
            # every covered message appears whole in the chunk text
            message = messages[mid - 1]
            assert f"{message.speaker}: {message.content}" in chunk.text
        covered.update(chunk.message_ids)
    assert covered == {m.id for m in messages}


def test_consecutive_chunks_overlap_by_whole_messages() -> None:
    chunks = chunk_messages("r", _messages(60, words=5), 120, 40)
    overlaps = [set(a.message_ids) & set(b.message_ids) for a, b in itertools.pairwise(chunks)]
    assert any(overlaps)
    for a, b in itertools.pairwise(chunks):
        shared = set(a.message_ids) & set(b.message_ids)
        # carried messages are the tail of the previous chunk and the head of the next
        if shared:
            assert list(a.message_ids[-len(shared) :]) == list(b.message_ids[: len(shared)])


def test_one_huge_message_is_split_alone() -> None:
    huge = SourceMessage(7, "Big", "lorem ipsum dolor " * 400)
    messages = [SourceMessage(6, "A", "before"), huge, SourceMessage(8, "B", "after")]
    chunks = chunk_messages("r", messages, 100, 10)
    huge_chunks = [c for c in chunks if c.message_ids == (7,)]
    assert len(huge_chunks) >= 10
    assert all(c.n_tokens <= 100 for c in huge_chunks)
    assert chunks[0].message_ids == (6,)
    assert chunks[-1].message_ids == (8,)


def test_unicode_text_survives_chunking() -> None:
    text = "Grüße aus Köln 🌍, 東京で会いましょう, مرحبا بالعالم"
    messages = [SourceMessage(i, "Zoë", f"{text} #{i}") for i in range(1, 30)]
    chunks = chunk_messages("r", messages, 80, 20)
    assert chunks
    for chunk in chunks:
        assert "Zoë: Grüße aus Köln 🌍" in chunk.text
    huge = chunk_messages("r", [SourceMessage(1, "Zoë", "🌍東京" * 300)], 50, 5)
    assert all(c.n_tokens <= 50 for c in huge)


def test_chunk_ids_are_stable_and_room_scoped() -> None:
    messages = _messages(50)
    a = chunk_messages("room-a", messages, 150, 30)
    again = chunk_messages("room-a", messages, 150, 30)
    other = chunk_messages("room-b", messages, 150, 30)
    assert [c.id for c in a] == [c.id for c in again]
    assert not {c.id for c in a} & {c.id for c in other}


def test_appending_a_message_keeps_earlier_chunk_ids() -> None:
    messages = _messages(80)
    before = chunk_messages("r", messages, 150, 30)
    after = chunk_messages("r", [*messages, SourceMessage(81, "New", "a late remark")], 150, 30)
    unchanged = {c.id for c in before} & {c.id for c in after}
    assert len(unchanged) >= len(before) - 1


def test_an_edit_changes_only_nearby_chunks() -> None:
    messages = _messages(200)
    before = {c.id for c in chunk_messages("r", messages, 150, 30)}
    edited = list(messages)
    edited[20] = SourceMessage(21, "Speaker1", "completely different and much longer " * 3)
    after = {c.id for c in chunk_messages("r", edited, 150, 30)}
    # content-defined boundaries resynchronize: most chunks keep their ids
    assert len(before - after) <= len(before) // 3


def test_artifacts_are_chunked_separately_and_keep_their_id() -> None:
    artifact = SourceArtifact("art-1", "Design notes", "The graph store uses Neo4j. " * 200)
    chunks = chunk_room("r", _messages(10), [artifact], 120, 20)
    art_chunks = [c for c in chunks if c.artifact_id == "art-1"]
    assert len(art_chunks) > 3
    assert all(c.message_ids == () for c in art_chunks)
    assert all(c.text.startswith("Artifact: Design notes\n") for c in art_chunks)
    assert all(c.n_tokens <= 120 for c in art_chunks)
    assert len({c.id for c in chunks}) == len(chunks)
