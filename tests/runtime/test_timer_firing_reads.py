"""TimerFiring's reads of the due-time index: a burst is read once, after a cursor,
not again each round for its entries still in flight; an alarm at or before the
cursor, and a retry that came due, read from the earliest entry again; so does each
poll interval, but only when other daemons share the index."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

from flow.stores._timer_index import DueTimer
from runtime._timer_firing import BATCH, TimerFiring


class IndexOnly:
    """A store with only a due-time index, which counts the entries it returns."""

    def __init__(self, entries: dict[str, float]) -> None:
        self.entries = entries
        self.rows_read = 0

    def due_timers(
        self, until: float, limit: int = 100, since: float | None = None
    ) -> list[DueTimer]:
        ordered = sorted((due, sid) for sid, due in self.entries.items())
        start = 0 if since is None else bisect.bisect_right(ordered, (since, "\uffff"))
        rows = [DueTimer(sid, due) for due, sid in ordered[start:] if due <= until][:limit]
        self.rows_read += len(rows)
        return rows


def _firing(
    store: IndexOnly, now: float = 100.0, *, poll_interval: float = 3600.0, shared: bool = False
) -> tuple[TimerFiring, dict[str, Any]]:
    replies: dict[str, Callable[[Any], None]] = {}

    def submit(sid: str, reply: Callable[[Any], None]) -> None:
        replies[sid] = reply  # in flight until the test answers it

    firing = TimerFiring(
        store,  # type: ignore[arg-type]
        submit,
        lambda: now,
        rate=10_000,
        poll_interval=poll_interval,
        shared=shared,
    )
    return firing, replies


def test_a_burst_is_read_once_after_a_cursor_not_again_for_its_steps_in_flight() -> None:
    store = IndexOnly({f"s{i:05}": float(i) for i in range(3 * BATCH)})
    firing, replies = _firing(store, now=1e6)
    _ = firing._round(ignore_rate=False)  # the first read starts from the earliest entry
    for _ in range(2):
        done = firing._round(ignore_rate=False)
        assert done.started >= BATCH - 1
        assert done.skipped <= 1  # read after the cursor (only its last entry again, for ties)
    assert len(replies) >= 3 * BATCH - 2
    assert store.rows_read <= 3 * BATCH  # each entry read about once (re-reading: 6 * BATCH)


def test_an_alarm_before_the_cursor_and_a_retry_come_due_read_from_the_start() -> None:
    store = IndexOnly({f"s{i}": float(i) for i in range(10)})
    firing, replies = _firing(store)
    assert firing._round(ignore_rate=False).started == 10
    for sid in list(replies):  # committed: the index entries are gone
        del store.entries[sid]
        replies.pop(sid)(None)
    store.entries["early"] = 0.5  # e.g. a fired session's next timer, due already
    assert firing._round(ignore_rate=False).started == 0  # after the cursor: not seen
    firing.alarm(0.5)
    assert firing._round(ignore_rate=False).started == 1
    replies.pop("early")(RuntimeError("failed"))  # kept pending, retried after a backoff
    assert firing._round(ignore_rate=False).started == 0  # backing off
    firing._clock = lambda: 200.0
    assert firing._round(ignore_rate=False).started == 1  # the retry came due: read again


def test_the_poll_interval_reads_from_the_earliest_entry_again_only_in_a_cluster() -> None:
    for shared, rows_per_round in ((False, 0), (True, BATCH)):
        store = IndexOnly({f"s{i:05}": float(i) for i in range(2 * BATCH)})
        firing, replies = _firing(store, now=1e6, shared=shared)
        for _ in range(3):
            firing._round(ignore_rate=False)
        assert len(replies) == 2 * BATCH  # the whole burst is in flight
        firing._poll_interval = 0.0  # a poll interval has passed since the first read
        before = store.rows_read
        done = firing._round(ignore_rate=False)
        # alone: after the cursor, nothing more (a tie or two read again); in a cluster the
        # in-flight entries are read again from the earliest, for other daemons' timers
        assert store.rows_read - before <= rows_per_round + 2, shared
        assert store.rows_read - before >= rows_per_round, shared
        assert done.started == 0
