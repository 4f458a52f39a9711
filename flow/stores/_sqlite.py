"""SqliteStore: the embedded default store, one SQLite file with one group-committing writer.

Why one writer thread: SQLite allows one writer at a time, and an fsync'd commit
costs the same for one row as for a thousand. So ``save`` encodes the snapshot on
the caller's thread, queues it and returns a future at once; the writer takes
everything waiting (up to ``max_batch``), checks each compare-and-set, commits
the lot in one transaction and only then completes the futures. Many callers
share one fsync, and an actor can pass the future on to its own caller and go on.
When a batch comes out much smaller than the one before, the writer waits up to
one commit's time (2 ms at most) for the rest to arrive, as PostgreSQL's
``commit_delay`` does.

The writer is the only thread writing the file, so it caches the committed
revision of every session it has seen and the hot path needs no SELECT per
save (``PRAGMA data_version`` tells it when someone else has committed).
Reads use their own connections (a small pool), never the writer's, and see
the last committed state.
"""

from __future__ import annotations

import builtins
import contextlib
import itertools
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from flow._errors import (
    InvalidInput,
    RevisionConflict,
    StoreUnavailable,
)
from flow._logging import get_logger
from flow._session import Session
from flow.stores._log import (
    Compactor,
    LogEntry,
    LogPolicy,
    entry_for,
)
from flow.stores._protocol import Durability, QuarantinedRow
from flow.stores._sql_log import SaveInfo, SqlLogStore, save_info
from flow.stores._sqlite_checkpoint import CHECKPOINT_PAGES, Checkpointer, checkpoint, pages
from flow.stores._sqlite_reads import READS, read_transaction
from flow.stores._sqlite_schema import (
    SCHEMA,
    SESSION,
    STORE_SCHEMA_VERSION,
    migrate_v1,
    migrate_v2,
)
from flow.stores._timer_index import DueTimer, index_change

__all__ = ["STORE_SCHEMA_VERSION", "SqliteStore", "WriterStats"]

_T = TypeVar("_T")
_log = get_logger("actorflow.store.sqlite")

_SYNCHRONOUS: dict[str, str] = {"fsync": "FULL", "commit": "NORMAL"}
_REVISION_CACHE_LIMIT = 262_144
_ROWS_PER_STATEMENT = 1000  # ids per IN (...) stays under SQLite's 32,766 parameters
_MAX_READERS = 8
_PAGE_SIZE = 1024
_READER_MMAP = 1 << 30
"""Bytes of the file a connection loading whole states maps (``PRAGMA mmap_size``)
instead of reading each page through a ``pread`` into its own page cache. The pages
are 1 KiB, so a session's base of 100 KB (1,000 messages) was about 100 reads:
mapped, loading it took 25 us against 68-212 us; a 10-message session's 6-7 us
against 9-10 (one thread, batches of 16 and 64). Address space only: the pages
mapped are the kernel's page cache, shared by every reader (they show in RSS as file
pages, which the kernel may drop). A file past this size is read as before beyond it.

Only loads: a base is a chain of adjacent pages, but the records a compaction, a
page of messages or of revisions reads lie one to a page among other sessions'
(every step appends one), and a mapped page is a page fault the first time each
connection touches it, dearer in this VM than a ``pread`` (long conversations: a
compaction's reads took 5.3 ms mapped against 1.7 ms, 1.7 faults more a step). The
writer keeps ``pread`` too: mapped, it made hot steps no faster (round 15)."""
_LOG_TABLES = ("records", "sessions", "bases", "archive", "timers")
"""A session's tables; ``records`` first: its rows are found through the session's number."""
_MAX_COMMIT_DELAY = 0.002  # seconds the writer may wait for a batch to fill
_DATA_VERSION_EVERY = 0.1  # seconds between checks for other connections' commits
_SWEEP_SESSIONS = 16  # sessions with dropped records that start a retention sweep
_SWEEP_AFTER = 2.0  # seconds a session's dropped records may wait for a fuller sweep
_SWEEP_ROWS = 512  # dropped records one commit deletes while a sweep drains
_SWEEP_MOST = 64  # sessions one sweep statement names
_SWEEP = """
WITH due (sess, floor) AS (
    SELECT s.sess, (SELECT min(b.revision) FROM bases b WHERE b.session_id = s.session_id)
    FROM sessions s WHERE s.sess IN ({marks})
)
DELETE FROM records WHERE rowid IN (
    SELECT r.rowid FROM due JOIN records r ON r.sess = due.sess AND r.revision < due.floor
    ORDER BY r.rowid LIMIT ?
)"""
"""The oldest records of these sessions below each one's oldest base: the revisions
their compactions dropped (nothing else is ever below it: every save writes its
revision's record at or after its first base, and a session made again under the
same id has another number). Oldest first, so each page they share with other
sessions' records of the same moment is rewritten once."""

