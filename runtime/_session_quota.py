"""SessionQuota: how many sessions one owner may hold (``max_sessions_per_user``).

Threads: any caller's (facade calls, the daemon's handlers); a lock guards the
counts, and the store is read outside it.

The count per owner lives in memory: seeded from the store the first time an
owner creates a session here, then kept by creations (and deletions through this
runtime). Sessions that expire, or that another daemon sharing the store creates
or deletes, are not seen; so when an owner reaches the limit the count is taken
again from the store (at most once a second per owner) before a creation is
refused. Several daemons on one Redis therefore enforce one limit per owner
across them, give or take the creations racing in that second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from flow._errors import SessionQuotaExceeded
from flow.stores._protocol import SessionStore

__all__ = ["SessionQuota"]

#: Least seconds between two re-counts of one owner's stored sessions.
RECOUNT_INTERVAL = 1.0
_PAGE = 1000


class SessionQuota:
    """Sessions per owner, refused past ``limit`` (0: no limit)."""

    def __init__(
        self, store: SessionStore, limit: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._counted_at: dict[str, float] = {}

    def reserve(self, owner: str) -> None:
        """Count one more session of ``owner`` (``release`` it if the creation fails).

        Raises:
            SessionQuotaExceeded: ``owner`` holds ``limit`` sessions already.
        """
        if self._limit <= 0:
            return
        if self.count_due(owner):
            self.count(owner)
        with self._lock:
            count = self._counts.get(owner, 0)
            if count >= self._limit:
                raise SessionQuotaExceeded(
                    f"user {owner!r} holds {count} sessions, the most allowed "
                    f"(max_sessions_per_user {self._limit}); delete some first"
                )
            self._counts[owner] = count + 1

    def release(self, owner: str) -> None:
        """Count one session of ``owner`` fewer (deleted, or its creation failed)."""
        with self._lock:
            count = self._counts.get(owner)
            if count is not None and count > 0:
                self._counts[owner] = count - 1

    def count_due(self, owner: str) -> bool:
        """Whether ``reserve(owner)`` would read the store (an async caller calls
        ``count`` on a thread first, so the event loop never waits on the store)."""
        if self._limit <= 0:
            return False
        with self._lock:
            count = self._counts.get(owner)
            if count is None:
                return True
            since = self._clock() - self._counted_at.get(owner, float("-inf"))
            return count >= self._limit and since >= RECOUNT_INTERVAL

    def count(self, owner: str) -> None:
        """Take ``owner``'s count from the store (blocking)."""
        stored = self._count_stored(owner)
        with self._lock:
            self._counts[owner] = stored
            self._counted_at[owner] = self._clock()

    def _count_stored(self, owner: str) -> int:
        """``owner``'s stored sessions, counted up to ``limit`` (pages of ids)."""
        count = 0
        cursor: str | None = None
        while count < self._limit:
            page = self._store.list(owner, cursor, min(_PAGE, self._limit - count))
            count += len(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
        return count
