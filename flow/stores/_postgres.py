"""PostgresStore: sessions in PostgreSQL, for one daemon or several sharing them.

One writer thread does group commit: ``save`` encodes on the caller's thread,
queues and returns a future; the writer takes everything waiting (up to
``max_batch``), and in one transaction locks the sessions' rows (``SELECT ...
FOR UPDATE``, in id order so two daemons' writers never deadlock), reads the
fencing epochs of the fenced saves' leases (``FOR SHARE``: a lease grant
waits for this commit, or this batch sees the newer epoch), checks each
compare-and-set in order, sends every base, record and row in one pipeline
and commits. Only then are the futures completed: many steps share one
commit (and one fsync with ``synchronous_commit`` on).

Unlike SQLite's writer it caches nothing: other daemons write the same tables.
Reads use the connection pool (one statement per load, so one snapshot);
the compactor writes its own small transaction. Tables, their migration and
the leases table: ``flow.stores._postgres_schema``; leases:
``flow.stores._postgres_lease``.
"""

from __future__ import annotations

import builtins
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import psycopg
import psycopg.conninfo
import psycopg_pool

from flow._errors import InvalidInput, RevisionConflict, SnapshotDecodeError, StoreUnavailable
from flow._logging import get_logger
from flow._rebase import archived, rebased
from flow._record import decode_record
from flow._session import Session
from flow.stores._lease import LeaseLost
from flow.stores._log import (
    Compactor,
    HistoryRange,
    LogEntry,
    LogPolicy,
    MessagePage,
    RevisionInfo,
    compaction_due,
    entry_for,
    page_messages,
    rebuild,
    revision_info,
)
from flow.stores._postgres_reads import (
    MessageRows,
    read_for_compaction,
    read_revisions,
    read_span,
    read_state,
    require_session,
    snapshot,
)
from flow.stores._postgres_schema import EXPECTATION_NOT_MET, LOCK_BATCH, ensure_schema
from flow.stores._protocol import Durability, QuarantinedRow, SessionPage, StoredSessionInfo
from flow.stores._timer_index import DueTimer, index_change

__all__ = ["PostgresStore"]

_log = get_logger("actorflow.store.postgres")

_T = TypeVar("_T")
_LOG_TABLES = ("sessions", "bases", "records", "archive", "timers")
_WAIT_FOR_CONNECTION = 3.0  # seconds a call waits for a pooled connection before failing
_RETRIES = 3  # a batch that met a deadlock or a concurrent insert is run again this often
_LOCK_AND_CHECK = f"SELECT * FROM {LOCK_BATCH}(%s::text[], %s::bigint[], %s::text[], %s::bigint[])"
_RETRYABLE = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.UniqueViolation,
)

_INFO_COLUMNS = (
    "session_id, owner, graph_id, current_task, status, revision, "
    "created_at, last_accessed, expires_at, size"
)

_INSERT = """
INSERT INTO sessions (session_id, owner, graph_id, current_task, status, revision,
                      created_at, last_accessed, expires_at, size, base_rev, base_size,
                      tail_bytes, tail_count)
VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)
"""
"""A session new to the table: a plain INSERT, so that two daemons creating one id at
once cannot both succeed (the second fails with a unique violation, its batch is run
again and its save sees the row: ``RevisionConflict``)."""

_UPSERT = (
    _INSERT
    + """ON CONFLICT (session_id) DO UPDATE SET
    owner = excluded.owner, graph_id = excluded.graph_id,
    current_task = excluded.current_task, status = excluded.status,
    revision = excluded.revision, created_at = excluded.created_at,
    last_accessed = excluded.last_accessed, expires_at = excluded.expires_at,
    size = excluded.size, base_rev = excluded.base_rev, base_size = excluded.base_size,
    tail_bytes = excluded.tail_bytes, tail_count = excluded.tail_count
"""
)

