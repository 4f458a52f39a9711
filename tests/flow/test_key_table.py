"""The idempotency key table keeps its entries encoded and decodes the one asked for."""

from __future__ import annotations

import msgpack
import pytest

from flow import SessionStatus, StepResult
from flow._idempotency import MAX_KEYS, KeyEntry, KeyRetention, KeyTable


def entry(n: int, *, at: float = 1000.0) -> KeyEntry:
    result = StepResult(
        session_id="s",
        task="echo",
        response=f"echo: {n}",
        responses=(f"echo: {n}",),
        status=SessionStatus.WAITING_FOR_INPUT,
        next_task="echo",
        status_message=None if n % 2 else "note",
        revision=n,
    )
    return KeyEntry(f"key-{n}", bytes([n % 256]) * 16, at + n, result)


def test_an_entry_comes_back_equal_and_the_table_survives_a_snapshot_byte_for_byte() -> None:
    table = KeyTable("s")
    for n in range(1, 40):
        table.add(entry(n))

    assert table.get("key-7") == entry(7)
    assert table.get("key-99") is None
    read = KeyTable.decoded("s", msgpack.unpackb(table.packed(), raw=False))
    assert read.packed() == table.packed()
    assert read.packed() == msgpack.packb([entry(n).encoded() for n in range(1, 40)])
    assert list(read) == [entry(n) for n in range(1, 40)]


def test_a_full_table_forgets_its_oldest_and_a_re_added_key_becomes_the_newest() -> None:
    table = KeyTable("s")
    for n in range(1, MAX_KEYS + 11):
        table.add(entry(n))
    table.add(entry(20))

    assert len(table) == MAX_KEYS
    assert table.get("key-10") is None
    assert [e.key for e in table][:2] == ["key-11", "key-12"]
    assert [e.key for e in table][-1] == "key-20"


def test_retention_forgets_the_entries_outside_history() -> None:
    table = KeyTable("s")
    for n in range(1, 11):
        table.add(entry(n))

    table.forget_outside(KeyRetention(keep_revisions=4), newest=10, now=2000.0)

    assert [e.result.revision for e in table] == [7, 8, 9, 10]


@pytest.mark.parametrize(
    "bad",
    [
        [["k", b"d", 1.0, 1, "t", None, [], "paused", "t"]],  # 9 fields
        [[None, b"d", 1.0, 1, "t", None, [], "paused", "t", None]],  # no key
        [["k", b"d", 1.0, 1, "t", None, [], "sleeping", "t", None]],  # no such status
        [["k", "d", 1.0, 1, "t", None, [], "paused", "t", None]],  # digest not bytes
    ],
)
def test_a_malformed_entry_is_refused_when_the_table_is_read(bad: list[object]) -> None:
    with pytest.raises((TypeError, ValueError)):
        KeyTable.decoded("s", bad)
