"""ServerGate: the PostgreSQL store's connection pool, failing fast while the server is down.

Without it an outage is slow twice over: every call waits the pool's whole
timeout for a connection that cannot come (so a daemon answers a few 503s a
minute instead of at once), and once the server is back the pool's own
reconnection is in exponential backoff (1, 2, 4, 8, ... s) and its idle
connections are all dead, so service resumes long after the server did.

So: when a connection breaks or the pool has none to give, a direct
connection attempt tells which it is. If the server answers (it was restarted)
the pool is checked at once: its dead connections are dropped and replaced.
If not, every call fails at once with ``psycopg.OperationalError`` while one caller at a time, at
most every ``retry_every`` seconds, tries a direct connection; when that
succeeds the pool is checked (dead connections dropped and replaced now, not
after the backoff) and calls go through again.

Threads: any; the state is under one lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool

__all__ = ["ServerGate"]


class ServerGate:
    """Hands out the pool's connections unless the server is known to be down.

    Args:
        pool: the store's (open) connection pool.
        url: the server's URL, for the direct connection attempts.
        retry_every: seconds between attempts while the server is down.
    """

    def __init__(
        self, pool: psycopg_pool.ConnectionPool[Any], url: str, retry_every: float = 0.5
    ) -> None:
        self.pool = pool
        self._url = url
        self._retry_every = retry_every
        self._lock = threading.Lock()
        self._down: str | None = None  # why the server is down; None: it is not known to be
        self._next_try = 0.0
        self._trying = False

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection (as ``pool.connection()``).

        Raises:
            psycopg.OperationalError: the server is down (at once while it is known to
                be), or the connection broke.
            psycopg_pool.PoolTimeout: no connection came in time while the server answers.
        """
        if self._should_wait_out():
            self._try_again()
        try:
            with self.pool.connection() as conn:
                try:
                    yield conn
                except psycopg.OperationalError as exc:
                    if conn.broken:
                        self._failed(exc)
                    raise
        except psycopg_pool.PoolTimeout as exc:
            self._failed(exc)
            raise

    def answered(self) -> None:
        """The server took a connection made outside the pool: open the gate if it was
        shut (its pool checked first)."""
        if self._down is None:
            return
        self.pool.check()
        with self._lock:
            self._down = None

    def close(self) -> None:
        """Close the pool."""
        self.pool.close()

    def _should_wait_out(self) -> bool:
        """False when the server is not known to be down; True when this caller is to try
        it again; else raises (another caller tries, or it is too soon)."""
        with self._lock:
            if self._down is None:
                return False
            if self._trying or time.monotonic() < self._next_try:
                raise psycopg.OperationalError(f"server unreachable: {self._down}")
            self._trying = True
            return True

    def _try_again(self) -> None:
        """Connect directly; on success, refresh the pool and open the gate."""
        try:
            if not self._answers():
                with self._lock:
                    self._next_try = time.monotonic() + self._retry_every
                    down = self._down
                raise psycopg.OperationalError(f"server unreachable: {down}")
            self.pool.check()  # drop the connections the outage broke, make new ones now
            with self._lock:
                self._down = None
        finally:
            with self._lock:
                self._trying = False

    def _answers(self) -> bool:
        try:
            psycopg.connect(self._url, connect_timeout=2).close()
        except psycopg.Error:
            return False
        return True

    def _failed(self, exc: BaseException) -> None:
        """A connection broke or none came: the server is down, or (restarted) it left
        the pool's connections dead, which are replaced now."""
        if self._down is not None:
            return
        if self._answers():
            self.pool.check()
            return
        with self._lock:
            if self._down is None:
                self._down = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                self._next_try = time.monotonic() + self._retry_every
