"""The PostgreSQL store's writers: group commit, each batch in one round trip.

A ``PostgresWriter`` is one thread with its own connection (not pooled: it is
always busy) and its own queue. It takes everything waiting (up to
``max_batch``) and commits it as one transaction in one pipeline:
``actorflow_lock_batch`` locks the sessions' rows (in id order, so that two
writers or two daemons never deadlock) and the fenced saves' leases (``FOR
SHARE``: a lease grant waits for this commit, or this batch sees the newer
epoch), and checks that each session is at the revision its first save
expects; behind it in the same pipeline go every base, record and row planned
on that assumption, and the COMMIT. When the check fails (a save that loses
its compare-and-set or its lease: rare, another daemon or a stale actor) the
transaction is rolled back and the batch is run again in two round trips,
each save checked in order, so that only the failing ones fail. A batch with a
delete is run that way too. Only after the commit are the futures completed.

The store runs one writer by default (``PostgresStore(writers=1)``); with
several, each session's operations go to one of them (by its id), so a
session's saves commit in the order they were made. One is faster now that a
batch is one statement: while its commit waits for the server's flush, the
steps of the clients it did not carry queue up, and the next batch takes them
all (half the clients a commit), where two writers each took half as many at
twice the commits, and the commits' CPU, not the flush, was the limit.

Threads: a writer's fields are its own thread's, but for ``put`` (any thread,
a thread-safe queue) and the counters ``stats`` reads (ints, read racily).
"""

from __future__ import annotations

import builtins
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg
import psycopg_pool

from flow._errors import RevisionConflict, StoreUnavailable
from flow._logging import get_logger
from flow.stores._lease import LeaseLost
from flow.stores._log import LogEntry
from flow.stores._postgres_schema import EXPECTATION_NOT_MET, WRITE_BATCH
from flow.stores._sql_log import SaveInfo

__all__ = [
    "LOG_TABLES",
    "DeleteOp",
    "FlushOp",
    "PostgresWriter",
    "SaveOp",
    "WriterStats",
]

_log = get_logger("actorflow.store.postgres")

LOG_TABLES = ("sessions", "bases", "records", "archive", "timers")
"""Every table holding a session's log, by ``session_id``."""
_RETRIES = 3  # a batch that met a deadlock or a concurrent insert is run again this often
_WRITE = (
    f"SELECT * FROM {WRITE_BATCH}(%b::text[], %b::bigint[], %b::text[], %b::bigint[], "
    "%b::text[], "  # deleted
    "%b::text[], %b::bigint[], %b::bytea[], "  # bases
    "%b::text[], %b::bigint[], %b::float8[], %b::bytea[], "  # records
    "%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::bigint[], "  # rows
    "%b::float8[], %b::float8[], %b::float8[], %b::bigint[], %b::bigint[], %b::bigint[], "
    "%b::bigint[], %b::bigint[], %b::bool[], "
    "%b::text[], %b::float8[])"  # due times
)
"""The batch's one statement: ``WRITE_BATCH`` (``flow.stores._postgres_schema``), given
the check's ids, expected revisions, fences and epochs, then ``_BatchPlan.arguments``.
Its arrays travel in binary (``%b``): as text, every bytea element was hex-escaped by a
Python loop, which cost the writer half its CPU at 30 saves a batch."""
_RETRYABLE = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.UniqueViolation,
)


class SaveOp(NamedTuple):
    session_id: str
    expected: int | None
    fence: tuple[str, int] | None
    info: SaveInfo
    entry: LogEntry
    future: Future[None]
    timers: tuple[bool, float | None]  # index_change: changed?, the next due time


class DeleteOp(NamedTuple):
    session_id: str
    future: Future[bool]


class FlushOp(NamedTuple):
    future: Future[None]


_Op = SaveOp | DeleteOp | FlushOp | None


@dataclass(frozen=True, slots=True)
class WriterStats:
    """What the writer has committed since the store was opened."""

    transactions: int
    saves: int
    failed_transactions: int
    largest_batch: int


