"""Working copies share nothing mutable; cached message bytes stay right."""

from __future__ import annotations

from flow import ChatHistory, Context, decode, encode, new_session
from flow.demo import echo


def test_a_context_copy_and_its_original_keep_independent_nested_values() -> None:
    original = Context({"items": [1, {"a": [2]}]})
    clone = original.copy()
    clone.set("items", [9])
    items = original.get("items")
    items.append("leaked?")  # get hands out a copy
    assert original.get("items") == [1, {"a": [2]}]
    assert clone.get("items") == [9]
    original.set("other", {"x": 1})
    assert not clone.contains("other")


def test_a_history_copy_does_not_see_messages_added_to_the_original() -> None:
    original = ChatHistory(max_messages=3)
    original.add_user("one")
    clone = original.copy()
    original.add_user("two")
    assert [m.content for m in clone.messages] == ["one"]
    assert [m.content for m in original.messages] == ["one", "two"]


def test_cached_message_bytes_stay_right_after_trimming_and_copying() -> None:
    session = new_session(echo, owner="alice")
    history = session.context.chat_history
    history.max_messages = 3
    for i in range(5):
        history.add_user(f"m{i}")
        encode(session)  # packs and caches each message's bytes
    copy = session.copy()
    copy.context.chat_history.add_assistant("only in the copy")
    for i in range(5, 8):
        history.add_user(f"m{i}")
    assert [m.content for m in decode(encode(session)).context.chat_history] == ["m5", "m6", "m7"]
    assert [m.content for m in decode(encode(copy)).context.chat_history] == [
        "m3",
        "m4",
        "only in the copy",
    ]


def test_a_step_record_is_frozen_untracked_and_compared_without_its_cached_bytes() -> None:
    import gc

    import pytest

    from flow._record import decode_record, encode_record
    from flow._step import step

    new, _ = step(echo, new_session(echo, owner="alice"), "hello")
    record = new.record
    assert record is not None
    with pytest.raises(AttributeError):
        record.revision = 99  # type: ignore[misc]
    assert not gc.is_tracked(record)  # a live session's records add nothing for the GC to walk
    packed = encode_record(record)
    assert encode_record(record) is packed  # made once, then kept on the record
    again = decode_record(packed)
    assert again == record  # the cached bytes are not compared
    assert hash(again) == hash(record)
    assert "_packed" not in repr(record)
    keyed = record.with_key("k1", b"digest", ("hi",))  # a copy is encoded anew, not reused
    assert decode_record(encode_record(keyed)).request_id == "k1"
