"""SQLite's compactions and retention sweep run in a transaction of their own, after the
saves of their batch are committed and answered: a compaction that fails fails only
itself, and the writer is back to syncing every commit afterwards."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from testkit import talked

from flow import StoreUnavailable, step
from flow.demo import echo
from flow.stores import SqliteStore
from flow.stores._log import LogPolicy
from flow.stores._sqlite import _CompactOp

# no compaction unless asked for: the test decides what shares a batch
QUIET = LogPolicy(keep_revisions=None, compact_after=1000, min_tail_bytes=10**9)


def synchronous(store: SqliteStore) -> int:
    """The writer connection's ``synchronous`` (1 normal, 2 full); call it while idle."""
    return int(store._writer_conn.execute("PRAGMA synchronous").fetchone()[0])


def test_a_failed_compaction_fails_only_itself_not_the_saves_of_its_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStore(tmp_path / "sessions.db", "fsync", policy=QUIET)
    try:
        session = talked(store, 3)
        held, release = threading.Event(), threading.Event()
        first = SqliteStore._forget_revisions_if_changed_elsewhere

        def hold_the_first_batch(self: SqliteStore) -> None:
            if not held.is_set():
                held.set()
                release.wait(10)
            first(self)

        def broken(self: SqliteStore, op: _CompactOp) -> None:
            raise sqlite3.OperationalError("disk I/O error (injected)")

        monkeypatch.setattr(
            SqliteStore, "_forget_revisions_if_changed_elsewhere", hold_the_first_batch
        )
        monkeypatch.setattr(SqliteStore, "_write_compaction", broken)
        flushing = threading.Thread(target=store.flush)
        flushing.start()
        assert held.wait(10)  # the writer is inside the flush's batch
        failed: list[BaseException] = []

        def compact() -> None:
            try:
                store.compact(session.session_id)
            except StoreUnavailable as exc:
                failed.append(exc)

        compacting = threading.Thread(target=compact)
        compacting.start()
        new, _ = step(echo, session, "saved beside a failing compaction")
        saved = store.save(new, session.revision)
        deadline = time.monotonic() + 10
        while store._queue.qsize() < 2:  # the compaction and the save wait together
            assert time.monotonic() < deadline
            time.sleep(0.001)
        release.set()
        saved.result(timeout=10)  # committed and answered: the compaction did not take it down
        compacting.join(10)
        flushing.join(10)
        assert len(failed) == 1
        assert "compaction failed" in str(failed[0])
        loaded = store.load(session.session_id)
        assert loaded is not None
        assert loaded.revision == new.revision
        assert synchronous(store) == 2  # FULL again after the failed maintenance
    finally:
        store.close()


def test_compactions_commit_unsynced_and_leave_every_save_synced(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "sessions.db", "fsync", policy=QUIET)
    try:
        session = talked(store, 5)
        assert store.compact(session.session_id)
        span = store.history_range(session.session_id)
        assert span is not None
        assert (span.oldest, span.newest) == (0, 5)
        assert synchronous(store) == 2
    finally:
        store.close()
