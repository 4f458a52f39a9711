"""A `threading.Event` that costs under 100 bytes until somebody waits on it.

Every pykka actor carries ``actor_stopped``, a ``threading.Event``. A real Event
holds a Condition, a lock and a deque of waiters: ~1.3 KiB, half of what a
whole dispatcher actor needs otherwise. Almost nobody waits on it (pykka only
calls ``is_set`` and ``set``), so `StopFlag` keeps a plain boolean and builds a
real Event only for the first ``wait``.
"""

from __future__ import annotations

import threading
from typing import ClassVar

__all__ = ["StopFlag"]


class StopFlag(threading.Event):
    """A ``threading.Event`` with a lazily built waiter; same methods, same meaning.

    ``set`` writes the flag before it looks for a waiter, and ``wait`` installs
    its waiter before it looks at the flag, so one of them always sees the
    other: a ``wait`` never misses a ``set``.
    """

    __slots__ = ("_flag", "_waiter")

    _waiter_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:  # not Event.__init__: it builds the Condition this avoids
        self._flag = False
        self._waiter: threading.Event | None = None

    def __repr__(self) -> str:
        return f"<StopFlag {'set' if self._flag else 'unset'}>"

    def is_set(self) -> bool:
        """Whether the flag is set."""
        return self._flag

    def set(self) -> None:
        """Set the flag and wake every waiter."""
        self._flag = True
        waiter = self._waiter
        if waiter is not None:
            waiter.set()

    def clear(self) -> None:
        """Reset the flag."""
        self._flag = False
        waiter = self._waiter
        if waiter is not None:
            waiter.clear()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the flag is set or ``timeout`` seconds pass; return the flag."""
        if self._flag:
            return True
        with StopFlag._waiter_lock:
            waiter = self._waiter
            if waiter is None:
                waiter = self._waiter = threading.Event()
        if self._flag:
            waiter.set()
        return waiter.wait(timeout)
