"""TimerFiring's reads of the due-time index: a burst is read once, after a cursor,
not again each round for its entries still in flight; an alarm at or before the
cursor, and a retry that came due, read from the earliest entry again."""

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


def _firing(store: IndexOnly, now: float = 100.0) -> tuple[TimerFiring, dict[str, Any]]:
    replies: dict[str, Callable[[Any], None]] = {}

    def submit(sid: str, reply: Callable[[Any], None]) -> None:
        replies[sid] = reply  # in flight until the test answers it

    firing = TimerFiring(store, submit, lambda: now, rate=10_000, poll_interval=3600.0)  # type: ignore[arg-type]
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