_UPSERT = """
INSERT INTO sessions (session_id, owner, graph_id, current_task, status, revision,
                      created_at, last_accessed, expires_at, size, base_rev, base_size,
                      tail_bytes, tail_count)
VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)
ON CONFLICT (session_id) DO UPDATE SET
    owner = excluded.owner, graph_id = excluded.graph_id,
    current_task = excluded.current_task, status = excluded.status,
    revision = excluded.revision, created_at = excluded.created_at,
    last_accessed = excluded.last_accessed, expires_at = excluded.expires_at,
    size = excluded.size, base_rev = excluded.base_rev, base_size = excluded.base_size,
    tail_bytes = excluded.tail_bytes, tail_count = excluded.tail_count
"""

_INSERT_RECORD = f"INSERT OR REPLACE INTO records VALUES ({SESSION}, ?, ?, ?)"
"""A step's record, keyed by its session's number (schema v3)."""

_APPEND = """
UPDATE sessions SET current_task = ?, status = ?, revision = ?,
    last_accessed = ?, expires_at = ?, size = size + ?,
    tail_bytes = tail_bytes + ?, tail_count = tail_count + ?
WHERE session_id = ?
"""
"""A step appended to a stored session: the columns a step changes, and not owner,
graph_id and created_at, which no step changes. SQLite rewrites a row's entry in
every index on a column an UPDATE names, even to the same value: naming ``owner``
rewrote the session's ``sessions_owner`` entry on every step (214 against 135 WAL
pages per group commit of 64 steps over 5,000 sessions)."""


class _SaveOp(NamedTuple):
    session_id: str
    expected: int | None
    info: SaveInfo
    entry: LogEntry
    future: Future[None]
    timers: tuple[bool, float | None]  # index_change: changed?, the next due time


class _DeleteOp(NamedTuple):
    session_id: str
    future: Future[bool]


class _QuarantineOp(NamedTuple):
    session_id: str
    raw: bytes
    error: str
    future: Future[None]


class _CompactOp(NamedTuple):
    """A new base and a retention cut for one session, made by the compactor thread."""

    session_id: str
    created_at: float
    revision: int
    base: bytes | None
    cut: int
    archive: tuple[int, bytes] | None
    future: Future[None]


class _FlushOp(NamedTuple):
    future: Future[None]


class _CloseOp(NamedTuple):
    future: Future[None]


_Op = _SaveOp | _DeleteOp | _QuarantineOp | _CompactOp | _FlushOp | _CloseOp


@dataclass(frozen=True, slots=True)
class WriterStats:
    """What the writer thread has done since the store was opened.

    Attributes:
        transactions: transactions committed.
        saves: snapshots committed.
        failed_transactions: transactions rolled back because the commit failed.
        largest_batch: most operations taken in one batch.
    """

    transactions: int
    saves: int
    failed_transactions: int
    largest_batch: int


