"""Compaction on stored bytes (``flow._rebase``) against a full decode, apply and encode.

``rebased`` never decodes the chat window, yet must give byte for byte the base
that ``encode(rebuild(base, records))`` gives; ``archived`` must hold the
dropped records' messages as the archive reads them back.
"""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from labgraph import lab_graph

from flow import (
    SnapshotDecodeError,
    encode,
    new_session,
    step,
)
from flow._idempotency import MAX_KEYS, input_digest
from flow._rebase import archived, rebased
from flow._record import encode_record
from flow.stores._log import rebuild

LAB = lab_graph(f=0.5)  # a float in the context too


def _steps(inputs: list[tuple[str, bool]], max_messages: int = 4) -> tuple[bytes, list[bytes]]:
    """The first base of a LAB session and the records of stepping it with ``inputs``
    (each with an idempotency key or not)."""
    session = new_session(LAB, owner="alice", session_id="s", max_messages=max_messages)
    base = encode(session)
    records = []
    for n, (said, keyed) in enumerate(inputs):
        new, result = step(LAB, session, said)
        assert new.record is not None
        record = new.record
        if keyed:
            key = f"key-{n % 300}"
            record = record.with_key(key, input_digest("step", said), result.responses)
        records.append(encode_record(record))
        session = new
    return base, records


_COMMANDS = st.sampled_from(
    ["set a x", "set b yy", "rm a", "clear", "say hi", "hclear", "go", "back", "set a z; rm b"]
)


@settings(max_examples=60, deadline=None)
@given(
    inputs=st.lists(
        st.tuples(st.lists(_COMMANDS, min_size=1, max_size=3).map("; ".join), st.booleans()),
        min_size=1,
        max_size=30,
    ),
    split=st.integers(0, 30),
    max_messages=st.sampled_from([1, 3, 1000]),
)
def test_a_rebased_base_is_byte_identical_to_decoding_applying_and_encoding(
    inputs: list[tuple[str, bool]], split: int, max_messages: int
) -> None:
    first, records = _steps(inputs, max_messages)
    split = min(split, len(records))
    base = encode(rebuild(first, records[:split]))  # a base that may hold keys already

    assert rebased(base, records[split:]) == encode(rebuild(base, records[split:]))
    assert rebased(first, records) == encode(rebuild(first, records))


def test_a_full_key_table_forgets_its_oldest_key_as_a_replay_does() -> None:
    first, records = _steps([(f"say {n}", True) for n in range(MAX_KEYS + 44)])
    base = encode(rebuild(first, records[:100]))

    made = rebased(base, records[100:])

    assert made == encode(rebuild(base, records[100:]))
    keys = rebuild(made, []).keys
    assert keys is not None
    assert len(keys) == MAX_KEYS


def test_records_at_or_before_the_base_are_skipped_and_a_gap_is_refused() -> None:
    first, records = _steps([("set a 1", False), ("say x", False), ("rm a", False)])
    base = encode(rebuild(first, records[:2]))

    assert rebased(base, records) == encode(rebuild(base, records))
    with pytest.raises(SnapshotDecodeError, match="does not follow"):
        rebased(first, records[1:])


def test_a_malformed_base_or_record_is_a_decode_error() -> None:
    first, records = _steps([("say x", False)])

    with pytest.raises(SnapshotDecodeError):
        rebased(b"\x81\xa1v\x09", records)  # schema version 9
    with pytest.raises(SnapshotDecodeError):
        rebased(first[:-3], records)
    with pytest.raises(SnapshotDecodeError):
        rebased(first, [b"\x93\x01\x02\x03"])


def test_the_archive_entry_holds_every_dropped_message_from_the_first_number_on() -> None:
    _, records = _steps([("set a 1", False), ("say one; say two", False), ("say three", False)])

    found = archived(records[1:])  # the first step said "set a 1": message 0

    assert found is not None
    first, chunk = found
    assert first == 1
    seq, messages = msgpack.unpackb(chunk)
    assert seq == 1
    assert [m[1] for m in messages] == ["say one; say two", "one", "two", "say three", "three"]
    assert archived([]) is None


def test_members_and_a_failure_note_survive_a_rebase_as_a_replay_keeps_them() -> None:
    """A base holding members and the last failure, then records that change the
    members: the rebased base is the replayed one (members from the newest record,
    the failure note from the base: records never carry one)."""
    import msgspec

    from flow._session import StepFailure

    session = new_session(LAB, owner="alice", session_id="s", max_messages=4)
    session.metadata = msgspec.structs.replace(session.metadata, members=(("bob", "read"),))
    session.last_failure = StepFailure("ValueError", "boom", "a", 1.5)
    base = encode(session)
    records = []
    for n, members in enumerate([(("bob", "write"),), (), (("carol", "read"),)]):
        new, _ = step(LAB, session, f"set k{n} v")
        new.metadata = msgspec.structs.replace(new.metadata, members=members)
        assert new.record is not None
        records.append(encode_record(new.record.settled(new)))
        session = new

    rebuilt = rebuild(base, records)
    assert rebuilt.metadata.members == (("carol", "read"),)
    assert rebuilt.last_failure == StepFailure("ValueError", "boom", "a", 1.5)
    assert rebased(base, records) == encode(rebuilt)
