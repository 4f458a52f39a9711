"""PostgresStore: sessions in PostgreSQL, for one daemon or several sharing them.

Group commit: ``save`` encodes on the caller's thread, queues the session on
its writer and returns a future; each writer (``flow.stores._postgres_writer``)
commits everything waiting in one transaction sent as one round trip (a
server-side function checks every compare-and-set and fence under the rows'
locks first) and only then completes the futures: many steps share one commit
(and one fsync with ``synchronous_commit`` on). One writer by default: while
its commit waits for the flush, the next batch gathers (``_postgres_writer``).

Unlike SQLite's writer it caches nothing: other daemons write the same tables.
Reads use the connection pool (one statement per load, so one snapshot);
the compactor writes its own small transaction. Tables, their migration and
the leases table: ``flow.stores._postgres_schema``; leases:
``flow.stores._postgres_lease``.
"""

from __future__ import annotations

import builtins
import math
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import psycopg.conninfo
import psycopg_pool

from flow._errors import InvalidInput, StoreUnavailable
from flow._logging import get_logger
from flow._session import Session
from flow.stores._log import (
    Compactor,
    LogPolicy,
    entry_for,
)
from flow.stores._postgres_gate import ServerGate
from flow.stores._postgres_reads import READS, snapshot
from flow.stores._postgres_schema import COMPACT, ensure_schema
from flow.stores._postgres_writer import (
    LOG_TABLES,
    DeleteOp,
    FlushOp,
    PostgresWriter,
    SaveOp,
    WriterStats,
)
from flow.stores._protocol import Durability, QuarantinedRow
from flow.stores._sql_log import SqlLogStore, save_info
from flow.stores._timer_index import DueTimer, index_change

__all__ = ["PostgresStore"]

_log = get_logger("actorflow.store.postgres")

_T = TypeVar("_T")
_WAIT_FOR_CONNECTION = 3.0  # seconds a call waits for a pooled connection before failing


