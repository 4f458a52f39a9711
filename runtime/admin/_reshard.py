"""``actorflow reshard``: move a data directory's sessions to another worker count.

``actorflowd --workers N`` keeps shard K of the sessions in ``DATA_DIR/shard-K``
and records N in ``DATA_DIR/workers``; a single daemon keeps them all in
``DATA_DIR/sessions.db``. The shard count is fixed per directory (another N would
look every session up in the wrong shard), so changing it moves the sessions:

1. Every daemon lock of the directory is taken (``daemon.lock``, and each shard's):
   a running daemon is refused, and none can start until the move is over.
2. The new shards are written beside the old ones, in ``DATA_DIR/reshard-new``:
   each is a fresh SQLite file of the current schema (opened once by
   ``SqliteStore``, as are the old ones, which migrates an old file), and every
   row of every table that belongs to a session (its metadata, bases, step
   records, archive, quarantined rows and timer) is copied to the shard its id
   hashes to, with the daemon's own hash (``runtime/_shard_map.py``). Rows are
   copied as they are stored: nothing is decoded, so history, timers,
   idempotency keys, members and expiry survive byte for byte.
3. The rows of each table are counted on both sides; any difference stops here,
   with the directory as it was (``reshard-new`` removed).
4. The switch: a journal (``DATA_DIR/reshard.journal``) names the backup directory,
   the old layout's files move into it (``reshard-backup-<time>``), the new shards
   move into place and the new count is recorded (a single ``sessions.db`` for
   one worker). The journal goes last. A daemon refuses to start while the journal
   exists, and running the command again finishes an interrupted switch (each move
   is skipped once done).

The old store is kept, not deleted: the command prints where. Runs on the
command's own thread; SQLite data directories only (a Redis or PostgreSQL store
is shared by every worker and never resharded).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from flow.stores import DEFAULT_SQLITE_NAME
from flow.stores._sqlite import SqliteStore
from flow.stores._sqlite_schema import SESSION_COLUMNS
from runtime._data_files import LOCK_NAME, Locked, lock_exclusively, write_private
from runtime._shard_map import (
    JOURNAL_NAME,
    RECORD_NAME,
    interrupted_reshard,
    recorded_workers,
    shard_dir,
    shard_of,
)
from runtime.admin._protocol import AdminError

__all__ = [
    "JOURNAL_NAME",
    "Layout",
    "ReshardReport",
    "current_layout",
    "interrupted_reshard",
    "reshard",
]

NEW_NAME = "reshard-new"
#: The tables whose rows belong to one session (``session_id``); ``meta`` is the schema's.
SESSION_TABLES = ("sessions", "bases", "records", "archive", "quarantine", "timers")
_SIDECARS = ("", "-wal", "-shm")


@dataclass(frozen=True, slots=True)
class Layout:
    """How a data directory keeps its sessions: ``workers`` shards (1: one ``sessions.db``)."""

    workers: int

    def stores(self, data_dir: Path) -> list[Path]:
        """The SQLite files of this layout under ``data_dir``."""
        if self.workers == 1:
            return [data_dir / DEFAULT_SQLITE_NAME]
        return [shard_dir(data_dir, k) / DEFAULT_SQLITE_NAME for k in range(self.workers)]


@dataclass(frozen=True, slots=True)
class ReshardReport:
    """What ``reshard`` did."""

    before: int
    after: int
    sessions: int
    rows: int
    backup: Path | None


def current_layout(data_dir: Path) -> Layout | None:
    """The directory's layout, or None when it holds no sessions yet.

    Raises:
        AdminError: ``BadArgument`` for an unreadable ``DATA_DIR/workers``.
    """
    try:
        recorded = recorded_workers(data_dir)
    except ValueError as exc:
        raise AdminError("BadArgument", str(exc)) from None
    if recorded is not None:
        return Layout(recorded)
    if (data_dir / DEFAULT_SQLITE_NAME).exists():
        return Layout(1)
    return None


def reshard(
    data_dir: Path,
    workers: int,
    *,
    progress: Callable[[int, int], None] | None = None,
    now: Callable[[], float] = time.time,
) -> ReshardReport:
    """Move every session of ``data_dir`` to ``workers`` shards (see the module docstring).

    ``progress(done, total)`` is called as source rows of the ``sessions`` table are
    copied (a progress bar's feed).

    Raises:
        AdminError: ``BadArgument`` (no sessions, a bad count), ``DaemonRunning``
            (a daemon holds the directory), ``ReshardFailed`` (counts differ: nothing
            was switched).
    """
    if workers < 1:
        raise AdminError("BadArgument", f"--workers must be at least 1, not {workers}")
    with _locked(data_dir):
        journal = data_dir / JOURNAL_NAME
        if journal.exists():
            return _finish(data_dir, json.loads(journal.read_text()))
        layout = current_layout(data_dir)
        if layout is None:
            raise AdminError("BadArgument", f"{str(data_dir)!r} holds no sessions to reshard")
        if layout.workers == workers:
            sessions = sum(_count(path, "sessions") for path in layout.stores(data_dir))
            return ReshardReport(workers, workers, sessions, 0, None)
        new = data_dir / NEW_NAME
        shutil.rmtree(new, ignore_errors=True)  # a copy an earlier run left unfinished
        try:
            sessions, rows = _copy(data_dir, layout, new, workers, progress)
        except BaseException:
            shutil.rmtree(new, ignore_errors=True)
            raise
        plan = {
            "before": layout.workers,
            "after": workers,
            "backup": _fresh_name(
                data_dir, f"reshard-backup-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now()))}"
            ),
            "sessions": sessions,
            "rows": rows,
        }
        write_private(journal, json.dumps(plan).encode())
        return _finish(data_dir, plan)


_COPY_ROWS = "INSERT INTO main.{0} SELECT * FROM old.{0} WHERE af_shard(session_id) = ?"
_COPY = {
    # a session gets a new number in its new shard (another shard's may hold its old one),
    # and its records follow it there
    "sessions": (
        f"INSERT INTO main.sessions ({SESSION_COLUMNS}) SELECT {SESSION_COLUMNS} "
        "FROM old.sessions WHERE af_shard(session_id) = ? ORDER BY sess"
    ),
    "records": (
        "INSERT INTO main.records SELECT n.sess, r.revision, r.at, r.data "
        "FROM old.records r JOIN old.sessions o ON o.sess = r.sess "
        "JOIN main.sessions n ON n.session_id = o.session_id "
        "WHERE af_shard(o.session_id) = ? ORDER BY r.rowid"
    ),
}
"""How each table's rows of one target shard are copied (``SESSION_TABLES`` order:
sessions before records)."""


def _copy(
    data_dir: Path,
    layout: Layout,
    new: Path,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[int, int]:
    """Write the new shards under ``new``; (sessions, rows) copied, counts verified."""
    sources = layout.stores(data_dir)
    for source in sources:
        SqliteStore(source).close()  # migrates an old schema in place, as a daemon would
    targets = Layout(workers).stores(new)
    for target in targets:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        SqliteStore(target).close()  # the current schema, empty
    # the sources are locked: their rows, counted once here, are what must arrive
    stored = {table: sum(_count(path, table) for path in sources) for table in SESSION_TABLES}
    total = stored["sessions"]
    done = 0
    copied = {table: 0 for table in SESSION_TABLES}
    for target_index, target in enumerate(targets):
        with contextlib.closing(sqlite3.connect(target, isolation_level=None)) as db:
            db.create_function(
                "af_shard", 1, lambda sid: shard_of(sid, workers), deterministic=True
            )
            db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN IMMEDIATE")
            for source in sources:
                db.execute("ATTACH DATABASE ? AS old", (str(source),))
                for table in SESSION_TABLES:
                    cursor = db.execute(_COPY.get(table, _COPY_ROWS.format(table)), (target_index,))
                    copied[table] += cursor.rowcount
                    if table == "sessions":
                        done += cursor.rowcount
                        if progress is not None:
                            progress(done, total)
                db.execute("COMMIT")
                db.execute("DETACH DATABASE old")
                db.execute("BEGIN IMMEDIATE")
            db.execute("COMMIT")
    for table in SESSION_TABLES:
        if copied[table] != stored[table]:
            raise AdminError(
                "ReshardFailed",
                f"table {table}: {stored[table]} rows stored, {copied[table]} copied; "
                f"nothing was switched ({str(data_dir)!r} is as it was)",
            )
    return total, sum(copied.values())


def _fresh_name(data_dir: Path, name: str) -> str:
    """``name``, or ``name-2``, ``name-3``... : a backup never shares an earlier one's directory."""
    candidate, n = name, 1
    while (data_dir / candidate).exists():
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def _count(path: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        row = db.execute(f"SELECT count(*) FROM {table}").fetchone()  # fixed table names
    return int(row[0])


def _finish(data_dir: Path, plan: dict[str, object]) -> ReshardReport:
    """The switch, from wherever an earlier run stopped (each step skipped once done)."""
    before, after = int(str(plan["before"])), int(str(plan["after"]))
    backup = data_dir / str(plan["backup"])
    backup.mkdir(mode=0o700, exist_ok=True)
    new = data_dir / NEW_NAME
    if new.exists():  # the old layout still in place (or partly moved)
        # A name already in the backup was moved there by an earlier run: what now
        # sits at that name in data_dir is a new shard (M -> N shards reuse names).
        for old in _layout_paths(data_dir, Layout(before)):
            if old.exists() and not (backup / old.name).exists():
                os.replace(old, backup / old.name)
        record = data_dir / RECORD_NAME
        if record.exists() and not (backup / RECORD_NAME).exists():
            os.replace(record, backup / RECORD_NAME)
        if after == 1:
            for suffix in _SIDECARS:
                moved = new / (DEFAULT_SQLITE_NAME + suffix)
                if moved.exists():
                    os.replace(moved, data_dir / (DEFAULT_SQLITE_NAME + suffix))
        else:
            for k in range(after):
                if shard_dir(new, k).exists():
                    os.replace(shard_dir(new, k), shard_dir(data_dir, k))
            write_private(data_dir / RECORD_NAME, f"{after}\n".encode())
        shutil.rmtree(new, ignore_errors=True)
    (data_dir / JOURNAL_NAME).unlink(missing_ok=True)
    return ReshardReport(before, after, int(str(plan["sessions"])), int(str(plan["rows"])), backup)


def _layout_paths(data_dir: Path, layout: Layout) -> list[Path]:
    """What a layout keeps in ``data_dir``: its SQLite files, or its shard directories."""
    if layout.workers == 1:
        return [data_dir / (DEFAULT_SQLITE_NAME + suffix) for suffix in _SIDECARS]
    return [shard_dir(data_dir, k) for k in range(layout.workers)]


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """Hold every daemon lock of ``data_dir`` (its own and its shards'), or refuse."""
    if not data_dir.is_dir():
        raise AdminError("BadArgument", f"{str(data_dir)!r} is not a directory")
    paths = [data_dir / LOCK_NAME]
    paths += sorted(data_dir.glob(f"shard-*/{LOCK_NAME}"))
    held: list[IO[str]] = []
    try:
        for path in paths:
            try:
                held.append(lock_exclusively(path))
            except Locked as exc:
                raise AdminError(
                    "DaemonRunning",
                    f"a daemon serves {str(path.parent)!r} (pid {exc.holder}); stop it first",
                ) from None
        yield
    finally:
        for lock in held:
            lock.close()
