"""SqliteStore on real files: concurrency, crash safety, quarantine, schema, failed commits."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

import flow.stores
import flow.stores._sqlite
from flow._errors import InvalidInput, RevisionConflict, SnapshotDecodeError, StoreUnavailable
from flow._session import Session
from flow.stores import MemoryStore, SqliteStore, open_store
from flow.stores._sqlite_schema import STORE_SCHEMA_VERSION

MakeSession = Callable[..., Session]
HERE = Path(__file__).resolve().parent


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """A fsync'd SqliteStore on a fresh file."""
    opened = SqliteStore(tmp_path / "sessions.db")
    try:
        yield opened
    finally:
        opened.close()


class GatedConnection:
    """Stands in for the writer's connection: holds the first write until released,
    and makes chosen writes fail as a full or broken disk would."""

    def __init__(self, conn: sqlite3.Connection, fail_writes: set[int]) -> None:
        self._conn = conn
        self._fail_writes = fail_writes
        self.writes = 0
        self.holding = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def execute(self, sql: str, *params: Any) -> sqlite3.Cursor:
        self._count(sql)
        return self._conn.execute(sql, *params)

    def executemany(self, sql: str, params: Any) -> sqlite3.Cursor:
        self._count(sql)
        return self._conn.executemany(sql, params)

    def _count(self, sql: str) -> None:
        if sql.lstrip().startswith(("INSERT", "BEGIN", "DELETE")):
            self.writes += 1
            if self.writes == 1:
                self.holding.set()
                assert self.release.wait(10), "the test never released the writer"
            if self.writes in self._fail_writes:
                raise sqlite3.OperationalError("disk I/O error")


def gate_writer(store: SqliteStore, fail_writes: set[int]) -> GatedConnection:
    """Swap the writer's connection for a ``GatedConnection`` (the writer must be idle)."""
    store.flush()
    gated = GatedConnection(store._writer_conn, fail_writes)
    store._writer_conn = gated  # type: ignore[assignment]  # a stand-in with the same methods
    return gated


