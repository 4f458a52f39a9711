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
RESTART_PAGES = 512
"""WAL pages (of 1 KiB) at a checkpointer's pass past which the writer is asked to
checkpoint the rest and start the WAL over.

So the WAL starts over after about every pass (a pass finding fewer met a writer that
had paused, and such a WAL starts over by itself), and stays about as long as SQLite's
own checkpoints keep it: every frame appended goes into the WAL's hash index, whose
probes for a page written again and again grow with the frames since the WAL last
started over (one-at-a-time steps counted 2% more instructions when it started over
every 2,000 frames instead of 1,000)."""


def pages(rows: int, data: int) -> int:
    """About the WAL pages (1 KiB) a transaction writes for ``rows`` rows holding ``data``
    bytes: a leaf page a row (rows of one commit rarely share one: each session's
    records sit apart in the index), the data's own, and a few interior pages.

    A commit of one step wrote 5-6 pages; a group commit of 40 steps 2.3-2.9 a step.
    Counted short, the checkpointer's pass would come late and the WAL grow long; long,
    it would come early and copy the hot pages (the index's, the sessions' rows) more
    often."""
    return rows + 3 + (data >> 10)


def checkpoint(conn: sqlite3.Connection) -> tuple[int, int]:
    """A ``PASSIVE`` checkpoint on ``conn``: the WAL's pages, and how many of them are
    now in the database file (both -1 when another checkpoint was running)."""
    busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return (-1, -1) if busy else (int(frames), int(copied))


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
            conn: sqlite3.Connection | None = self._connect()
        except Exception as exc:  # each pass is then the writer's (_loop)
            _log.warning("checkpointer_failed", path=self._name, error=repr(exc))
            conn = None
        try:
            self._loop(conn)
        finally:
            if conn is not None:
                conn.close()

    def _loop(self, conn: sqlite3.Connection | None) -> None:
        while True:
            self._woken.wait()
            if self._closing.is_set():
                return
            self._woken.clear()
            found = RESTART_PAGES  # without a connection of its own, the writer checkpoints
            if conn is not None:
                try:
                    found, _ = checkpoint(conn)
                except Exception as exc:  # the writer's checkpoint also ends a long WAL
                    _log.warning("checkpoint_failed", path=self._name, error=repr(exc))
            if found >= RESTART_PAGES:
                self._restart.set()