class PostgresWriter:
    """One group-committing writer thread with its own connection (module docstring).

    Args:
        name: the thread's name.
        connect: opens a configured connection (called again after one is lost).
        where: the store's description, for error messages.
        max_batch: most operations in one transaction.
        on_append: called with each session a commit appended to, and its log's base
            size, tail bytes and tail count after it (``Compactor.offer``).
    """

    def __init__(
        self,
        name: str,
        connect: Callable[[], psycopg.Connection[Any]],
        where: str,
        max_batch: int,
        on_append: Callable[[str, int, int, int], None],
    ) -> None:
        self.where = where
        self._connect = connect
        self._max_batch = max_batch
        self._on_append = on_append
        self._queue: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        self._conn: psycopg.Connection[Any] | None = None
        self._transactions = 0
        self._saves = 0
        self._failed = 0
        self._largest = 0
        self._thread = threading.Thread(target=self._write_loop, name=name, daemon=True)
        self._thread.start()

    def put(self, op: SaveOp | DeleteOp | FlushOp) -> None:
        """Queue ``op`` (any thread)."""
        self._queue.put(op)

    def stop(self) -> None:
        """Commit what is queued, then end the thread and close its connection."""
        self._queue.put(None)
        self._thread.join()
        if self._conn is not None:
            self._conn.close()

    def stats(self) -> WriterStats:
        """The writer's counters so far."""
        return WriterStats(self._transactions, self._saves, self._failed, self._largest)

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
            writes = [op for op in batch if isinstance(op, SaveOp | DeleteOp)]
            if writes:
                self._write_batch(writes)
            for op in batch:
                if isinstance(op, FlushOp):
                    op.future.set_result(None)
            if any(op is None for op in batch):
                return

    def _write_batch(self, writes: builtins.list[SaveOp | DeleteOp]) -> None:
        """Commit one batch (again after a deadlock or a concurrent insert) and answer it."""
        saves = [op for op in writes if isinstance(op, SaveOp)]
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
            for sid, base, grown, count in plan.tails():  # first: a caller told of its
                self._on_append(sid, base, grown, count)  # commit may passivate the session
            plan.complete()
            return

    def _commit_at_once(
        self, conn: psycopg.Connection[Any], saves: builtins.list[SaveOp]
    ) -> _BatchPlan | None:
        """The batch in one statement, planned as if every session were at the revision
        its first save expects and no lease had moved on; None when the database says
        otherwise (nothing written), and ``_commit`` then checks each save.

        ``WRITE_BATCH`` checks that assumption under the rows' locks before it writes,
        and fails the statement (so its implicit transaction) if it is wrong.
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
        check = (ids, [expected[sid] for sid in ids], fenced, [fences[f] for f in fenced])
        try:
            locked = conn.execute(_WRITE, (*check, *plan.arguments)).fetchall()
        except psycopg.Error as exc:
            if exc.sqlstate != EXPECTATION_NOT_MET:
                raise
            return None
        plan.stored_tails = {row[0]: (row[1], row[2], row[3]) for row in locked}
        return plan

    def _fail_all(self, writes: builtins.list[SaveOp | DeleteOp], exc: BaseException) -> None:
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
        """The writer's own connection, made again when lost."""
        conn = self._conn
        if conn is None or conn.broken or conn.closed:
            if conn is not None:
                conn.close()
            self._conn = None
            conn = self._connect()
            self._conn = conn
        return conn

    def _commit(
        self, conn: psycopg.Connection[Any], writes: builtins.list[SaveOp | DeleteOp]
    ) -> _BatchPlan:
        """One transaction in two round trips: lock and read (BEGIN, the rows, the fences),
        then the batch's writes and the COMMIT, each sent as one pipeline. For batches with
        a delete, and for a batch whose ``_commit_at_once`` found a save that fails."""
        ids = sorted({op.session_id for op in writes})
        fenced = sorted({op.fence[0] for op in writes if isinstance(op, SaveOp) and op.fence})
        with conn.pipeline(), conn.transaction():
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
            conn.execute(_WRITE, ([], [], [], [], *plan.arguments))  # checked: no check
        return plan  # the transaction's end sent the COMMIT: round trip 2


def _columns(rows: Sequence[Sequence[Any]], width: int) -> builtins.list[builtins.list[Any]]:
    """``rows`` as ``width`` columns, the arrays an ``unnest`` takes."""
    if not rows:
        return [[] for _ in range(width)]
    return [builtins.list(column) for column in zip(*rows, strict=True)]


class _BatchPlan:
    """One batch checked in order (fence, then compare-and-set chained per session) and its
    writes: deletes, bases, records, then each session's row (the whole row when the batch
    wrote it a base, else the appended records' bytes and count, added to its tail)."""

    def __init__(
        self,
        committed: dict[str, int],
        epochs: dict[str, int],
        writes: Sequence[SaveOp | DeleteOp],
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
        appends: dict[str, tuple[Any, ...]] = {}
        deletes: set[str] = set()
        due: dict[str, float | None] = {}  # the due-time index's new entries (None: drop)
        results = self._results
        for op in writes:
            sid = op.session_id
            current: int | None = revisions[sid] if sid in revisions else committed.get(sid)
            if isinstance(op, DeleteOp):
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
                at = op.timers[1]
                due[sid] = None if at is None else float(at)
            size = 0
            if entry.record is not None:
                records.append((sid, entry.revision, float(entry.at), entry.record))
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
                else:  # a stored row's tail grows: base_rev None (WRITE_BATCH)
                    add = appends.get(sid)
                    count = 1 if add is None else add[13] + 1
                    grown = size if add is None else add[9] + size
                    appends[sid] = (*op.info, grown, None, None, grown, count, False)
            self.saves += 1
            results.append((op.future, None, None))
        rows = [(*row, sid not in committed or sid in deletes) for sid, row in upserts.items()]
        rows.extend(appends.values())
        self.arguments: tuple[builtins.list[Any], ...] = (
            sorted(deletes),
            *_columns(bases, 3),
            *_columns(records, 4),
            *_columns(rows, 15),
            builtins.list(due),
            builtins.list(due.values()),
        )
        """``WRITE_BATCH``'s arguments after the check's: each table's rows as columns."""

    def complete(self) -> None:
        """Complete every future of the committed batch."""
        for future, value, error in self._results:
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)

    def tails(self) -> builtins.list[tuple[str, int, int, int]]:
        """Each session this batch appended to: its base size, the bytes and the count of
        the records after that base."""
        found: builtins.list[tuple[str, int, int, int]] = []
        for sid in self.appended:
            base, grown, count = self.grown[sid]
            if base is None:
                stored = self.stored_tails.get(sid)
                if stored is None:
                    continue
                base, grown, count = stored[0], stored[1] + grown, stored[2] + count
            found.append((sid, base, grown, count))
        return found