def test_eight_threads_saving_2000_snapshots_all_land_with_the_right_revisions(
    tmp_path: Path, make_session: MakeSession
) -> None:
    path = tmp_path / "sessions.db"
    threads, sessions_each, saves_each = 8, 10, 250
    errors: list[BaseException] = []

    def writer(store: SqliteStore, t: int) -> None:
        try:
            revisions = dict.fromkeys(range(sessions_each), -1)
            for n in range(saves_each):
                k = n % sessions_each
                expected = None if revisions[k] < 0 else revisions[k]
                revisions[k] += 1
                future = store.save(make_session(f"t{t}-s{k}", revision=revisions[k]), expected)
                if n % 3 == 0:
                    future.result(timeout=30)
            store.flush()
        except BaseException as exc:
            errors.append(exc)

    with SqliteStore(path) as store:
        workers = [threading.Thread(target=writer, args=(store, t)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert errors == []
        assert store.writer_stats().saves == threads * saves_each

    with SqliteStore(path) as reopened:
        assert reopened.count() == threads * sessions_each
        for t in range(threads):
            for k in range(sessions_each):
                loaded = reopened.load(f"t{t}-s{k}")
                assert loaded is not None
                assert loaded.revision == saves_each // sessions_each - 1


CRASHING_WRITER = """
import sys
import threading
import time

sys.path.insert(0, {tests_dir!r})
from conftest import build_session
from flow.stores import SqliteStore

store = SqliteStore({path!r}, "fsync")
lock = threading.Lock()


def report(sid, revision):
    with lock:
        sys.stdout.write(f"{{sid}} {{revision}}\\n")
        sys.stdout.flush()


def run(sid):
    store.save(build_session(sid, revision=0), None).result()
    report(sid, 0)
    for revision in range(1, 1_000_000):
        store.save(build_session(sid, revision=revision), revision - 1).result()
        report(sid, revision)


for t in range(8):
    threading.Thread(target=run, args=(f"w{{t}}",), daemon=True).start()
threading.Event().wait()
"""


def test_saves_acknowledged_before_a_sigkill_are_all_there_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    script = tmp_path / "writer.py"
    script.write_text(CRASHING_WRITER.format(tests_dir=str(HERE), path=str(path)))
    acked: dict[str, int] = {}

    def note(line: str) -> None:
        sid, revision = line.split()
        acked[sid] = max(acked.get(sid, -1), int(revision))

    child = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=HERE.parent.parent
    )
    assert child.stdout is not None
    try:
        for _ in range(600):
            line = child.stdout.readline()
            assert line, f"the writer died early (exit {child.poll()})"
            note(line)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        for line in child.stdout:  # acknowledged before the kill, still in the pipe
            note(line)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()

    assert child.returncode == -signal.SIGKILL
    assert len(acked) == 8
    with SqliteStore(path) as reopened:
        for sid, revision in acked.items():
            loaded = reopened.load(sid)
            assert loaded is not None, f"{sid} lost"
            assert loaded.revision >= revision, f"{sid}: acked {revision}, found {loaded.revision}"


def test_a_corrupt_row_is_quarantined_with_its_bytes_and_the_others_still_load(
    tmp_path: Path, make_session: MakeSession
) -> None:
    path = tmp_path / "sessions.db"
    with SqliteStore(path) as store:
        for sid in ("a", "b", "c"):
            store.save(make_session(sid), None).result(timeout=10)
    garbage = b"\x93\x01\x02\x03"  # valid msgpack, but a list rather than a snapshot
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE bases SET data = ? WHERE session_id = 'b'", (garbage,))
    conn.close()

    with SqliteStore(path) as store:
        with pytest.raises(SnapshotDecodeError, match=r"'b'.*quarantine") as caught:
            store.load("b")
        assert caught.value.raw == garbage
        assert store.load("a") is not None
        assert store.load("c") is not None
        assert store.load("b") is None
        assert store.count() == 2

    with SqliteStore(path) as reopened:
        [row] = reopened.quarantined()
    assert row.session_id == "b"
    assert row.raw == garbage
    assert "not a msgpack map" in row.error
    assert row.quarantined_at > 0


def test_a_quarantine_keeps_a_newer_good_snapshot_and_records_the_bytes_once(
    store: SqliteStore, make_session: MakeSession
) -> None:
    store.save(make_session("s1", revision=0), None).result(timeout=10)
    garbage = b"\xc1"
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE bases SET data = ? WHERE session_id = 's1'", (garbage,))
    conn.close()
    store.save(make_session("s1", revision=1), 0)  # queued before the quarantine below

    store._quarantine("s1", garbage, "test: did not decode")
    store._quarantine("s1", garbage, "test: a second reader saw it too")

    loaded = store.load("s1")
    assert loaded is not None
    assert loaded.revision == 1
    assert [row.raw for row in store.quarantined()] == [garbage]


def test_a_file_written_by_a_newer_schema_is_refused_with_both_versions(
    tmp_path: Path, make_session: MakeSession
) -> None:
    path = tmp_path / "sessions.db"
    with SqliteStore(path) as store:
        store.save(make_session("s1"), None).result(timeout=10)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET schema_version = 99")
    conn.close()

    with pytest.raises(StoreUnavailable) as caught:
        SqliteStore(path)

    message = str(caught.value)
    assert str(path) in message
    assert "99" in message
    assert f"up to {STORE_SCHEMA_VERSION}" in message
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT schema_version FROM meta").fetchall() == [(99,)]
    conn.close()


def test_a_file_that_is_not_a_database_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    path.write_bytes(b"this is not a database, just text " * 100)

    with pytest.raises(StoreUnavailable, match=str(path)):
        SqliteStore(path)


def test_durability_modes_set_wal_and_the_synchronous_level(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "full.db", "fsync") as full:
        assert full._writer_conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert full._writer_conn.execute("PRAGMA synchronous").fetchone() == (2,)
    with SqliteStore(tmp_path / "normal.db", "commit") as normal:
        assert normal._writer_conn.execute("PRAGMA synchronous").fetchone() == (1,)
    with pytest.raises(InvalidInput, match="durability"):
        SqliteStore(tmp_path / "x.db", "passivate")  # type: ignore[arg-type]  # the point


def test_a_failed_commit_fails_its_whole_batch_and_later_saves_succeed(
    store: SqliteStore, make_session: MakeSession
) -> None:
    store.save(make_session("before"), None).result(timeout=10)
    gated = gate_writer(store, fail_writes={6})  # 1-4: the first batch; 5: BEGIN; 6: its bases
    first = store.save(make_session("first"), None)
    assert gated.holding.wait(10)
    batch = [store.save(make_session(f"doomed-{i}"), None) for i in range(5)]
    gated.release.set()

    assert first.result(timeout=10) is None
    for future in batch:
        error = future.exception(timeout=10)
        assert isinstance(error, StoreUnavailable)
        assert not isinstance(error, RevisionConflict)
        assert "disk I/O error" in str(error)
        assert isinstance(error.__cause__, sqlite3.OperationalError)
    assert store.writer_stats().failed_transactions == 1

    for i in range(5):
        assert store.load(f"doomed-{i}") is None
        store.save(make_session(f"doomed-{i}"), None).result(timeout=10)
    assert store.count() == 7


def test_a_failed_transaction_rolls_back_the_deletes_and_saves_in_it(
    store: SqliteStore, make_session: MakeSession
) -> None:
    store.save(make_session("kept"), None).result(timeout=10)
    # 1-4: the first batch (BEGIN, base, record, row); then BEGIN, DELETE (fails), ...
    gated = gate_writer(store, fail_writes={6})
    first = store.save(make_session("first"), None)
    assert gated.holding.wait(10)
    doomed = store.save(make_session("doomed"), None)
    delete_errors: list[StoreUnavailable] = []

    def delete_kept() -> None:
        try:
            store.delete("kept")
        except StoreUnavailable as exc:
            delete_errors.append(exc)

    deleting = threading.Thread(target=delete_kept)
    deleting.start()
    deadline = time.monotonic() + 10
    while store._queue.qsize() < 2:
        assert time.monotonic() < deadline, "the delete never reached the writer's queue"
        time.sleep(0.001)  # polling a queue's length: it offers nothing to wait on
    gated.release.set()
    deleting.join(timeout=10)

    assert first.result(timeout=10) is None
    assert isinstance(doomed.exception(timeout=10), StoreUnavailable)
    assert len(delete_errors) == 1
    assert store.load("doomed") is None
    assert store.load("kept") is not None
    assert store.delete("kept") is True


def test_an_unexpected_writer_error_fails_its_batch_and_the_writer_keeps_going(
    store: SqliteStore, make_session: MakeSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_complete(plan: object) -> bool:
        raise RuntimeError("bug in completing futures")

    monkeypatch.setattr(flow.stores._sqlite._BatchPlan, "complete", broken_complete)
    error = store.save(make_session("s1"), None).exception(timeout=10)
    monkeypatch.undo()

    assert isinstance(error, StoreUnavailable)
    assert "writer failed: RuntimeError: bug in completing futures" in str(error)
    store.save(make_session("s2"), None).result(timeout=10)
    assert store.load("s2") is not None


def test_a_full_disk_fails_the_save_and_saves_succeed_once_there_is_room(
    store: SqliteStore, make_session: MakeSession
) -> None:
    store.save(make_session("small"), None).result(timeout=10)
    store.flush()
    conn = store._writer_conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    big = make_session("big", data={"blob": os.urandom(256 * 1024)})

    error = store.save(big, None).exception(timeout=10)

    assert isinstance(error, StoreUnavailable)
    assert "full" in str(error)
    assert store.load("big") is None
    conn.execute("PRAGMA max_page_count = 1073741823")
    store.save(big, None).result(timeout=10)
    loaded = store.load("big")
    assert loaded is not None
    assert loaded.context.get("blob") == big.context.get("blob")


def test_saves_waiting_together_are_committed_in_one_transaction(
    store: SqliteStore, make_session: MakeSession
) -> None:
    gated = gate_writer(store, fail_writes=set())
    before = store.writer_stats().transactions
    first = store.save(make_session("first"), None)
    assert gated.holding.wait(10)
    start = threading.Barrier(64)
    futures: list[Future[None]] = []
    lock = threading.Lock()

    def save(i: int) -> None:
        start.wait()
        future = store.save(make_session(f"s{i:02d}"), None)
        with lock:
            futures.append(future)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    gated.release.set()
    first.result(timeout=10)
    for future in futures:
        future.result(timeout=10)

    stats = store.writer_stats()
    assert stats.transactions - before == 2
    assert stats.largest_batch == 64
    assert store.count() == 65


def test_64_threads_saving_at_once_share_transactions(
    store: SqliteStore, make_session: MakeSession
) -> None:
    rounds = 10
    start = threading.Barrier(64)
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            start.wait()
            store.save(make_session(f"s{i:02d}", revision=0), None).result(timeout=30)
            for revision in range(1, rounds):
                session = make_session(f"s{i:02d}", revision=revision)
                store.save(session, revision - 1).result(timeout=30)
        except BaseException as exc:
            errors.append(exc)

    before = store.writer_stats().transactions
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    transactions = store.writer_stats().transactions - before
    assert transactions <= 64 * rounds // 4, f"{transactions} transactions for {64 * rounds} saves"


def test_the_revision_check_survives_a_reopen(tmp_path: Path, make_session: MakeSession) -> None:
    path = tmp_path / "sessions.db"
    with SqliteStore(path) as store:
        store.save(make_session("s1", revision=0), None).result(timeout=10)
        store.save(make_session("s1", revision=1), 0).result(timeout=10)

    with SqliteStore(path) as reopened:
        with pytest.raises(RevisionConflict):
            reopened.save(make_session("s1", revision=1), 0).result(timeout=10)
        with pytest.raises(RevisionConflict):
            reopened.save(make_session("s1", revision=1), None).result(timeout=10)
        reopened.save(make_session("s1", revision=2), 1).result(timeout=10)
        assert reopened.delete("s1") is True


def test_a_session_deleted_by_another_connection_is_not_brought_back(
    store: SqliteStore, make_session: MakeSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flow.stores._sqlite, "_DATA_VERSION_EVERY", 0.0)  # look every batch
    store.save(make_session("s1", revision=0), None).result(timeout=10)
    store.save(make_session("s1", revision=1), 0).result(timeout=10)
    with sqlite3.connect(store.path) as conn:
        conn.execute("DELETE FROM sessions WHERE session_id = 's1'")
    conn.close()

    with pytest.raises(RevisionConflict) as caught:
        store.save(make_session("s1", revision=2), 1).result(timeout=10)

    assert caught.value.actual is None
    assert store.load("s1") is None


def test_every_call_after_close_raises_store_unavailable(
    store: SqliteStore, make_session: MakeSession
) -> None:
    pending = store.save(make_session("s1"), None)
    store.close()

    assert pending.result(timeout=0) is None
    calls: list[Callable[[], object]] = [
        lambda: store.save(make_session("s2"), None),
        lambda: store.load("s1"),
        lambda: store.delete("s1"),
        lambda: store.list(),
        lambda: store.expired(0.0),
        store.count,
        store.quarantined,
        store.flush,
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable, match="closed"):
            call()
    store.close()
    with SqliteStore(store.path) as reopened:
        assert reopened.load("s1") is not None


def test_open_store_picks_the_store_from_the_url(tmp_path: Path) -> None:
    data_dir = tmp_path / "var" / "data"

    default = open_store(None, data_dir)
    assert isinstance(default, SqliteStore)
    assert default.path == data_dir / "sessions.db"
    assert default.durability == "fsync"
    default.close()

    by_url = open_store(f"sqlite://{tmp_path}/x.db", data_dir, "commit")
    assert isinstance(by_url, SqliteStore)
    assert (by_url.path, by_url.durability) == (tmp_path / "x.db", "commit")
    by_url.close()

    passivating = open_store(str(tmp_path / "y.db"), data_dir, "passivate")
    assert isinstance(passivating, SqliteStore)
    assert (passivating.path, passivating.durability) == (tmp_path / "y.db", "commit")
    passivating.close()

    assert isinstance(open_store("memory://", data_dir), MemoryStore)


@pytest.mark.parametrize(
    ("url", "durability", "message"),
    [
        ("mysql://db/x", "fsync", "unknown scheme 'mysql'"),
        ("sqlite://relative.db", "fsync", "absolute path"),
        ("memory://", "always", "durability"),
    ],
)
def test_open_store_refuses_what_it_cannot_open(
    tmp_path: Path, url: str, durability: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        open_store(url, tmp_path, durability)


def test_the_package_exports_a_sorted_all_that_imports() -> None:
    names = flow.stores.__all__
    assert names == sorted(names)
    for name in names:
        assert getattr(flow.stores, name) is not None


def test_readers_map_the_file_and_still_see_every_commit(
    store: SqliteStore, make_session: MakeSession
) -> None:
    big = "x" * 200_000  # a base of about 200 pages: read through the map
    store.save(make_session("mapped", revision=0, data={"blob": big}), None).result()
    with store._reader(mapped=True) as conn:
        assert conn.execute("PRAGMA mmap_size").fetchone()[0] == flow.stores._sqlite._READER_MMAP
    first = store.load_many(["mapped"])["mapped"]
    assert isinstance(first, Session)
    assert first.context.get("blob") == big
    # the writer rewrites the rows after the readers mapped the file (and checkpoints
    # them into it): a reader's next load sees the new revision, not a stale page
    for revision in range(1, 40):
        store.save(
            make_session("mapped", revision=revision, data={"blob": big[:-revision]}),
            revision - 1,
        ).result()
    store.flush()
    again = store.load_many(["mapped"])["mapped"]
    assert isinstance(again, Session)
    assert again.revision == 39
    assert again.context.get("blob") == big[:-39]


def test_only_loads_of_whole_states_read_through_the_map(
    store: SqliteStore, make_session: MakeSession
) -> None:
    # A base is a run of adjacent pages (mapped: cheap); the records a compaction or a
    # page of history reads lie one to a page among other sessions' records, and each
    # mapped page costs a page fault the first time a connection touches it.
    for revision in range(6):
        store.save(
            make_session("mixed", revision=revision, data={"n": revision}),
            None if revision == 0 else revision - 1,
        ).result()
    store.flush()
    seen: list[tuple[str, int]] = []

    def watched(name: str, read: Callable[..., Any]) -> Callable[..., Any]:
        def run(conn: sqlite3.Connection, *args: Any) -> Any:
            seen.append((name, conn.execute("PRAGMA mmap_size").fetchone()[0]))
            return read(conn, *args)

        return run

    reads = store._reads
    store._reads = dataclasses.replace(
        reads,
        **{
            field.name: watched(field.name, getattr(reads, field.name))
            for field in dataclasses.fields(reads)
        },
    )
    mapped = flow.stores._sqlite._READER_MMAP
    loaded = store.load("mixed")
    assert loaded is not None
    assert loaded.revision == 5
    assert store.load("mixed", revision=2) is not None
    assert isinstance(store.load_many(["mixed"])["mixed"], Session)
    assert store.revisions("mixed", limit=3)
    store.messages("mixed")
    assert store.history_range("mixed") is not None
    store.compact("mixed")
    assert seen == [
        ("state", mapped),
        ("state", mapped),
        ("states", mapped),
        ("revisions", 0),
        ("require_session", 0),
        ("message_rows", 0),
        ("span", 0),
        ("for_compaction", 0),
    ]


@pytest.mark.parametrize("mapped", [False, True])
def test_a_failed_read_is_store_unavailable_and_its_connection_is_not_reused(
    store: SqliteStore, make_session: MakeSession, mapped: bool
) -> None:
    store.save(make_session("kept", revision=0), None).result()
    with pytest.raises(StoreUnavailable, match="no such table"):
        store._read_one("a read", lambda c: c.execute("SELECT * FROM nope"), states=mapped)
    assert store._readers[mapped] == []  # closed, not put back
    loaded = store.load_many(["kept"]) if mapped else {"kept": store.load("kept")}
    assert isinstance(loaded["kept"], Session)
    with pytest.raises(StoreUnavailable, match="no such table"):
        store._read_many("a read", lambda c: c.execute("SELECT * FROM nope"), states=mapped)