class PostgresStore(SqlLogStore[psycopg.Connection[Any]]):
    """Sessions in PostgreSQL (see the module docstring).

    Args:
        url: ``postgresql://user@host:port/db`` (libpq's URI: ``?options=-csearch_path%3Dname``
            puts the tables in schema ``name``, which must exist).
        durability: ``"fsync"`` (``synchronous_commit`` as the server sets it, on by
            default: acknowledged once on disk) or ``"commit"`` (``synchronous_commit=off``:
            an actorflow crash loses nothing, a PostgreSQL crash may lose the last
            fraction of a second of acknowledged steps).
        max_batch: most saves committed in one transaction.
        writers: writer threads, each with its own connection; each session's saves go
            to one of them (one by default, the fastest: ``_postgres_writer``).
        pool_size: most pooled connections (the writer, readers, compactor, leases).
        policy: history retention and compaction (default: keep 1,000 revisions).
        connect_timeout: seconds to wait for the server when opening.

    Raises:
        InvalidInput: an argument is out of range.
        StoreUnavailable: the server cannot be reached, or its tables were written
            by a newer store schema.
    """

    _param = "%s"

    def __init__(
        self,
        url: str,
        durability: Durability = "fsync",
        *,
        max_batch: int = 1024,
        writers: int = 1,
        pool_size: int = 16,
        policy: LogPolicy | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        if durability not in ("fsync", "commit"):
            raise InvalidInput(f"durability must be 'fsync' or 'commit', not {durability!r}")
        if max_batch < 1 or pool_size < 2 or not 1 <= writers <= 16:
            raise InvalidInput(
                "max_batch must be at least 1, pool_size at least 2 and writers 1 to 16"
            )
        self.url = url
        self.durability: Durability = durability
        self.policy = policy or LogPolicy()
        self.where = _describe(url)
        self._log_name = self.where
        self._reads = READS
        self.key_prefix = ""  # what FencedStore compares with the lease manager's
        self._max_batch = max_batch
        pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
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
            pool.open(wait=True, timeout=connect_timeout)
            with pool.connection() as conn:
                ensure_schema(conn, self.where)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            pool.close()
            raise StoreUnavailable(f"cannot open session store {self.where}: {exc}") from exc
        except BaseException:
            pool.close()
            raise
        self.pool = ServerGate(pool, url)
        """The connection pool, failing fast while the server is down (readers, the
        compactor, the leases)."""
        self._submit_lock = threading.Lock()
        self._closed = False
        self.compactor = Compactor(f"postgres:{self.where}", self.compact, self.policy)
        self._writers = [
            PostgresWriter(
                f"postgres-writer-{n}",
                self._writer_connection,
                self.where,
                max_batch,
                self.compactor.offer,
            )
            for n in range(writers)
        ]

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
        sid = session.session_id
        info = save_info(session)
        future: Future[None] = Future()
        future.set_running_or_notify_cancel()
        timers = index_change(session, entry)
        self._submit(SaveOp(sid, expected_revision, fence, info, entry, future, timers))
        return future

    def delete(self, session_id: str) -> bool:
        """Delete the session's log after every save queued before it; True if it existed.

        Its lease row stays: a fencing epoch is never handed out twice.
        """
        future: Future[bool] = Future()
        future.set_running_or_notify_cancel()
        self._submit(DeleteOp(session_id, future))
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
        futures: builtins.list[Future[None]] = []
        with self._submit_lock:
            if self._closed:
                return
            for writer in self._writers:
                future: Future[None] = Future()
                future.set_running_or_notify_cancel()
                writer.put(FlushOp(future))
                futures.append(future)
        for future in futures:
            future.result()

    def close(self) -> None:
        """Commit what is queued, stop the writers and close the pool."""
        if self._closed:
            return
        self.compactor.close()
        with self._submit_lock:
            if self._closed:
                return
            self._closed = True
        for writer in self._writers:
            writer.stop()
        self.pool.close()

    def writer_stats(self) -> WriterStats:
        """Counters of the writer threads together (transactions, saves, largest batch)."""
        each = [writer.stats() for writer in self._writers]
        return WriterStats(
            sum(s.transactions for s in each),
            sum(s.saves for s in each),
            sum(s.failed_transactions for s in each),
            max(s.largest_batch for s in each),
        )

    # -- helpers -------------------------------------------------------------------------

    def _submit(self, op: SaveOp | DeleteOp) -> None:
        """Queue ``op`` on its session's writer, so that a session's saves commit in order."""
        writers = self._writers
        writer = writers[zlib.crc32(op.session_id.encode()) % len(writers)]
        with self._submit_lock:
            if self._closed:
                raise StoreUnavailable(f"session store {self.where} is closed")
            writer.put(op)

    def _writer_connection(self) -> psycopg.Connection[Any]:
        """A new connection for a writer (not pooled: a writer's is always busy)."""
        conn = psycopg.connect(
            self.url, autocommit=True, connect_timeout=round(_WAIT_FOR_CONNECTION)
        )
        self._configure(conn)
        self.pool.answered()
        return conn

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
                for table in LOG_TABLES:
                    conn.execute(f"DELETE FROM {table} WHERE session_id = %s", (sid,))
            conn.execute(
                "INSERT INTO quarantine (session_id, raw, error, quarantined_at) "
                "SELECT %(sid)s, %(raw)s, %(error)s, %(at)s WHERE NOT EXISTS "
                "(SELECT 1 FROM quarantine WHERE session_id = %(sid)s AND raw = %(raw)s)",
                {"sid": sid, "raw": raw, "error": error, "at": time.time()},
            )

    def _read_one(
        self, what: str, read: Callable[[psycopg.Connection[Any]], _T], *, states: bool = False
    ) -> _T:
        return self._read(what, read)

    def _fetch_all(self, what: str, sql: str, params: Sequence[Any]) -> builtins.list[Any]:
        return self._read(what, lambda c: c.execute(sql, params).fetchall())

    def _read_many(
        self, what: str, read: Callable[[psycopg.Connection[Any]], _T], *, states: bool = False
    ) -> _T:
        def in_snapshot(conn: psycopg.Connection[Any]) -> _T:
            with snapshot(conn):
                return read(conn)

        return self._read(what, in_snapshot)

    def _commit_compaction(
        self,
        sid: str,
        created_at: float,
        revision: int,
        base: bytes | None,
        cut: int,
        archive: tuple[int, bytes] | None,
    ) -> None:
        seq, archived_messages = (None, None) if archive is None else archive
        with self._connection(f"compacting {sid!r}") as conn:
            conn.execute(
                f"SELECT {COMPACT}(%s, %s, %s, %s, %s, %s, %s)",
                (sid, created_at, revision, base, cut, seq, archived_messages),
            )


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
