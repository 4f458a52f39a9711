"""The SQLite store's checkpointer: the WAL copied into the database file on a thread
of its own, not inside the writer's commits.

SQLite's automatic checkpoint runs in the committing connection, after the commit
and before ``COMMIT`` returns: every 1,000 pages of WAL one batch's callers also
waited for a checkpoint (copying those pages into the file and syncing it), and the
next batch waited behind it. The writer turns that off (``wal_autocheckpoint =
0``), counts the pages its commits add to the WAL (an estimate: ``pages``) and
wakes this thread each ``CHECKPOINT_PAGES`` of them, as SQLite's own rule does;
the thread runs a ``PASSIVE`` checkpoint on its own connection, which copies
what it can without blocking the writer or any reader (SQLite releases the GIL
meanwhile, so it runs beside the writer on another core). Counted, not timed:
the checkpoints a run makes do not depend on how fast the machine is
(``bench/instructions.py`` counts them).

What it cannot do is rewind the WAL. SQLite starts the WAL over from its first
frame when a write transaction begins after a checkpoint has copied every frame;
beside a writer that commits without pause, the checkpoint rarely finishes before
the next commit, and the WAL file would keep growing. So once a checkpoint finds
the WAL at ``RESTART_PAGES`` or more, it asks the writer (``restart_due``) to run
one itself between two batches: the frames left to copy are only those since this
thread's last pass, and the writer's next transaction starts the WAL over.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable

from flow._logging import get_logger

__all__ = ["CHECKPOINT_PAGES", "RESTART_PAGES", "Checkpointer", "checkpoint", "pages"]

_log = get_logger("actorflow.store.sqlite")

CHECKPOINT_PAGES = 1000
"""WAL pages (estimated) between two checkpoints: SQLite's ``wal_autocheckpoint``."""
RESTART_PAGES = 1024
"""WAL pages (of 1 KiB) past which the writer is asked to checkpoint and start it over.

About as long as SQLite's own checkpoints keep it (a read that misses its page cache
looks its page up in the WAL's index, one hash table per 4,096 frames); 4,096 ran
no faster in process at 16 or 64 clients."""


def pages(rows: int, data: int) -> int:
    """About the WAL pages (1 KiB) a transaction writes for ``rows`` rows holding ``data``
    bytes: a table and an index page a row, and the data's own.

    Right for a commit of one step (five or six pages); a group commit's rows share
    pages (40 steps wrote 2.3-2.9 pages a step), so under load the checkpointer
    wakes sooner than 1,000 pages and the WAL starts over by the second pass."""
    return 2 * rows + 1 + (data >> 10)


def checkpoint(conn: sqlite3.Connection) -> tuple[int, int]:
    """A ``PASSIVE`` checkpoint on ``conn``: the WAL's pages, and how many of them are
    now in the database file (both -1 when another checkpoint was running)."""
    busy, pages, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return (-1, -1) if busy else (int(pages), int(copied))


class Checkpointer:
    """One thread that checkpoints a WAL file while its writer commits.

    Args:
        name: the file's name, for the thread's name and log lines.
        connect: opens a connection to the file (called once, on the thread).
    """

    def __init__(self, name: str, connect: Callable[[], sqlite3.Connection]) -> None:
        self._name = name
        self._connect = connect
        self._woken = threading.Event()
        self._closing = threading.Event()
        self._restart = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"sqlite-checkpoint:{name}", daemon=True
        )
        self._thread.start()

    def wake(self) -> None:
        """The writer has added ``CHECKPOINT_PAGES`` to the WAL since it last woke it."""
        self._woken.set()

    def restart_due(self) -> bool:
        """Whether the WAL has grown past ``RESTART_PAGES`` since the writer last
        checkpointed it."""
        return self._restart.is_set()

    def restarted(self) -> None:
        """The writer checkpointed the WAL itself."""
        self._restart.clear()

    def close(self) -> None:
        """Stop the thread (after the checkpoint it is running, if any) and close its
        connection."""
        self._closing.set()
        self._woken.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            conn = self._connect()
        except Exception as exc:  # the writer still checkpoints when asked; nothing is lost
            _log.warning("checkpointer_failed", path=self._name, error=str(exc))
            return
        try:
            self._loop(conn)
        finally:
            conn.close()

    def _loop(self, conn: sqlite3.Connection) -> None:
        while True:
            self._woken.wait()
            if self._closing.is_set():
                return
            self._woken.clear()
            try:
                found, _ = checkpoint(conn)
            except Exception as exc:  # woken again by the next 1,000 pages
                _log.warning("checkpoint_failed", path=self._name, error=repr(exc))
                found = RESTART_PAGES  # let the writer try: it also ends a long WAL
            if found >= RESTART_PAGES:
                self._restart.set()
