"""SQLite's WAL is checkpointed on a thread of its own, not inside the writer's commits,
and still starts over when it has grown, however busy the writer is."""

from __future__ import annotations

import shutil
import sqlite3
import textwrap
import threading
from pathlib import Path

import pytest
import structlog
from testkit import kill, start_child, talked, wait_until

from flow.stores import SqliteStore, _sqlite, _sqlite_checkpoint
from flow.stores._log import LogPolicy

QUIET = LogPolicy(keep_revisions=None, compact_after=1000, min_tail_bytes=10**9)
PAYLOAD = "x" * 2000  # two pages of WAL and more a step


def test_the_writer_leaves_checkpoints_to_the_checkpointer(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "sessions.db", "fsync", policy=QUIET) as store:
        autocheckpoint = store._writer_conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        assert autocheckpoint == 0
        talked(
            store, 200, text=PAYLOAD
        )  # past CHECKPOINT_PAGES (1,000 pages): a wake after 110-140 steps
        # nothing else checkpoints: the file (its schema's pages, copied on open) grows
        # only once the checkpointer has copied the WAL's pages into it
        wait_until(
            lambda: (tmp_path / "sessions.db").stat().st_size > 100 * len(PAYLOAD),
            what="the checkpointer never copied the WAL into the database file",
        )
        thread = store._checkpointer._thread
        assert thread.name == "sqlite-checkpoint:sessions.db"
        assert thread.is_alive()
    assert not thread.is_alive()  # closed with its store


def test_a_busy_writer_still_starts_the_wal_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    restarts: list[int] = []
    original = SqliteStore._restart_wal

    def counted(self: SqliteStore) -> None:
        restarts.append(1)
        original(self)

    monkeypatch.setattr(_sqlite_checkpoint, "RESTART_PAGES", 32)
    monkeypatch.setattr(_sqlite, "CHECKPOINT_PAGES", 64)
    monkeypatch.setattr(SqliteStore, "_restart_wal", counted)
    with SqliteStore(tmp_path / "sessions.db", "commit", policy=QUIET) as store:
        talkers = [
            threading.Thread(
                target=talked, args=(store, 150, f"talker-{i}"), kwargs={"text": PAYLOAD}
            )
            for i in range(4)
        ]
        for talker in talkers:
            talker.start()
        for talker in talkers:
            talker.join(60)
        wal = (tmp_path / "sessions.db-wal").stat().st_size
        database = (tmp_path / "sessions.db").stat().st_size
    assert restarts, "the writer was never asked to start the WAL over"
    # The WAL's file is as long as the WAL ever was. Never started over, it would hold
    # every page every commit wrote, more than the database itself (7.8 MB against 6.2
    # with the writer's checkpoints left out; 0.6-1.9 MB with them, two other processes
    # spinning on the two cores).
    assert wal < database * 3 // 4, f"WAL {wal:,} bytes beside a database of {database:,}"


def test_a_failing_checkpoint_is_logged_and_costs_no_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(conn: sqlite3.Connection) -> tuple[int, int]:
        if threading.current_thread().name.startswith("sqlite-checkpoint"):
            raise sqlite3.OperationalError("disk I/O error (injected)")
        return _original(conn)

    _original = _sqlite_checkpoint.checkpoint
    monkeypatch.setattr(_sqlite_checkpoint, "checkpoint", broken)
    monkeypatch.setattr(_sqlite, "CHECKPOINT_PAGES", 8)
    with (
        structlog.testing.capture_logs() as logs,
        SqliteStore(tmp_path / "sessions.db", "fsync", policy=QUIET) as store,
    ):
        talked(store, 20, text=PAYLOAD)
        wait_until(
            lambda: any(entry["event"] == "checkpoint_failed" for entry in list(logs)),
            what="the failed checkpoint was not logged",
        )
        loaded = store.load("talker")
        assert loaded is not None
        assert loaded.revision == 20
    with SqliteStore(tmp_path / "sessions.db", "fsync", policy=QUIET) as store:
        loaded = store.load("talker")
        assert loaded is not None
        assert loaded.revision == 20


def test_a_checkpointer_without_a_connection_leaves_each_pass_to_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = SqliteStore._connect

    def refused(self: SqliteStore) -> sqlite3.Connection:
        if threading.current_thread().name.startswith("sqlite-checkpoint"):
            raise sqlite3.OperationalError("unable to open database file (injected)")
        return original(self)

    monkeypatch.setattr(SqliteStore, "_connect", refused)
    path = tmp_path / "sessions.db"
    with (
        structlog.testing.capture_logs() as logs,
        SqliteStore(path, "fsync", policy=QUIET) as store,
    ):
        talked(store, 200, text=PAYLOAD)  # past CHECKPOINT_PAGES: the writer's checkpoint copies it
        wait_until(lambda: path.stat().st_size > 100 * len(PAYLOAD), what="nobody checkpointed")
        assert any(entry["event"] == "checkpointer_failed" for entry in logs)


def test_a_migration_is_in_the_database_file_once_the_store_is_open(tmp_path: Path) -> None:
    # a v2 file made by an older actorflow, migrated to v3 in one transaction on open
    path = tmp_path / "sessions.db"
    shutil.copy(Path(__file__).parent / "fixtures" / "sessions_v2.db", path)
    with SqliteStore(path, "fsync") as store:
        assert store.count() > 0
        # the database file alone, WAL ignored: it already holds the migrated tables
        raw = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
        try:
            [(version,)] = raw.execute("SELECT max(schema_version) FROM meta").fetchall()
        finally:
            raw.close()
    assert version == _sqlite.STORE_SCHEMA_VERSION


_CHILD = textwrap.dedent(
    """
    import sys, threading
    from flow import new_session, step
    from flow.demo import echo
    from flow.stores import SqliteStore, _sqlite, _sqlite_checkpoint

    # a pass every few commits and the WAL started over after most of them
    _sqlite.CHECKPOINT_PAGES = 8
    _sqlite_checkpoint.RESTART_PAGES = 16
    store = SqliteStore(sys.argv[1], "fsync")
    printing = threading.Lock()

    def talk(sid):
        session = new_session(echo, owner="alice", session_id=sid)
        store.save(session, None).result()
        while True:
            new, _ = step(echo, session, "x" * 700)
            store.save(new, session.revision).result()
            session = new
            with printing:
                print(sid, session.revision, flush=True)

    for i in range(4):
        threading.Thread(target=talk, args=(f"s{i}",), daemon=True).start()
    threading.Event().wait()
    """
)


@pytest.mark.slow
def test_sigkill_while_checkpointing_loses_no_acknowledged_step(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    child = start_child(_CHILD, str(path))
    assert child.stdout is not None
    acknowledged: dict[str, int] = {}
    while sum(acknowledged.values()) < 800:
        line = child.stdout.readline()
        assert line, "the child died before it was killed"
        sid, revision = line.split()
        acknowledged[sid] = int(revision)
    kill(child)

    with SqliteStore(path) as store:
        for sid, revision in acknowledged.items():
            loaded = store.load(sid)
            assert loaded is not None
            assert loaded.revision >= revision
            assert loaded.context.get("count") == loaded.revision
            span = store.history_range(sid)
            assert span is not None
            for past_revision in range(span.oldest, span.newest + 1, 7):
                past = store.load(sid, past_revision)
                assert past is not None
                assert past.context.get("count", 0) == past_revision
