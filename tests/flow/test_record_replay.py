"""``flow._record.replay`` (what a load runs) against ``apply(decode_record(raw))`` (the
oracle below), one record at a time: the same session, byte for byte, for any mix of
steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from labgraph import lab_graph

from flow import (
    SnapshotDecodeError,
    decode,
    encode,
    new_session,
    step,
)
from flow._idempotency import KeyTable
from flow._record import StepRecord, decode_record, encode_record, replay
from flow._session import STATUS_OF, Session

GRAPH = lab_graph()
COMMANDS = st.sampled_from(
    ["set k 1", "set j 2", "rm k", "clear", "say hi", "hclear", "go", "back", "set k 3; say x"]
)


def apply(session: Session, record: StepRecord) -> None:
    """The oracle: a decoded step record applied to ``session`` in place, field by field
    (how loads replayed records before ``replay`` read them from their fields)."""
    if record.kind != "step":
        raise ValueError(f"revision {record.revision} is a base: load its snapshot instead")
    if record.revision != session.revision + 1:
        raise ValueError(
            f"record of revision {record.revision} does not follow revision {session.revision}"
        )
    data = session.context._data
    if record.cleared:
        data.clear()
    for key in record.removed:
        data.pop(key, None)
    for key, value, moved in record.set:
        if moved:
            data.pop(key, None)
        data[key] = value
    history = session.context.chat_history
    added = list(record.messages)
    if record.history_cleared_at is not None:
        history._messages.clear()
        added = added[record.history_cleared_at :]
    history._messages.extend(added)
    history.total = record.message_seq + len(record.messages)
    history._trim()
    del session.back_stack[record.back_keep :]
    session.back_stack.extend(record.back_push)
    session.revision = record.revision
    session.current_task = record.current_task
    session.status = STATUS_OF[record.status]
    session.status_message = record.status_message
    session.graph_version = record.graph_version
    session.metadata = record.metadata
    if record.timers is not None:
        session.timers = record.timers
    entry = record.key_entry(session.session_id)
    if entry is not None:
        if session.keys is None:
            session.keys = KeyTable(session.session_id)
        session.keys.add(entry)


def records_of(inputs: list[str], max_messages: int) -> tuple[bytes, list[bytes], bytes]:
    """A base, the records of ``inputs`` stepped after it, and the newest session's bytes."""
    session = new_session(GRAPH, owner="o", max_messages=max_messages)
    base = encode(session)
    raws = []
    for said in inputs:
        session, _ = step(GRAPH, session, said)
        assert session.record is not None
        raws.append(encode_record(session.record))
    return base, raws, encode(session)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(COMMANDS, min_size=1, max_size=12), st.integers(min_value=2, max_value=6))
def test_replay_makes_what_applying_each_decoded_record_makes(
    inputs: list[str], max_messages: int
) -> None:
    base, raws, newest = records_of(inputs, max_messages)
    oracle = decode(base)
    for raw in raws:
        apply(oracle, decode_record(raw))
    replayed = decode(base)
    assert replay(replayed, raws) == sum(map(len, raws))
    assert encode(replayed) == encode(oracle) == newest
    assert replayed.context.chat_history.messages == oracle.context.chat_history.messages
    halfway = len(raws) // 2
    upto = decode(base)
    replay(upto, raws, revision=halfway)
    assert upto.revision == halfway


def test_a_record_with_a_bad_message_is_malformed_with_its_bytes() -> None:
    base, raws, _ = records_of(["say hi"], 10)
    bad = raws[0].replace(b"assistant", b"assistanX")
    with pytest.raises(SnapshotDecodeError) as caught:
        replay(decode(base), [bad])
    assert caught.value.raw == bad


def test_a_gap_in_the_revisions_is_refused() -> None:
    base, raws, _ = records_of(["set k 1", "set k 2"], 10)
    with pytest.raises(ValueError, match="does not follow revision 0"):
        replay(decode(base), raws[1:])


def _repacked(raw: bytes, change: Callable[[list[Any]], list[Any]]) -> bytes:
    return msgpack.packb(change(msgpack.unpackb(raw, raw=False)), use_bin_type=True)


def _with_field(raw: bytes, index: int, value: Any) -> bytes:
    """``raw`` with its field ``index`` (``encode_record``'s order) set to ``value``."""

    def changed(fields: list[Any]) -> list[Any]:
        fields[index] = value
        return fields

    return _repacked(raw, changed)


def test_a_record_of_a_build_before_timers_replays_the_same() -> None:
    base, raws, newest = records_of(["set k 1", "say hi", "go"], 10)
    # builds before timers wrote 21 fields: no pending timers, no fired timer
    older = [_repacked(raw, lambda fields: fields[:21]) for raw in raws]
    replayed = decode(base)
    assert replay(replayed, older) == sum(map(len, older))
    assert encode(replayed) == newest


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (0, 2),  # a record version this build does not know
        (1, "3"),  # the revision
        (3, "snapshot"),  # the kind
        (11, None),  # the back stack's low-water mark
        (15, [["k", 1]]),  # a key set without its "moved" flag
        (16, [["user", "hi", "t", "extra"]]),  # a message of four fields
        (19, "alice"),  # the metadata
    ],
)
def test_a_record_with_a_field_of_another_type_is_malformed_with_its_bytes(
    field: int, value: Any
) -> None:
    base, raws, _ = records_of(["set k 1"], 10)
    bad = _with_field(raws[0], field, value)
    with pytest.raises(SnapshotDecodeError, match="step record is malformed") as caught:
        replay(decode(base), [bad])
    assert caught.value.raw == bad


def _with_value(raw: bytes, value: Any) -> bytes:
    """``raw`` (a record that sets key k) setting ``value`` instead."""
    return _with_field(raw, 15, [["k", value, False]])


@pytest.mark.parametrize(
    "bad",
    [
        lambda raw: _with_value(raw, {1: 2}),  # a map keyed by a number, as msgpack refuses
        lambda raw: _with_value(raw, "MARK").replace(
            msgpack.packb("MARK"), b"\x91" * 3000 + b"\x01"
        ),  # nested past msgspec's and msgpack's limits
        lambda raw: _repacked(raw, lambda fields: [*fields[:22], [[1, {2: 3}]], None]),
    ],
    ids=["number for a key", "nested 3,000 deep", "timers keyed by a number"],
)
def test_a_value_msgpack_would_refuse_is_malformed_with_its_bytes(
    bad: Callable[[bytes], bytes],
) -> None:
    base, raws, _ = records_of(["set k 1"], 10)
    damaged = bad(raws[0])
    with pytest.raises(SnapshotDecodeError, match="step record is malformed") as caught:
        replay(decode(base), [damaged])
    assert caught.value.raw == damaged


def test_a_value_is_read_as_msgpack_reads_it() -> None:
    base, raws, _ = records_of(["set k 1"], 10)
    session = decode(base)
    replay(session, [_with_value(raws[0], [msgpack.ExtType(5, b"x"), {"a": b"b"}])])
    assert session.context._data["k"] == [msgpack.ExtType(5, b"x"), {"a": b"b"}]
