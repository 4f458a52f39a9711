"""TimerStats: what durable timers did since the runtime opened (for ``/metrics``).

Threads: ``count_step`` is called by a session actor in its turn, ``snapshot``
by whoever reads the figures; both take the one lock, so the object is
thread-safe by construction and belongs to no actor.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass

from flow._timers import PendingTimer

__all__ = ["LATENESS_BUCKETS", "LATE_AFTER", "TimerFigures", "TimerStats"]

LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
"""Upper bounds (seconds) of the lateness histogram's buckets."""
LATE_AFTER = 1.0
"""A timer that fires more than this many seconds after its due time counts as late."""


@dataclass(frozen=True, slots=True)
class TimerFigures:
    """The counters and the lateness histogram as of one read.

    ``lateness`` holds ``(upper bound, timers fired at most that late)``, cumulative,
    ending with ``inf``; ``lateness_sum`` is the seconds of lateness in all.
    """

    set: int
    fired: int
    late: int
    cancelled: int
    lateness: tuple[tuple[float, int], ...]
    lateness_sum: float


class TimerStats:
    """Counts timers set, fired, late and cancelled, and how late they fired."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = self._fired = self._late = self._cancelled = 0
        self._buckets = [0] * (len(LATENESS_BUCKETS) + 1)
        self._sum = 0.0

    def count_step(
        self,
        before: tuple[PendingTimer, ...],
        after: tuple[PendingTimer, ...],
        fired: PendingTimer | None,
        now: float,
    ) -> None:
        """Count what one committed step did to a session's timers (``fired`` at ``now``)."""
        if after:
            old = {t.name: t for t in before}
            names = {t.name for t in after}
            added = sum(1 for t in after if old.get(t.name) != t)
            gone = sum(1 for name in old if name not in names)
        else:  # the common case of a fired timer: none left, nothing added
            added, gone = 0, len(before)
        if fired is not None:
            gone -= 1
        with self._lock:
            self._set += added
            self._cancelled += max(gone, 0)
            if fired is not None:
                lateness = max(0.0, now - fired.due)
                self._fired += 1
                self._late += lateness > LATE_AFTER
                self._buckets[bisect.bisect_left(LATENESS_BUCKETS, lateness)] += 1
                self._sum += lateness

    def snapshot(self) -> TimerFigures:
        """The figures now."""
        with self._lock:
            cumulative = []
            total = 0
            for bound, count in zip((*LATENESS_BUCKETS, float("inf")), self._buckets, strict=True):
                total += count
                cumulative.append((bound, total))
            return TimerFigures(
                self._set, self._fired, self._late, self._cancelled, tuple(cumulative), self._sum
            )
