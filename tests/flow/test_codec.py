"""The snapshot codec: round trips, and nothing but SnapshotDecodeError on bad bytes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from unittest import mock

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flow._codec
from flow import (
    ChatHistory,
    ChatMessage,
    Context,
    Session,
    SessionMetadata,
    SessionStatus,
    SnapshotDecodeError,
    decode,
    encode,
)
from flow._session import StepFailure

users = st.text(min_size=1, max_size=8)
accesses = st.sampled_from(["read", "write"])
SETTINGS = settings(max_examples=200, deadline=None)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
contexts = st.dictionaries(st.text(max_size=12), values, max_size=6)
messages = st.lists(
    st.builds(
        ChatMessage,
        role=st.sampled_from(["user", "assistant", "system"]),
        content=st.text(max_size=40),
        timestamp=st.text(max_size=30),
    ),
    max_size=8,
)
finite = st.floats(min_value=0, max_value=4e9, allow_nan=False)
optional_text = st.none() | st.text(max_size=20)


@st.composite
def sessions(draw: st.DrawFn) -> Session:
    max_messages = draw(st.none() | st.integers(min_value=1, max_value=10))
    history = ChatHistory(draw(messages), max_messages=max_messages)
    session_id = draw(st.uuids()).hex
    return Session(
        session_id=session_id,
        graph_id=draw(st.text(min_size=1, max_size=10)),
        graph_version=draw(st.text(max_size=16)),
        current_task=draw(st.text(min_size=1, max_size=20)),
        status=draw(st.sampled_from(list(SessionStatus))),
        context=Context(draw(contexts), history, session_id=session_id),
        metadata=SessionMetadata(
            owner=draw(st.text(min_size=1, max_size=10)),
            created_at=draw(finite),
            last_accessed=draw(finite),
            request_count=draw(st.integers(min_value=0, max_value=2**40)),
            client_addr=draw(optional_text),
            expires_at=draw(st.none() | finite),
            members=tuple(
                draw(
                    st.lists(
                        st.tuples(
                            st.text(min_size=1, max_size=8), st.sampled_from(["read", "write"])
                        ),
                        max_size=3,
                    )
                )
            ),
        ),
        revision=draw(st.integers(min_value=0, max_value=2**40)),
        back_stack=draw(st.lists(st.text(min_size=1, max_size=10), max_size=5)),
        status_message=draw(optional_text),
    )


def damaged(raw: bytes, data: st.DataObject, times: int) -> bytes:
    """``raw`` with ``times`` bytes (drawn, maybe the same one twice) set to drawn values."""
    changed = bytearray(raw)
    for _ in range(times):
        position = data.draw(st.integers(min_value=0, max_value=len(changed) - 1))
        changed[position] = data.draw(st.integers(min_value=0, max_value=255))
    return bytes(changed)


def assert_decode_fails_cleanly(raw: bytes) -> None:
    error: SnapshotDecodeError | None = None
    try:
        decode(raw)
    except SnapshotDecodeError as exc:
        error = exc
    assert error is None or error.raw == raw


@SETTINGS
@given(sessions())
def test_encode_then_decode_gives_back_an_equal_session(session: Session) -> None:
    decoded = decode(encode(session))
    assert decoded == session
    assert decoded.context == session.context
    assert decoded.context.chat_history.messages == session.context.chat_history.messages
    assert decoded.context.chat_history.max_messages == session.context.chat_history.max_messages
    assert decoded.context.session_id == session.session_id


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_snapshot_decode_error(raw: bytes) -> None:
    assert_decode_fails_cleanly(raw)


@SETTINGS
@given(sessions(), st.data())
def test_damaged_snapshots_raise_only_snapshot_decode_error(
    session: Session, data: st.DataObject
) -> None:
    raw = damaged(encode(session), data, 1)
    cut = data.draw(st.integers(min_value=0, max_value=len(raw)))
    assert_decode_fails_cleanly(raw[:cut])
    assert_decode_fails_cleanly(raw)


@SETTINGS
@given(st.dictionaries(st.text(max_size=6), values, max_size=6))
def test_arbitrary_msgpack_maps_raise_only_snapshot_decode_error(doc: dict[str, Any]) -> None:
    assert_decode_fails_cleanly(msgpack.packb(doc, use_bin_type=True))


def a_session() -> Session:
    history = ChatHistory()
    history.add_user("hi")
    return Session(
        session_id="s",
        graph_id="g",
        graph_version="v",
        current_task="t",
        status=SessionStatus.PAUSED,
        context=Context({"k": [1, b"2"]}, history, session_id="s"),
        metadata=SessionMetadata("alice", 1.0, 2.0, 3, None, None),
    )


DROP = object()
"""A change that removes its field (``redo``)."""


def redo(raw: bytes, **changes: Any) -> bytes:
    doc = msgpack.unpackb(raw, raw=False)
    doc.update(changes)
    return msgpack.packb({k: v for k, v in doc.items() if v is not DROP}, use_bin_type=True)


@pytest.mark.parametrize("version", [0, 3, 99, "1", None])
def test_an_unknown_schema_version_is_refused_with_the_raw_bytes(version: object) -> None:
    raw = redo(encode(a_session()), v=version)
    with pytest.raises(SnapshotDecodeError, match="schema version") as info:
        decode(raw)
    assert info.value.raw == raw


def test_a_snapshot_names_its_schema_version() -> None:
    assert msgpack.unpackb(encode(a_session()), raw=False)["v"] == 2


def test_a_version_1_snapshot_decodes_with_its_message_count_as_the_conversation_total() -> None:
    session = a_session()
    doc = msgpack.unpackb(encode(session), raw=False)
    del doc["mtot"]
    doc["v"] = 1

    old = decode(msgpack.packb(doc, use_bin_type=True))

    assert old == session
    assert old.context.chat_history.total == len(session.context.chat_history)


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "sleeping"},
        {"hist": [["robot", "x", "t"]]},
        {"data": [1]},
        {"meta": ["alice", 1.0]},
        {"back": "not a list"},
        {"id": 7},
    ],
    ids=["status", "role", "data", "meta", "back", "id"],
)
def test_a_malformed_snapshot_raises_snapshot_decode_error(changes: dict[str, Any]) -> None:
    raw = redo(encode(a_session()), **changes)
    with pytest.raises(SnapshotDecodeError, match="malformed") as info:
        decode(raw)
    assert info.value.raw == raw


def test_a_snapshot_that_is_not_a_map_is_refused() -> None:
    raw = msgpack.packb([1, 2, 3])
    with pytest.raises(SnapshotDecodeError, match="not a msgpack map"):
        decode(raw)


def test_members_and_the_last_failure_round_trip_and_older_metadata_still_reads() -> None:
    session = a_session()
    session.metadata = SessionMetadata("alice", 1.0, 2.0, 3, None, None, (("bob", "read"),))
    session.last_failure = StepFailure("KeyError", "'x'", "t", 5.0)
    back = decode(encode(session))
    assert back.metadata.members == (("bob", "read"),)
    assert back.metadata.access_of("bob") == "read"
    assert back.last_failure == session.last_failure
    plain = a_session()
    raw = encode(plain)
    assert len(msgpack.unpackb(raw, raw=False)["meta"]) == 6  # as builds before sharing wrote
    assert decode(raw).metadata.members == ()
    assert decode(raw).last_failure is None
    with pytest.raises(SnapshotDecodeError, match="access"):
        decode(redo(raw, meta=["alice", 1.0, 2.0, 3, None, None, [["bob", "admin"]]]))


@SETTINGS
@given(sessions())
def test_a_snapshot_of_this_schema_is_read_in_one_pass_as_field_by_field(
    session: Session,
) -> None:
    raw = encode(session)
    by_fields = flow._codec._decode_fields(raw)
    # msgspec reads it against ``_Snapshot``: never the field-by-field path
    with mock.patch.object(flow._codec, "_decode_fields", side_effect=AssertionError):
        at_once = decode(raw)
    for decoded in (at_once, by_fields):  # stored tuples, until a message is read
        assert all(type(m) is tuple for m in decoded.context.chat_history._messages)
    assert encode(at_once) == encode(by_fields) == raw
    assert at_once == by_fields
    assert at_once.context.chat_history.total == by_fields.context.chat_history.total


def _outcome(read: Callable[[bytes], Session], raw: bytes) -> bytes | str:
    """What ``read`` makes of ``raw``: the session encoded again, or its error's text."""
    try:
        return encode(read(raw))
    except SnapshotDecodeError as exc:
        return f"{exc} (raw kept: {exc.raw == raw})"