_APPEND = """
UPDATE sessions SET owner = %s, graph_id = %s, current_task = %s, status = %s, revision = %s,
    created_at = %s, last_accessed = %s, expires_at = %s, size = size + %s,
    tail_bytes = tail_bytes + %s, tail_count = tail_count + %s
WHERE session_id = %s
"""

_BASE = (
    "INSERT INTO bases VALUES (%s, %s, %s) "
    "ON CONFLICT (session_id, revision) DO UPDATE SET data = excluded.data"
)
_RECORD = (
    "INSERT INTO records VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (session_id, revision) DO UPDATE SET at = excluded.at, data = excluded.data"
)

_Info = tuple[str, str, str, str, str, int, float, float, float | None]


_TIMER = (
    "INSERT INTO timers VALUES (%s, %s) ON CONFLICT (session_id) DO UPDATE SET due = excluded.due"
)


class _SaveOp(NamedTuple):
    session_id: str
    expected: int | None
    fence: tuple[str, int] | None
    info: _Info
    entry: LogEntry
    future: Future[None]
    timers: tuple[bool, float | None]  # index_change: changed?, the next due time


class _DeleteOp(NamedTuple):
    session_id: str
    future: Future[bool]


class _FlushOp(NamedTuple):
    future: Future[None]


_Op = _SaveOp | _DeleteOp | _FlushOp | None


@dataclass(frozen=True, slots=True)
class WriterStats:
    """What the writer has committed since the store was opened."""

    transactions: int
    saves: int
    failed_transactions: int
    largest_batch: int


