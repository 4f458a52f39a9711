"""One timer thread for a whole runtime: step deadlines and the periodic sweep.

A ``threading.Timer`` per step would cost a thread per running step; this keeps
a heap of deadlines served by a single thread. Cancelled timers are dropped
lazily and the heap is compacted when they make up most of it, so a high rate
of short steps with long deadlines does not grow it without bound.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

from flow._logging import get_logger

__all__ = ["Timer", "Timers"]

_log = get_logger("actorflow.timers")


class Timer:
    """A scheduled callback; ``cancel()`` stops it from running if it has not yet."""

    __slots__ = ("_owner", "callback", "cancelled", "deadline")

    def __init__(self, owner: Timers, deadline: float, callback: Callable[[], None]) -> None:
        self._owner = owner
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """Do not run the callback (no effect once it ran); any thread."""
        self._owner._cancel(self)


class Timers:
    """A heap of timers run by one daemon thread (callbacks must be quick)."""

    def __init__(self, name: str = "actorflow-timers") -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Timer]] = []
        self._counter = itertools.count()
        self._cancelled = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` on the timer thread after ``delay`` seconds."""
        timer = Timer(self, time.monotonic() + delay, callback)
        with self._cond:
            if self._closed:
                timer.cancelled = True
                return timer
            heapq.heappush(self._heap, (timer.deadline, next(self._counter), timer))
            if self._heap[0][2] is timer:
                self._cond.notify()
        return timer

    def call_every(self, interval: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` every ``interval`` seconds until the returned handle is cancelled."""
        handle = Timer(self, 0.0, callback)

        def tick() -> None:
            with self._cond:
                if handle.cancelled:
                    return
            callback()
            with self._cond:
                if handle.cancelled:
                    return
            self.call_later(interval, tick)

        self.call_later(interval, tick)
        return handle

    def _cancel(self, timer: Timer) -> None:
        # Under the lock: the timer thread tests and sets ``cancelled`` under it too.
        with self._cond:
            if timer.cancelled:
                return
            timer.cancelled = True
            self._cancelled += 1
            if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
                self._heap = [item for item in self._heap if not item[2].cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if not self._heap:
                        self._cond.wait()
                        continue
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._closed:
                    return
                _, _, timer = heapq.heappop(self._heap)
                if timer.cancelled:
                    self._cancelled = max(0, self._cancelled - 1)
                    continue
                timer.cancelled = True
            try:
                timer.callback()
            except Exception:
                _log.exception("timer_callback_failed")

    def close(self) -> None:
        """Stop the thread; pending timers never run."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(5)