class SqliteStore(SqlLogStore[sqlite3.Connection]):
    """Sessions in one SQLite file (WAL), written by one group-committing thread.

    Args:
        path: the database file; created (with its tables) when missing.
        durability: ``"fsync"`` (``synchronous=FULL``: a save is acknowledged once
            it is on disk) or ``"commit"`` (``synchronous=NORMAL``: it survives a
            process crash, not a power loss).
        max_batch: most operations committed in one transaction; 1 gives one
            transaction per save (the benchmark's baseline).
        policy: history retention and compaction (default: keep 1,000 revisions).

    Every method raises ``StoreUnavailable`` once the store is closed. One
    store writes a file at a time: the writer caches committed revisions and
    drops the cache when it sees another connection's commit (it looks every
    0.1 s at most), so a save within that window of another writer's commit
    can slip past compare-and-set. An occasional operator's tool is safe
    enough; two live stores on one file are not.

    Raises:
        InvalidInput: ``durability`` or ``max_batch`` is not valid.
        StoreUnavailable: the file cannot be opened, is not a database, or was
            written by a newer store schema.
    """

    _param = "?"

    def __init__(
        self,
        path: str | Path,
        durability: Durability = "fsync",
        *,
        max_batch: int = 1024,
        policy: LogPolicy | None = None,
    ) -> None:
        if durability not in _SYNCHRONOUS:
            raise InvalidInput(f"durability must be 'fsync' or 'commit', not {durability!r}")
        if max_batch < 1:
            raise InvalidInput(f"max_batch must be at least 1, not {max_batch}")
        self.path = Path(path)
        self._log_name = str(self.path)
        self._reads = READS
        self.policy = policy or LogPolicy()
        self.durability: Durability = durability
        self._max_batch = max_batch
        self._synchronous = _SYNCHRONOUS[durability]
        self._writer_conn = self._open_writer()
        self._queue: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        self._submit_lock = threading.Lock()
        self._closed = False
        self._revisions: dict[str, int | None] = {}
        # base_size, tail_bytes, tail_count of the sessions in _revisions (compaction's due)
        self._tails: dict[str, tuple[int, int, int]] = {}
        # idle reader connections: [0] read pages with pread, [1] map the file (loads)
        self._readers: tuple[list[sqlite3.Connection], list[sqlite3.Connection]] = ([], [])
        self._readers_lock = threading.Lock()
        self._transactions = 0
        self._saves = 0
        self._failed_transactions = 0
        self._largest_batch = 0
        self._commit_delay = 0.0
        self._data_version: int | None = None
        self._data_version_checked = -_DATA_VERSION_EVERY
        # the numbers of sessions whose compactions dropped records not yet deleted (in
        # insertion order), and whether a sweep is draining them
        self._sweep_due: dict[int, None] = {}
        self._sweep_since = 0.0
        self._sweeping = False
        self._checkpointer = Checkpointer(self.path.name, self._connect)
        self._wal_pages = 0  # (estimated) added to the WAL since the checkpointer last woke
        self._writer = threading.Thread(
            target=self._write_loop, name=f"sqlite-writer:{self.path.name}", daemon=True
        )
        self._writer.start()
        self.compactor = Compactor(self.path.name, self.compact, self.policy)

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r}, durability={self.durability!r})"

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- opening ---------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open session store {self.path}: {exc}") from exc
        return conn

    def _open_writer(self) -> sqlite3.Connection:
        conn = self._connect()
        try:
            # Small pages for a new file: a step rewrites the index page of its
            # session's records, and the WAL holds whole pages (no effect on a file
            # that exists).
            conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreUnavailable(
                    f"session store {self.path}: cannot switch to WAL mode (got {mode!r})"
                )
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            # Checkpoints run beside the writer, not in its commits (_sqlite_checkpoint).
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            # A deleted session's bytes are overwritten in the file, whatever the
            # SQLite build's default (Debian's is on, others' off); retention's
            # deletes relax it (_maintain).
            conn.execute("PRAGMA secure_delete = ON")
            self._create_schema(conn)
            checkpoint(conn)  # what a migration (or a crash) left in the WAL, before any read
        except StoreUnavailable:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise StoreUnavailable(f"cannot open session store {self.path}: {exc}") from exc
        return conn

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = self._stored_schema_version(conn)
            if found is not None and found > STORE_SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"session store {self.path} was written by store schema version {found}; "
                    f"this build reads versions up to {STORE_SCHEMA_VERSION}: "
                    "open it with a newer actorflow"
                )
            started = time.perf_counter()
            migrating = found is not None and found < STORE_SCHEMA_VERSION
            if migrating:  # one transaction that rewrites tables: seconds per 100,000 records
                self._log_migration("store_migrating", found)
            if found == 1:
                migrate_v1(conn)
            elif found == 2:
                migrate_v2(conn)
            for statement in SCHEMA:
                conn.execute(statement)
            if found is None:
                conn.execute(
                    "INSERT INTO meta (schema_version) VALUES (?)", (STORE_SCHEMA_VERSION,)
                )
            conn.execute("COMMIT")
            if migrating:
                seconds = round(time.perf_counter() - started, 3)
                self._log_migration("store_migrated", found, seconds=seconds)
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _log_migration(self, event: str, found: int | None, **fields: object) -> None:
        path, version = str(self.path), STORE_SCHEMA_VERSION
        _log.info(event, path=path, from_version=found, to_version=version, **fields)

    @staticmethod
    def _stored_schema_version(conn: sqlite3.Connection) -> int | None:
        has_meta = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        if has_meta is None:
            return None
        row = conn.execute("SELECT max(schema_version) FROM meta").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    # -- the protocol ----------------------------------------------------------------

    def save(self, session: Session, expected_revision: int | None) -> Future[None]:
        """Queue ``session`` for commit if the stored revision is ``expected_revision``.

        The snapshot is encoded here, on the caller's thread; the writer commits it
        with whatever else is waiting. Snapshots of one session are committed in
        the order they were saved.

        Returns:
            A future completed after the commit that holds the snapshot, or failed
            with ``RevisionConflict`` (the stored revision was not
            ``expected_revision``; None means the session must not exist) or
            ``StoreUnavailable`` (the commit failed; nothing of its batch was kept).
            Its done-callbacks run on the writer thread, which every other save
            waits for: they must only hand the outcome on, never block.

        Raises:
            StoreUnavailable: the store is closed.
        """
        entry = entry_for(session, expected_revision)
        sid = session.session_id
        info = save_info(session)
        future: Future[None] = Future()
        future.set_running_or_notify_cancel()
        timers = index_change(session, entry)
        self._submit(_SaveOp(sid, expected_revision, info, entry, future, timers))
        return future

    def delete(self, session_id: str) -> bool:
        """Delete ``session_id`` after every save queued before it; True if it existed.

        Returns once the deletion is committed.

        Raises:
            StoreUnavailable: the store is closed, or the commit failed.
        """
        future: Future[bool] = Future()
        future.set_running_or_notify_cancel()
        self._submit(_DeleteOp(session_id, future))
        return future.result()

    def due_timers(
        self, until: float, limit: int = 100, since: float | None = None
    ) -> builtins.list[DueTimer]:
        """Sessions whose earliest timer is due in (``since``, ``until``], soonest first."""
        low = "" if since is None else "due > ? AND "
        params = (until, limit) if since is None else (since, until, limit)
        with self._reader() as conn:
            rows = conn.execute(
                f"SELECT session_id, due FROM timers WHERE {low}due <= ? ORDER BY due LIMIT ?",
                params,
            ).fetchall()
        return [DueTimer(sid, at) for sid, at in rows]

    def count(self) -> int:
        """How many sessions are stored (quarantined rows excluded)."""
        with self._reader() as conn:
            return int(conn.execute("SELECT count(*) FROM sessions").fetchone()[0])

    def quarantined(self, limit: int = 100) -> builtins.list[QuarantinedRow]:
        """Rows that failed to decode, newest first."""
        with self._reader() as conn:
            rows = conn.execute(
                "SELECT session_id, raw, error, quarantined_at FROM quarantine "
                "ORDER BY quarantined_at DESC, rowid DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [QuarantinedRow(sid, bytes(raw), error, at) for sid, raw, error, at in rows]

    def flush(self) -> None:
        """Block until every save queued so far has been committed (or failed)."""
        future: Future[None] = Future()
        future.set_running_or_notify_cancel()
        self._submit(_FlushOp(future))
        future.result()

    def close(self) -> None:
        """Commit what is queued, stop the writer and close the file.

        Later calls (other than ``close``, which does nothing) raise ``StoreUnavailable``.

        Raises:
            StoreUnavailable: the last commit failed (the file is closed all the same).
        """
        if self._closed:
            return
        self.compactor.close()
        future: Future[None] = Future()
        future.set_running_or_notify_cancel()
        with self._submit_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_CloseOp(future))
        try:
            future.result()
        finally:
            self._writer.join()
            self._checkpointer.close()
            self._writer_conn.close()
            with self._readers_lock:
                for pool in self._readers:
                    for conn in pool:
                        conn.close()
                    pool.clear()

    def writer_stats(self) -> WriterStats:
        """Counters of the writer thread (transactions, saves, batch sizes)."""
        return WriterStats(
            self._transactions, self._saves, self._failed_transactions, self._largest_batch
        )

    # -- callers' side -----------------------------------------------------------------

    def _submit(self, op: _Op) -> None:
        with self._submit_lock:
            if self._closed:
                raise StoreUnavailable(f"session store {self.path} is closed")
            self._queue.put(op)

    def _read_one(
        self, what: str, read: Callable[[sqlite3.Connection], _T], *, states: bool = False
    ) -> _T:
        # one statement, or a read that opens its own transaction (``_sqlite_reads``)
        with self._reader(mapped=states) as conn:
            return read(conn)

    def _read_many(
        self, what: str, read: Callable[[sqlite3.Connection], _T], *, states: bool = False
    ) -> _T:
        with self._reader(mapped=states) as conn, read_transaction(conn):
            return read(conn)

    def _fetch_all(self, what: str, sql: str, params: Sequence[Any]) -> builtins.list[Any]:
        with self._reader() as conn:
            return conn.execute(sql, params).fetchall()

    def _commit_compaction(
        self,
        session_id: str,
        created_at: float,
        revision: int,
        base: bytes | None,
        cut: int,
        archive: tuple[int, bytes] | None,
    ) -> None:
        """Handed to the writer, which commits it after its next batch (``_maintain``)."""
        future: Future[None] = Future()
        future.set_running_or_notify_cancel()
        self._submit(_CompactOp(session_id, created_at, revision, base, cut, archive, future))
        future.result()

    def _quarantine(self, session_id: str, raw: bytes, error: str) -> None:
        future: Future[None] = Future()
        future.set_running_or_notify_cancel()
        self._submit(_QuarantineOp(session_id, raw, error, future))
        future.result()

    @contextlib.contextmanager
    def _reader(self, *, mapped: bool = False) -> Iterator[sqlite3.Connection]:
        """An idle reader connection, or a new one; ``mapped``: one that maps the file
        (``_READER_MMAP``: for loads of whole states)."""
        pool = self._readers[mapped]
        with self._readers_lock:
            if self._closed:
                raise StoreUnavailable(f"session store {self.path} is closed")
            conn = pool.pop() if pool else None
        fresh = conn is None
        if conn is None:
            conn = self._connect()
        broken = False
        try:
            if fresh:
                conn.execute("PRAGMA query_only = 1")
                if mapped:
                    conn.execute(f"PRAGMA mmap_size = {_READER_MMAP}")
            yield conn
        except sqlite3.Error as exc:
            broken = True
            raise StoreUnavailable(f"cannot read session store {self.path}: {exc}") from exc
        finally:
            # a connection that failed, or that a read left inside a transaction, is
            # closed; any other goes back to its pool
            if broken or conn.in_transaction:
                conn.close()
            else:
                with self._readers_lock:
                    if self._closed or len(pool) >= _MAX_READERS:
                        conn.close()
                    else:
                        pool.append(conn)

    # -- the writer thread -------------------------------------------------------------

    def _write_loop(self) -> None:
        get = self._queue.get
        previous = 0
        while True:
            batch = [get()]
            self._drain(batch)
            if len(batch) * 2 < previous and self._commit_delay > 0.0:
                # The callers of the last batch are on their way back: committing
                # this stub alone would cost them a whole commit more (see _wait_for).
                self._wait_for(previous - len(batch))
                self._drain(batch)
            previous = len(batch)
            self._largest_batch = max(self._largest_batch, len(batch))
            try:
                if self._write_batch(batch):
                    return
            except Exception as exc:  # a bug here must not leave every later caller waiting
                error = StoreUnavailable(
                    f"session store {self.path}: writer failed: {type(exc).__name__}: {exc}"
                )
                error.__cause__ = exc
                for op in batch:
                    _fail(op.future, error)
                if any(isinstance(op, _CloseOp) for op in batch):
                    return

    def _wait_for(self, more: int) -> None:
        """Wait until ``more`` operations are queued, at most as long as a commit takes.

        Without it, batches settle into a stub and a crowd in turn (1, 63, 1, 63
        at 64 writers): the stub is taken while the last crowd's callers are
        still preparing their next saves. Waiting about one commit's time for
        them (PostgreSQL's ``commit_delay``, adaptive) costs less than the extra
        commit; the sleep gives the GIL to those callers.
        """
        delay = self._commit_delay
        deadline = time.perf_counter() + delay
        queued = self._queue.qsize
        while queued() < more:
            left = deadline - time.perf_counter()
            if left <= 0.0:
                return
            time.sleep(min(left, delay / 4))

    def _drain(self, batch: builtins.list[_Op]) -> None:
        """Add what is queued to ``batch``, up to ``max_batch``."""
        get_nowait = self._queue.get_nowait
        cap = self._max_batch
        # A quarantine ends its batch: it must see the rows the saves before it wrote.
        with contextlib.suppress(queue.Empty):
            while len(batch) < cap and not isinstance(batch[-1], _QuarantineOp):
                batch.append(get_nowait())

    def _write_batch(self, batch: builtins.list[_Op]) -> bool:
        """Commit one batch and complete its futures; True when it held the close request."""
        try:
            self._forget_revisions_if_changed_elsewhere()
            self._load_revisions(batch)
            plan = _BatchPlan(self._revisions, self._tails, batch)
            plan.sweep = self._sweep_now(closing=plan.closing)
            if plan.statements or plan.quarantine is not None:
                started = time.perf_counter()
                self._commit(plan)
                self._wrote(plan.pages)
                took = min(time.perf_counter() - started, _MAX_COMMIT_DELAY)
                self._commit_delay = 0.75 * self._commit_delay + 0.25 * took
                self._transactions += 1
        except Exception as exc:
            self._failed_transactions += 1
            self._revisions.clear()
            self._tails.clear()
            error = StoreUnavailable(
                f"session store {self.path}: commit failed: {type(exc).__name__}: {exc}"
            )
            error.__cause__ = exc
            for op in batch:
                _fail(op.future, error)
            return any(isinstance(op, _CloseOp) for op in batch)
        self._saves += plan.saves
        self._revisions.update(plan.revisions)
        self._tails.update(plan.tails)
        for sid in plan.forget_tails:
            self._tails.pop(sid, None)
        if len(self._revisions) > _REVISION_CACHE_LIMIT:
            self._revisions.clear()
            self._tails.clear()
        for sid in plan.appended:
            tail = self._tails.get(sid)
            if tail is not None:
                self.compactor.offer(sid, *tail)
        plan.complete()
        if plan.compactions or plan.sweep:
            self._maintain(plan)
        if self._checkpointer.restart_due():
            self._restart_wal()
        return plan.finish()

    def _maintain(self, plan: _BatchPlan) -> None:
        """The batch's compactions and retention sweep, in a transaction of their own
        after its saves are answered, not synced (``synchronous = NORMAL``) and not
        zeroing what it frees (``secure_delete = FAST``).

        They rewrite what the log already holds (a new base of a committed revision,
        the deletion of dropped records): lost to a power cut, they are made again
        later, and the next synced commit syncs them with it. Apart, a batch that
        carried a 1,000-message session's new base (about 125 pages) no longer
        waited for it to be synced before its steps were answered.

        Retention drops revisions, not the conversation (their messages are in the
        archive), and nobody asked for their bytes to be erased: the pages its
        deletes free are not zeroed, so the WAL does not carry them (85 of the ~420
        pages a compaction of a 1,000-message session wrote). Their bytes stay in
        free pages until SQLite reuses them or a VACUUM (docs/security.md). A
        deleted session's rows are erased with the batch's saves, under ``ON``.
        """
        conn = self._writer_conn
        try:
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA secure_delete = FAST")
            try:
                with self._transaction():
                    for compaction in plan.compactions:
                        self._write_compaction(compaction)
                    if plan.sweep:
                        plan.swept_all = self._sweep(plan.sweep, everything=plan.closing)
            finally:
                conn.execute("PRAGMA secure_delete = ON")
                conn.execute(f"PRAGMA synchronous={self._synchronous}")
        except Exception as exc:
            self._failed_transactions += 1
            error = StoreUnavailable(
                f"session store {self.path}: compaction failed: {type(exc).__name__}: {exc}"
            )
            error.__cause__ = exc
            for op in plan.compactions:
                _fail(op.future, error)
            return
        bases = [op.base for op in plan.compactions if op.base is not None]
        swept = _SWEEP_ROWS // 4 if plan.sweep else 0  # rows' worth of pages a drain rewrites
        self._wrote(pages(len(bases) + swept, sum(map(len, bases))))
        if plan.sweep:
            self._swept(plan)
        for op in plan.compactions:
            self._tails.pop(op.session_id, None)  # its commit reset the session's tail
            op.future.set_result(None)

    def _wrote(self, added: int) -> None:
        """Count the WAL pages a commit added; wake the checkpointer every
        ``CHECKPOINT_PAGES``."""
        self._wal_pages += added
        if self._wal_pages >= CHECKPOINT_PAGES:
            self._wal_pages = 0
            self._checkpointer.wake()

    def _restart_wal(self) -> None:
        """Checkpoint what the checkpointer has not copied yet, between two batches, so
        that the next transaction starts the WAL over (``_sqlite_checkpoint``)."""
        try:
            frames, _ = checkpoint(self._writer_conn)
        except sqlite3.Error as exc:  # asked again after the checkpointer's next pass
            _log.warning("checkpoint_failed", path=str(self.path), error=str(exc))
            frames = 0
        if frames >= 0:  # -1: the checkpointer was running one; try after the next batch
            self._checkpointer.restarted()

    def _commit(self, plan: _BatchPlan) -> None:
        """Write ``plan`` in one transaction (each kind of row in one ``executemany``)."""
        with self._transaction() as conn:
            for sql, params in plan.statements:
                conn.executemany(sql, params)
            if plan.quarantine is not None:
                self._commit_quarantine(plan, plan.quarantine)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` on the writer's connection, ``COMMIT`` after the block,
        ``ROLLBACK`` if it raised."""
        conn = self._writer_conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    def _commit_quarantine(self, plan: _BatchPlan, op: _QuarantineOp) -> None:
        """Move a session whose base or record did not decode out of the tables."""
        conn = self._writer_conn
        sid = op.session_id
        # only when the bad bytes are still on the newest revision's path: a
        # newer base saved since then makes the session good again
        still_there = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM bases b JOIN sessions s USING (session_id) "
            "WHERE b.session_id = ? AND b.revision >= s.base_rev AND b.data = ?) "
            "OR EXISTS (SELECT 1 FROM records r JOIN sessions s ON r.sess = s.sess "
            "WHERE s.session_id = ? AND r.revision > s.base_rev AND r.data = ?)",
            (sid, op.raw, sid, op.raw),
        ).fetchone()[0]
        if still_there:
            for table in _LOG_TABLES:
                conn.execute(_delete_sql(table), (sid,))
            plan.revisions[sid] = None
        conn.execute(  # two loads of one bad row quarantine it once
            "INSERT INTO quarantine (session_id, raw, error, quarantined_at) "
            "SELECT ?, ?, ?, ? WHERE NOT EXISTS "
            "(SELECT 1 FROM quarantine WHERE session_id = ? AND raw = ?)",
            (sid, op.raw, op.error, time.time(), sid, op.raw),
        )

    def _write_compaction(self, op: _CompactOp) -> None:
        """Add the compactor's base, archive the dropped records' messages, cut the log.

        Skipped when the session was deleted (or deleted and made again) since
        the compactor read it.
        """
        conn = self._writer_conn
        sid = op.session_id
        row = conn.execute(
            "SELECT created_at, revision, sess FROM sessions WHERE session_id = ?", (sid,)
        ).fetchone()
        if row is None or row[0] != op.created_at or row[1] < op.revision:
            return
        if op.base is not None:
            conn.execute(
                "INSERT OR IGNORE INTO bases VALUES (?, ?, ?)", (sid, op.revision, op.base)
            )
            tail_bytes, tail_count = conn.execute(
                "SELECT coalesce(sum(length(data)), 0), count(*) FROM records "
                f"WHERE sess = {SESSION} AND revision > ?",
                (sid, op.revision),
            ).fetchone()
            conn.execute(
                "UPDATE sessions SET base_rev = ?, base_size = ?, tail_bytes = ?, "
                "tail_count = ?, size = ? WHERE session_id = ? AND base_rev < ?",
                (
                    op.revision,
                    len(op.base),
                    tail_bytes,
                    tail_count,
                    len(op.base) + tail_bytes,
                    sid,
                    op.revision,
                ),
            )
        if op.archive is not None:
            conn.execute("INSERT OR IGNORE INTO archive VALUES (?, ?, ?)", (sid, *op.archive))
        # (secure_delete FAST: _maintain)
        conn.execute("DELETE FROM bases WHERE session_id = ? AND revision < ?", (sid, op.cut))
        if op.cut >= 0:
            if not self._sweep_due:
                self._sweep_since = time.monotonic()
            self._sweep_due[row[2]] = None

    def _sweep_now(self, *, closing: bool) -> builtins.list[int]:
        """The sessions whose dropped records this batch deletes some of (none: not yet).

        A sweep starts once ``_SWEEP_SESSIONS`` sessions wait, or the first has
        waited ``_SWEEP_AFTER`` seconds, and then drains: each commit deletes up to
        ``_SWEEP_ROWS`` of their records, oldest first, until none is left (one
        sweep of 16 long sessions, some 3,200 records in one commit, held its
        batch 15-25 ms).
        """
        due = self._sweep_due
        if not due:
            return []
        if (
            closing
            or self._sweeping
            or len(due) >= _SWEEP_SESSIONS
            or time.monotonic() - self._sweep_since >= _SWEEP_AFTER
        ):
            return builtins.list(itertools.islice(due, None if closing else _SWEEP_MOST))
        return []

    def _swept(self, plan: _BatchPlan) -> None:
        """After a committed sweep: drain on, or forget the sessions it emptied and wait for
        the next sweep's worth (sessions compacted meanwhile wait from now)."""
        self._sweeping = not plan.swept_all
        if plan.swept_all:
            for sess in plan.sweep:
                self._sweep_due.pop(sess, None)
            self._sweep_since = time.monotonic()

    def _sweep(self, numbers: builtins.list[int], *, everything: bool) -> bool:
        """Delete dropped records of these sessions in this transaction, oldest first, up to
        ``_SWEEP_ROWS`` unless ``everything``; True when none of theirs is left."""
        conn = self._writer_conn
        limit = -1 if everything else _SWEEP_ROWS
        before = conn.total_changes  # (a cursor's rowcount is -1 for a WITH statement)
        # (at close every waiting session: a statement names at most this many)
        for start in range(0, len(numbers), _ROWS_PER_STATEMENT):
            chunk = numbers[start : start + _ROWS_PER_STATEMENT]
            marks = ",".join("?" * len(chunk))
            conn.execute(_SWEEP.format(marks=marks), (*chunk, limit))
        return everything or conn.total_changes - before < limit

    def _forget_revisions_if_changed_elsewhere(self) -> None:
        """Drop the revision cache when another connection has committed to the file.

        Nothing in this store does (readers are query-only), but an operator's
        tool might: without this, a session it deleted could be brought back by
        a save that the stale cache let through. Checked at most every
        ``_DATA_VERSION_EVERY`` seconds: each call into SQLite costs the writer a
        round for the GIL, and one per batch cost a quarter of the throughput.
        """
        now = time.monotonic()
        if now < self._data_version_checked + _DATA_VERSION_EVERY:
            return
        self._data_version_checked = now
        version = self._writer_conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._revisions.clear()
            self._data_version = version

    def _load_revisions(self, batch: builtins.list[_Op]) -> None:
        """Cache the committed revision of every session the batch touches and the cache lacks."""
        cache = self._revisions
        unknown = {
            op.session_id
            for op in batch
            if isinstance(op, _SaveOp | _DeleteOp)
            and (op.session_id not in cache or op.session_id not in self._tails)
        }
        if not unknown:
            return
        ids = list(unknown)
        conn = self._writer_conn
        for start in range(0, len(ids), _ROWS_PER_STATEMENT):
            chunk = ids[start : start + _ROWS_PER_STATEMENT]
            marks = ",".join("?" * len(chunk))
            for sid, revision, base_size, tail_bytes, tail_count in conn.execute(
                "SELECT session_id, revision, base_size, tail_bytes, tail_count FROM sessions "
                f"WHERE session_id IN ({marks})",
                chunk,
            ):
                cache[sid] = revision
                self._tails[sid] = (base_size, tail_bytes, tail_count)
        for sid in ids:
            cache.setdefault(sid, None)


class _BatchPlan:
    """One batch checked in order (compare-and-set chained per session) and its writes.

    ``statements`` are ``executemany`` calls for one transaction: deletes, then
    the upserts of the sessions the batch wrote a base for (a new session's row
    gives its records their number), every base and record of the batch (each
    revision is kept), and one update per other session that adds the appended
    records' bytes to its tail; then a quarantine (always last in its batch).
    Compactions and the retention sweep follow in a transaction of their own
    (``SqliteStore._maintain``).
    """

    def __init__(
        self,
        committed: dict[str, int | None],
        tails: dict[str, tuple[int, int, int]],
        batch: Iterable[_Op],
    ) -> None:
        self.revisions: dict[str, int | None] = {}
        self.tails: dict[str, tuple[int, int, int]] = {}
        self.forget_tails: list[str] = []
        self.appended: set[str] = set()
        self.saves = 0
        self.pages = 0  # about the WAL pages its commit adds (_sqlite_checkpoint.pages)
        self.quarantine: _QuarantineOp | None = None
        self.compactions: list[_CompactOp] = []
        # set by the writer: the numbers of sessions whose dropped records this batch
        # deletes (some or all of them: ``swept_all``)
        self.sweep: list[int] = []
        self.swept_all = False
        self._results: list[tuple[Future[Any], Any, BaseException | None]] = []
        self._close: Future[None] | None = None
        self._flushes: list[Future[None]] = []
        bases: list[tuple[str, int, bytes]] = []
        records: list[tuple[str, int, float, bytes]] = []
        rows: dict[str, list[Any]] = {}  # upserts: a base was written in this batch
        appends: dict[str, list[Any]] = {}
        deletes: set[str] = set()
        due: dict[str, float | None] = {}  # the due-time index's new entries (None: drop)
        data = 0  # bytes of the records and bases saved (a deleted session's too: an estimate)
        revisions = self.revisions
        results = self._results
        for op in batch:
            if isinstance(op, _SaveOp):
                sid = op.session_id
                current = revisions[sid] if sid in revisions else committed.get(sid)
                if current != op.expected:
                    results.append((op.future, None, RevisionConflict(sid, op.expected, current)))
                    continue
                entry = op.entry
                revisions[sid] = entry.revision
                if op.timers[0]:
                    due[sid] = op.timers[1]
                size = 0
                if entry.record is not None:
                    records.append((sid, entry.revision, entry.at, entry.record))
                    size = len(entry.record)
                    data += size
                if entry.base is not None:
                    bases.append((sid, entry.revision, entry.base))
                    appends.pop(sid, None)
                    base_size = len(entry.base)
                    data += base_size
                    rows[sid] = [*op.info, base_size, entry.revision, base_size, 0, 0]
                    self.tails[sid] = (base_size, 0, 0)
                else:
                    tail = self.tails.get(sid, tails.get(sid))
                    if tail is not None:
                        self.tails[sid] = (tail[0], tail[1] + size, tail[2] + 1)
                    self.appended.add(sid)
                    row = rows.get(sid)
                    if row is not None:
                        row[:9] = op.info
                        row[9] += size
                        row[12] += size
                        row[13] += 1
                    else:
                        add = appends.get(sid)
                        count = 1 if add is None else add[-2] + 1
                        grown = size if add is None else add[-3] + size
                        # op.info: session_id, owner, graph_id, current_task, status, revision,
                        # created_at, last_accessed, expires_at; _APPEND sets 3-5 and 7-8
                        appends[sid] = [*op.info[3:6], *op.info[7:9], grown, grown, count, sid]
                self.saves += 1
                results.append((op.future, None, None))
            elif isinstance(op, _DeleteOp):
                sid = op.session_id
                current = revisions[sid] if sid in revisions else committed.get(sid)
                revisions[sid] = None
                rows.pop(sid, None)
                appends.pop(sid, None)
                bases = [b for b in bases if b[0] != sid]
                records = [r for r in records if r[0] != sid]
                due.pop(sid, None)
                self.tails.pop(sid, None)
                self.forget_tails.append(sid)
                deletes.add(sid)
                results.append((op.future, current is not None, None))
            elif isinstance(op, _QuarantineOp):
                self.quarantine = op
                results.append((op.future, None, None))
            elif isinstance(op, _CompactOp):
                self.compactions.append(op)  # completed by the writer's _maintain
            elif isinstance(op, _FlushOp):
                self._flushes.append(op.future)  # after the batch's compactions too
            else:
                self._close = op.future
        self.pages = pages(len(records) + len(bases) + len(rows) + len(appends), data)
        self.statements: list[tuple[str, list[Any]]] = _delete_statements(deletes)
        if rows:  # before the records: a new session's row gives them its number
            self.statements.append((_UPSERT, list(rows.values())))
        if bases:
            self.statements.append(("INSERT OR REPLACE INTO bases VALUES (?, ?, ?)", bases))
        if records:
            self.statements.append((_INSERT_RECORD, records))
        if appends:
            self.statements.append((_APPEND, list(appends.values())))
        dropped = [(sid,) for sid, at in due.items() if at is None]
        if dropped:
            self.statements.append(("DELETE FROM timers WHERE session_id = ?", dropped))
        kept = [(sid, at) for sid, at in due.items() if at is not None]
        if kept:
            self.statements.append(("INSERT OR REPLACE INTO timers VALUES (?, ?)", kept))

    @property
    def closing(self) -> bool:
        """Whether the batch holds the close request."""
        return self._close is not None

    def complete(self) -> None:
        """Answer the committed batch's saves, deletes and quarantines."""
        for future, value, error in self._results:
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)

    def finish(self) -> bool:
        """After its compactions and sweep: complete the batch's flushes and close request;
        True when it held the close request."""
        for future in self._flushes:
            future.set_result(None)
        if self._close is not None:
            self._close.set_result(None)
            return True
        return False


def _delete_statements(deletes: set[str]) -> list[tuple[str, list[Any]]]:
    ids = [(sid,) for sid in sorted(deletes)]
    if not ids:
        return []
    return [(_delete_sql(table), ids) for table in _LOG_TABLES]


def _delete_sql(table: str) -> str:
    """The statement that deletes a session's rows of ``table`` (its ``?`` the session id)."""
    if table == "records":
        return f"DELETE FROM records WHERE sess = {SESSION}"
    return f"DELETE FROM {table} WHERE session_id = ?"


def _fail(future: Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