@pytest.mark.parametrize(
    "changes",
    [
        {"rev": 1.0},
        {"rev": True},
        {"hist": [("user", "x", "t", "extra")]},
        {"hist": [("robot", "x", "t")]},
        {"meta": ("alice",)},
        {"data": {"k": {"nested": 1}}, "back": ["a", 2]},
        {"smsg": 5},
        {"v": 1},
        {"smsg": DROP},
        {"hmax": DROP},
        {"mtot": DROP},
        {"mtot": None},
        {"data": {"k": {1: 2}}},
        {"data": {"k": [msgpack.ExtType(5, b"x")]}},
        {"keys": {1: 2}},
        {"tmr": [[1, {2: 3}]]},
    ],
    ids=[
        "float revision",
        "bool revision",
        "message of four",
        "unknown role",
        "short meta",
        "back stack with a number",
        "status message a number",
        "version 1",
        "no status message",
        "no window size",
        "no message total",
        "nil message total",
        "a map with a number for a key",
        "an extension type",
        "a key table keyed by a number",
        "timers keyed by a number",
    ],
)
def test_odd_snapshots_decode_as_field_by_field(changes: dict[str, Any]) -> None:
    raw = redo(encode(a_session()), **changes)
    assert _outcome(decode, raw) == _outcome(flow._codec._decode_fields, raw)


def test_bytes_nested_past_any_limit_are_refused_as_a_snapshot_decode_error() -> None:
    # a value nested 3,000 deep: msgspec gives up with RecursionError, msgpack with
    # StackError; either way the load must be refused (and the session quarantined)
    marked = redo(encode(a_session()), data={"k": "MARK"})
    raw = marked.replace(msgpack.packb("MARK"), b"\x91" * 3000 + b"\x01")
    with pytest.raises(SnapshotDecodeError) as info:
        decode(raw)
    assert info.value.raw == raw


@SETTINGS
@given(sessions(), st.data())
def test_a_damaged_snapshot_decodes_in_one_pass_only_as_field_by_field(
    session: Session, data: st.DataObject
) -> None:
    raw = damaged(encode(session), data, data.draw(st.integers(min_value=1, max_value=3)))
    assert _outcome(decode, raw) == _outcome(flow._codec._decode_fields, raw)