class PostgresStore:
    """Sessions in PostgreSQL (see the module docstring).

    Args:
        url: ``postgresql://user@host:port/db`` (libpq's URI: ``?options=-csearch_path%3Dname``
            puts the tables in schema ``name``, which must exist).
        durability: ``"fsync"`` (``synchronous_commit`` as the server sets it, on by
            default: acknowledged once on disk) or ``"commit"`` (``synchronous_commit=off``:
            an actorflow crash loses nothing, a PostgreSQL crash may lose the last
            fraction of a second of acknowledged steps).
        max_batch: most saves committed in one transaction.
        pool_size: most pooled connections (the writer, readers, compactor, leases).
        policy: history retention and compaction (default: keep 1,000 revisions).
        connect_timeout: seconds to wait for the server when opening.

    Raises:
        InvalidInput: an argument is out of range.
        StoreUnavailable: the server cannot be reached, or its tables were written
            by a newer store schema.
    """

    def __init__(
        self,
        url: str,
        durability: Durability = "fsync",
        *,
        max_batch: int = 1024,
        pool_size: int = 16,
        policy: LogPolicy | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        if durability not in ("fsync", "commit"):
            raise InvalidInput(f"durability must be 'fsync' or 'commit', not {durability!r}")
        if max_batch < 1 or pool_size < 2:
            raise InvalidInput("max_batch must be at least 1 and pool_size at least 2")
        self.url = url
        self.durability: Durability = durability
        self.policy = policy or LogPolicy()
        self.where = _describe(url)
        self.key_prefix = ""  # what FencedStore compares with the lease manager's
        self._max_batch = max_batch
        self.pool = psycopg_pool.ConnectionPool(
            url,
            min_size=2,
            max_size=pool_size,
            kwargs={"autocommit": True, "connect_timeout": max(1, round(connect_timeout))},
            configure=self._configure,
            open=False,
            name=f"actorflow:{self.where}",
            timeout=_WAIT_FOR_CONNECTION,
        )
        try:
            self.pool.open(wait=True, timeout=connect_timeout)
            with self.pool.connection() as conn:
                ensure_schema(conn, self.where)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            self.pool.close()
            raise StoreUnavailable(f"cannot open session store {self.where}: {exc}") from exc
        except BaseException:
            self.pool.close()
            raise
        self._queue: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        self._submit_lock = threading.Lock()
        self._closed = False
        self._transactions = 0
        self._saves = 0
        self._failed = 0
        self._largest = 0
        self._writer_conn: psycopg.Connection[Any] | None = None
        self._writer = threading.Thread(
            target=self._write_loop, name="postgres-writer", daemon=True
        )
        self._writer.start()
        self.compactor = Compactor(f"postgres:{self.where}", self.compact)

    def __repr__(self) -> str:
        return f"PostgresStore({self.where!r}, durability={self.durability!r})"

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        if self.durability == "commit":
            conn.execute("SET synchronous_commit TO off")

    def session_key(self, session_id: str) -> str:
        """The session's key for ``LeaseManager.acquire_reading``: its row's id."""
        return session_id

    # -- the protocol ------------------------------------------------------------------

    def save(
        self,
        session: Session,
        expected_revision: int | None,
        *,
        fence: tuple[str, int] | None = None,
    ) -> Future[None]:
        """Queue ``session`` for commit if the stored revision is ``expected_revision``.

        Args:
            fence: ``(session id, epoch)`` (``Lease.fence``): refused with ``LeaseLost``
                when the session's lease has a newer epoch, checked in the commit's
                own transaction.

        Returns:
            A future completed after the commit, or failed with ``RevisionConflict``,
            ``LeaseLost`` or ``StoreUnavailable``. Its callbacks run on the writer
            thread: they must only hand the outcome on.

        Raises:
            StoreUnavailable: the store is closed.
        """
        entry = entry_for(session, expected_revision)
        meta = session.metadata
        sid = session.session_id
        info: _Info = (
            sid,
            meta.owner,
            session.graph_id,
            session.current_task,
            session.status.value,
            session.revision,
            meta.created_at,
            meta.last_accessed,
            meta.expires_at,
        )
        future: Future[None] = Future()
        future.set_running_or_notify_cancel()
        timers = index_change(session, entry)
        self._submit(_SaveOp(sid, expected_revision, fence, info, entry, future, timers))
        return future

    def load(self, session_id: str, revision: int | None = None) -> Session | None:
        """The last committed state of ``session_id`` (or revision ``revision``'s), or None.

        Raises:
            RevisionNotFound: ``revision`` is outside the retained history.
            SnapshotDecodeError: the stored bytes did not decode; quarantined.
            StoreUnavailable: the server could not be reached.
        """
        found = self._read(f"loading {session_id!r}", lambda c: read_state(c, session_id, revision))
        if found is None:
            return None
        base, records = found
        try:
            return rebuild(base, records, revision)
        except SnapshotDecodeError as exc:
            self._quarantine(session_id, exc.raw, str(exc))
            raise SnapshotDecodeError(
                f"session {session_id!r} in {self.where}: {exc}; the row was moved to quarantine",
                exc.raw,
            ) from exc

    def revisions(
        self, session_id: str, limit: int = 100, before: int | None = None
    ) -> builtins.list[RevisionInfo]:
        """The retained revisions below ``before``, newest first, at most ``limit``.

        Raises:
            SessionNotFound: no such session.
        """
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, not {limit}")
        rows = self._read(
            f"reading revisions of {session_id!r}",
            lambda c: read_revisions(c, session_id, limit, before),
        )
        return [revision_info(decode_record(row)) for row in rows]

    def messages(self, session_id: str, limit: int = 100, before: int | None = None) -> MessagePage:
        """The newest ``limit`` chat messages numbered below ``before``, oldest first.

        Reads only about what the page holds (``flow.stores._log.page_messages``).

        Raises:
            SessionNotFound: no such session.
        """

        def page(conn: psycopg.Connection[Any]) -> MessagePage:
            with snapshot(conn):
                require_session(conn, session_id)
                return page_messages(MessageRows(conn, session_id), limit, before)

        return self._read(f"reading messages of {session_id!r}", page)

    def history_range(self, session_id: str) -> HistoryRange | None:
        """The revisions time travel reaches, or None when there is no such session."""
        return self._read(f"reading history of {session_id!r}", lambda c: read_span(c, session_id))

    def compact(self, session_id: str) -> bool:
        """Write a base for the newest revision and apply retention; False if nothing to do.

        Reads and rebases on the calling thread (the compactor's; ``flow._rebase``:
        no record or chat message is decoded into objects), then writes the
        base, the archived messages and the cut in one transaction of its own,
        skipped when the session was deleted or made again since the read.
        """
        sid = session_id

        def read(conn: psycopg.Connection[Any]) -> Any:
            with snapshot(conn):
                return read_for_compaction(conn, sid, self.policy)

        found = self._read(f"compacting {sid!r}", read)
        if found is None:
            return False
        created_at, newest, base, tail, cut, dropped = found
        if base is None or (not tail and not dropped):
            return False
        made = rebased(base, tail) if tail else None
        archive = archived(dropped)
        cut_at = -1 if cut is None else cut
        self._write_compaction(sid, created_at, newest, made, cut_at, archive)
        return True

    def delete(self, session_id: str) -> bool:
        """Delete the session's log after every save queued before it; True if it existed.

        Its lease row stays: a fencing epoch is never handed out twice.
        """
        future: Future[bool] = Future()
        future.set_running_or_notify_cancel()
        self._submit(_DeleteOp(session_id, future))
        return future.result()

    def put_raw(self, session_id: str, data: bytes) -> None:
        """Replace the newest base's bytes of a session (tests use it to corrupt one).

        Raises:
            KeyError: no session ``session_id`` is stored.
        """

        def put(conn: psycopg.Connection[Any]) -> int:
            return conn.execute(
                "UPDATE bases b SET data = %s FROM sessions s WHERE s.session_id = %s "
                "AND b.session_id = s.session_id AND b.revision = s.base_rev",
                (data, session_id),
            ).rowcount

        if self._read(f"writing {session_id!r}", put) == 0:
            raise KeyError(session_id)

    def list(
        self, owner: str | None = None, cursor: str | None = None, limit: int = 100
    ) -> SessionPage:
        """Sessions of ``owner`` (every owner when None), ordered by id, after ``cursor``.

        Raises:
            InvalidInput: ``limit`` is below 1.
        """
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, not {limit}")
        clauses: builtins.list[str] = []
        params: builtins.list[Any] = []
        if owner is not None:
            clauses.append("owner = %s")
            params.append(owner)
        if cursor is not None:
            clauses.append("session_id > %s")
            params.append(cursor)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        params.append(limit + 1)
        query = f"SELECT {_INFO_COLUMNS} FROM sessions {where} ORDER BY session_id LIMIT %s"
        rows = self._read("listing sessions", lambda c: c.execute(query, params).fetchall())
        items = [StoredSessionInfo(*row) for row in rows[:limit]]
        next_cursor = items[-1].session_id if len(rows) > limit else None
        return SessionPage(items, next_cursor)

    def expired(self, now: float, limit: int = 1000) -> builtins.list[str]:
        """Ids of up to ``limit`` sessions whose ``expires_at`` is before ``now``, soonest first."""
        rows = self._read(
            "finding expired sessions",
            lambda c: c.execute(
                "SELECT session_id FROM sessions WHERE expires_at < %s "
                "ORDER BY expires_at LIMIT %s",
                (now, limit),
            ).fetchall(),
        )
        return [row[0] for row in rows]

    def due_timers(
        self, until: float, limit: int = 100, since: float | None = None
    ) -> builtins.list[DueTimer]:
        """Sessions whose earliest timer is due in (``since``, ``until``], soonest first."""
        low = -math.inf if since is None else since
        rows = self._read(
            "reading the timer index",
            lambda c: c.execute(
                "SELECT session_id, due FROM timers WHERE due > %s AND due <= %s "
                "ORDER BY due LIMIT %s",
                (low, until, limit),
            ).fetchall(),
        )
        return [DueTimer(sid, float(at)) for sid, at in rows]

    def count(self) -> int:
        """How many sessions are stored (quarantined rows excluded)."""
        row = self._read(
            "counting sessions", lambda c: c.execute("SELECT count(*) FROM sessions").fetchone()
        )
        return 0 if row is None else int(row[0])

    def quarantined(self, limit: int = 100) -> builtins.list[QuarantinedRow]:
        """Rows that failed to decode, newest first."""
        rows = self._read(
            "reading the quarantine",
            lambda c: c.execute(
                "SELECT session_id, raw, error, quarantined_at FROM quarantine "
                "ORDER BY quarantined_at DESC, id DESC LIMIT %s",
                (limit,),
            ).fetchall(),
        )
        return [QuarantinedRow(sid, bytes(raw), error, at) for sid, raw, error, at in rows]

    def flush(self) -> None:
        """Block until every save queued so far has been committed (or failed)."""
        future: Future[None] = Future()
        future.set_running_or_notify_cancel()
        with self._submit_lock:
            if self._closed:
                return
            self._queue.put(_FlushOp(future))
        future.result()

    def close(self) -> None:
        """Commit what is queued, stop the writer and close the pool."""
        if self._closed:
            return
        self.compactor.close()
        with self._submit_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._writer.join()
        if self._writer_conn is not None:
            self._writer_conn.close()
        self.pool.close()

    def writer_stats(self) -> WriterStats:
        """Counters of the writer thread (transactions, saves, batch sizes)."""
        return WriterStats(self._transactions, self._saves, self._failed, self._largest)

    # -- helpers -------------------------------------------------------------------------

    def _submit(self, op: _Op) -> None:
        with self._submit_lock:
            if self._closed:
                raise StoreUnavailable(f"session store {self.where} is closed")
            self._queue.put(op)

    @contextmanager
    def _connection(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        if self._closed:
            raise StoreUnavailable(f"session store {self.where} is closed")
        try:
            with self.pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise StoreUnavailable(f"session store {self.where}: {what}: {exc}") from exc
        except psycopg.Error as exc:
            raise StoreUnavailable(
                f"session store {self.where}: {what}: {type(exc).__name__}: {exc}"
            ) from exc

    def _read(self, what: str, read: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """``read`` on a pooled connection; once more on a fresh one if that one was dead
        (after a server restart every pooled connection is)."""
        try:
            with self._connection(what) as conn:
                return read(conn)
        except StoreUnavailable as exc:
            cause = exc.__cause__
            if not isinstance(cause, psycopg.OperationalError) or isinstance(
                cause, psycopg_pool.PoolTimeout
            ):
                raise
        with self._connection(what) as conn:
            return read(conn)

    def _quarantine(self, session_id: str, raw: bytes, error: str) -> None:
        """Move a session whose base or record did not decode out of the log tables,
        when the bad bytes are still on its newest revision's path."""
        sid = session_id
        with self._connection(f"quarantining {sid!r}") as conn, conn.transaction():
            still_there = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM bases b JOIN sessions s USING (session_id) "
                "WHERE b.session_id = %(sid)s AND b.revision >= s.base_rev AND b.data = %(raw)s) "
                "OR EXISTS (SELECT 1 FROM records r JOIN sessions s USING (session_id) "
                "WHERE r.session_id = %(sid)s AND r.revision > s.base_rev AND r.data = %(raw)s) "
                "FROM sessions WHERE session_id = %(sid)s FOR UPDATE",
                {"sid": sid, "raw": raw},
            ).fetchone()
            if still_there is not None and still_there[0]:
                for table in _LOG_TABLES:
                    conn.execute(f"DELETE FROM {table} WHERE session_id = %s", (sid,))
            conn.execute(
                "INSERT INTO quarantine (session_id, raw, error, quarantined_at) "
                "SELECT %(sid)s, %(raw)s, %(error)s, %(at)s WHERE NOT EXISTS "
                "(SELECT 1 FROM quarantine WHERE session_id = %(sid)s AND raw = %(raw)s)",
                {"sid": sid, "raw": raw, "error": error, "at": time.time()},
            )

    def _write_compaction(
        self,
        sid: str,
        created_at: float,
        revision: int,
        base: bytes | None,
        cut: int,
        archive: tuple[int, bytes] | None,
    ) -> None:
        with self._connection(f"compacting {sid!r}") as conn, conn.transaction():
            row = conn.execute(
                "SELECT created_at, revision FROM sessions WHERE session_id = %s FOR UPDATE",
                (sid,),
            ).fetchone()
            if row is None or row[0] != created_at or row[1] < revision:
                return
            if base is not None:
                conn.execute(
                    "INSERT INTO bases VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (sid, revision, base),
                )
                conn.execute(
                    "UPDATE sessions s SET base_rev = %(rev)s, base_size = %(size)s, "
                    "tail_bytes = t.bytes, tail_count = t.count, size = %(size)s + t.bytes "
                    "FROM (SELECT coalesce(sum(length(data)), 0) AS bytes, count(*) AS count "
                    "FROM records WHERE session_id = %(sid)s AND revision > %(rev)s) t "
                    "WHERE s.session_id = %(sid)s AND s.base_rev < %(rev)s",
                    {"sid": sid, "rev": revision, "size": len(base)},
                )
            if archive is not None:
                conn.execute(
                    "INSERT INTO archive VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (sid, *archive),
                )
            conn.execute("DELETE FROM records WHERE session_id = %s AND revision < %s", (sid, cut))
            conn.execute("DELETE FROM bases WHERE session_id = %s AND revision < %s", (sid, cut))

    # -- the writer thread ---------------------------------------------------------------

    def _write_loop(self) -> None:
        get = self._queue.get
        while True:
            batch: builtins.list[_Op] = [get()]
            try:
                while len(batch) < self._max_batch:
                    batch.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            self._largest = max(self._largest, len(batch))
            writes = [op for op in batch if isinstance(op, _SaveOp | _DeleteOp)]
            if writes:
                self._write_batch(writes)
            for op in batch:
                if isinstance(op, _FlushOp):
                    op.future.set_result(None)
            if any(op is None for op in batch):
                return

    def _write_batch(self, writes: builtins.list[_SaveOp | _DeleteOp]) -> None:
        """Commit one batch (again after a deadlock or a concurrent insert) and answer it."""
        saves = [op for op in writes if isinstance(op, _SaveOp)]
        at_once = len(saves) == len(writes)
        for attempt in range(_RETRIES + 1):
            try:
                conn = self._writer_connection()
                try:
                    plan = None
                    if at_once and attempt == 0:
                        plan = self._commit_at_once(conn, saves)
                    if plan is None:
                        plan = self._commit(conn, writes)
                except BaseException:
                    if not conn.broken and not conn.closed:
                        conn.rollback()
                    raise
            except _RETRYABLE as exc:
                if attempt < _RETRIES:
                    continue
                self._fail_all(writes, exc)
                return
            except Exception as exc:  # the writer must outlive anything and answer every caller
                self._fail_all(writes, exc)
                return
            self._transactions += 1
            self._saves += plan.saves
            plan.complete()
            for sid in plan.due(self.policy):
                self.compactor.request(sid)
            return

    def _commit_at_once(
        self, conn: psycopg.Connection[Any], saves: builtins.list[_SaveOp]
    ) -> _BatchPlan | None:
        """The batch in one round trip, planned as if every session were at the revision
        its first save expects and no lease had moved on; None (rolled back) when the
        database says otherwise, and ``_commit`` then checks each save.

        ``LOCK_BATCH`` checks that assumption under the rows' locks, before the writes
        queued behind it in the same pipeline, and fails the transaction if it is wrong.
        """
        expected: dict[str, int | None] = {}
        fences: dict[str, int] = {}
        for op in saves:
            expected.setdefault(op.session_id, op.expected)
            if op.fence is not None:
                name, epoch = op.fence
                fences[name] = min(epoch, fences.get(name, epoch))
        ids = sorted(expected)
        fenced = sorted(fences)
        committed = {sid: rev for sid, rev in expected.items() if rev is not None}
        plan = _BatchPlan(committed, {}, saves)
        try:
            with conn.pipeline():
                locked = conn.execute(
                    _LOCK_AND_CHECK,
                    (ids, [expected[sid] for sid in ids], fenced, [fences[f] for f in fenced]),
                )
                cur = conn.cursor()
                for sql, params in plan.statements:
                    cur.executemany(sql, params)
                conn.commit()  # the one round trip
        except psycopg.Error as exc:
            if exc.sqlstate != EXPECTATION_NOT_MET:
                raise
            conn.rollback()
            return None
        plan.stored_tails = {row[0]: (row[1], row[2], row[3]) for row in locked.fetchall()}
        return plan

    def _fail_all(self, writes: builtins.list[_SaveOp | _DeleteOp], exc: BaseException) -> None:
        self._failed += 1
        if not isinstance(exc, psycopg.Error | psycopg_pool.PoolTimeout):
            _log.exception("postgres_writer_error", saves=len(writes))
        error = StoreUnavailable(
            f"session store {self.where}: commit failed: {type(exc).__name__}: {exc}"
        )
        error.__cause__ = exc
        for op in writes:
            if not op.future.done():
                op.future.set_exception(error)

    def _writer_connection(self) -> psycopg.Connection[Any]:
        """The writer's own connection (not pooled: it is always busy), made again when lost."""
        conn = self._writer_conn
        if conn is None or conn.broken or conn.closed:
            if conn is not None:
                conn.close()
            self._writer_conn = None
            conn = psycopg.connect(self.url, connect_timeout=round(_WAIT_FOR_CONNECTION))
            self._configure(conn)
            conn.commit()
            self._writer_conn = conn
        return conn

    def _commit(
        self, conn: psycopg.Connection[Any], writes: builtins.list[_SaveOp | _DeleteOp]
    ) -> _BatchPlan:
        """One transaction in two round trips: lock and read (BEGIN, the rows, the fences),
        then every write and the COMMIT, each sent as one pipeline. For batches with a
        delete, and for a batch whose ``_commit_at_once`` found a save that fails."""
        ids = sorted({op.session_id for op in writes})
        fenced = sorted({op.fence[0] for op in writes if isinstance(op, _SaveOp) and op.fence})
        with conn.pipeline():
            rows_cur = conn.execute(
                "SELECT session_id, revision, base_size, tail_bytes, tail_count FROM sessions "
                "WHERE session_id = ANY(%s) ORDER BY session_id FOR UPDATE",
                (ids,),
            )
            fences_cur = None
            if fenced:
                fences_cur = conn.execute(
                    "SELECT session_id, epoch FROM leases WHERE session_id = ANY(%s) "
                    "ORDER BY session_id FOR SHARE",
                    (fenced,),
                )
            rows = rows_cur.fetchall()  # sends what is queued and waits: round trip 1
            epochs: dict[str, int] = {} if fences_cur is None else dict(fences_cur.fetchall())
            plan = _BatchPlan({r[0]: r[1] for r in rows}, epochs, writes)
            plan.stored_tails = {r[0]: (r[2], r[3], r[4]) for r in rows}
            cur = conn.cursor()
            for sql, params in plan.statements:
                cur.executemany(sql, params)
            conn.commit()  # round trip 2
        return plan


class _BatchPlan:
    """One batch checked in order (fence, then compare-and-set chained per session) and its
    writes: deletes, bases, records, then each session's row (an upsert when the batch
    wrote it a base, else one update adding the appended records' bytes to its tail)."""

    def __init__(
        self,
        committed: dict[str, int],
        epochs: dict[str, int],
        writes: Sequence[_SaveOp | _DeleteOp],
    ) -> None:
        self.stored_tails: dict[str, tuple[int, int, int]] = {}
        """Each locked row's (base size, tail bytes, tail count) before the batch."""
        # what the batch did to each session's log: the size of a base it wrote (None:
        # none), then the bytes and count of the records it appended after that
        self.grown: dict[str, tuple[int | None, int, int]] = {}
        self.appended: set[str] = set()
        self.saves = 0
        self._results: builtins.list[tuple[Future[Any], Any, BaseException | None]] = []
        revisions: dict[str, int | None] = {}
        bases: builtins.list[tuple[str, int, bytes]] = []
        records: builtins.list[tuple[str, int, float, bytes]] = []
        upserts: dict[str, builtins.list[Any]] = {}
        appends: dict[str, builtins.list[Any]] = {}
        deletes: set[str] = set()
        due: dict[str, float | None] = {}  # the due-time index's new entries (None: drop)
        results = self._results
        for op in writes:
            sid = op.session_id
            current: int | None = revisions[sid] if sid in revisions else committed.get(sid)
            if isinstance(op, _DeleteOp):
                revisions[sid] = None
                upserts.pop(sid, None)
                appends.pop(sid, None)
                bases = [b for b in bases if b[0] != sid]
                records = [r for r in records if r[0] != sid]
                due.pop(sid, None)
                self.grown.pop(sid, None)
                self.appended.discard(sid)
                deletes.add(sid)
                results.append((op.future, current is not None, None))
                continue
            if op.fence is not None and epochs.get(op.fence[0], 0) > op.fence[1]:
                name, epoch = op.fence
                results.append((op.future, None, LeaseLost(name, epoch, epochs[name])))
                continue
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
            if entry.base is not None:
                bases.append((sid, entry.revision, entry.base))
                appends.pop(sid, None)
                base_size = len(entry.base)
                upserts[sid] = [*op.info, base_size, entry.revision, base_size, 0, 0]
                self.grown[sid] = (base_size, 0, 0)
            else:
                base_written, grown, count = self.grown.get(sid, (None, 0, 0))
                self.grown[sid] = (base_written, grown + size, count + 1)
                self.appended.add(sid)
                row = upserts.get(sid)
                if row is not None:
                    row[:9] = op.info
                    row[9] += size
                    row[12] += size
                    row[13] += 1
                else:
                    add = appends.get(sid)
                    count = 1 if add is None else add[-2] + 1
                    grown = size if add is None else add[-3] + size
                    appends[sid] = [*op.info[1:], grown, grown, count, sid]
            self.saves += 1
            results.append((op.future, None, None))
        ids = [(sid,) for sid in sorted(deletes)]
        self.statements: builtins.list[tuple[str, builtins.list[Any]]] = [
            (f"DELETE FROM {table} WHERE session_id = %s", ids) for table in _LOG_TABLES if ids
        ]
        if bases:
            self.statements.append((_BASE, bases))
        if records:
            self.statements.append((_RECORD, records))
        new = [row for sid, row in upserts.items() if sid not in committed or sid in deletes]
        if new:
            self.statements.append((_INSERT, new))
        old = [row for sid, row in upserts.items() if sid in committed and sid not in deletes]
        if old:
            self.statements.append((_UPSERT, old))
        if appends:
            self.statements.append((_APPEND, builtins.list(appends.values())))
        dropped = [(sid,) for sid, at in due.items() if at is None]
        if dropped:
            self.statements.append(("DELETE FROM timers WHERE session_id = %s", dropped))
        kept = [(sid, at) for sid, at in due.items() if at is not None]
        if kept:
            self.statements.append((_TIMER, kept))

    def complete(self) -> None:
        """Complete every future of the committed batch."""
        for future, value, error in self._results:
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)

    def due(self, policy: LogPolicy) -> builtins.list[str]:
        """The sessions this batch appended to whose records now outweigh their base."""
        found: builtins.list[str] = []
        for sid in self.appended:
            base, grown, count = self.grown[sid]
            if base is None:
                stored = self.stored_tails.get(sid)
                if stored is None:
                    continue
                base, grown, count = stored[0], stored[1] + grown, stored[2] + count
            if compaction_due(policy, base, grown, count):
                found.append(sid)
        return found


def _describe(url: str) -> str:
    """``host:port/db`` of a URL, never its password."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise InvalidInput(f"store URL is not a PostgreSQL URL: {exc}") from None
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    db = parts.get("dbname") or parts.get("user") or ""
    return f"postgresql://{host}:{port}/{db}"
