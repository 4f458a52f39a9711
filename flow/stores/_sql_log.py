"""SqlLogStore: the session-log methods SQLite and PostgreSQL share, over their own SQL.

Both keep the log in the same tables (``sessions``, ``bases``, ``records``,
``archive``), so loading, time travel, message paging and compaction read and
rebuild it the same way; only the SQL dialect (each store's ``_*_reads``
module, handed over as a ``LogReads``) and how a read reaches the database and
a compaction is committed differ. A store subclasses ``SqlLogStore`` and
provides those as hooks:

- ``_read_one(what, read, states=False)``: ``read(conn)`` for one statement (one
  snapshot);
- ``_read_many(what, read, states=False)``: ``read(conn)`` in one read transaction
  that sees one snapshot across its statements;

  ``states=True`` marks the loads of whole states (a base and the records after
  it): SQLite reads those through connections that map the file, and every other
  read through connections that do not (``SqliteStore._reader``);
- ``_quarantine(session_id, raw, error)``: move a session that did not decode
  out of the log;
- ``_commit_compaction(...)``: write a compaction (a new base, the archived
  messages, the retention cut), skipped when the session changed its identity.

``save_info`` and ``SaveInfo`` are the sessions row a save writes, built once on
the caller's thread by both stores.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from flow._errors import ActorflowError, InvalidInput, SnapshotDecodeError
from flow._rebase import archived, rebased
from flow._record import decode_record
from flow._session import Session
from flow.stores._log import (
    Compactor,
    HistoryRange,
    LogPolicy,
    MessagePage,
    MessageSource,
    RevisionInfo,
    page_messages,
    rebuild,
    revision_info,
)
from flow.stores._protocol import SessionPage, StoredSessionInfo, check_load_many

__all__ = ["CompactionRead", "LogReads", "SaveInfo", "SqlLogStore", "save_info"]

C = TypeVar("C")
T = TypeVar("T")

CompactionRead = tuple[float, int, bytes | None, list[bytes], int | None, list[bytes]]
"""created_at, newest revision, the current base, the records after it, the
retention cut (None: none) and the records the cut drops."""

SaveInfo = tuple[str, str, str, str, str, int, float, float, float | None]
"""A save's sessions row: id, owner, graph, current task, status, revision,
created_at, last_accessed, expires_at."""


def save_info(session: Session) -> SaveInfo:
    """The sessions row ``session``'s save writes (its times as floats, whatever number
    they were made with: PostgreSQL's writer sends each column as one typed array)."""
    meta = session.metadata
    expires_at = meta.expires_at
    return (
        session.session_id,
        meta.owner,
        session.graph_id,
        session.current_task,
        session.status._value_,
        session.revision,
        float(meta.created_at),
        float(meta.last_accessed),
        None if expires_at is None else float(expires_at),
    )


_INFO_COLUMNS = (
    "session_id, owner, graph_id, current_task, status, revision, "
    "created_at, last_accessed, expires_at, size"
)


@dataclass(frozen=True, slots=True)
class LogReads(Generic[C]):
    """A store's log reads in its own SQL, each a free function over a connection ``C``."""

    state: Callable[[C, str, int | None], tuple[bytes, list[bytes]] | None]
    """The base and the records that rebuild a revision (None: the newest), or None."""
    revisions: Callable[[C, str, int, int | None], list[bytes]]
    """The records of the retained revisions below ``before``, newest first."""
    require_session: Callable[[C, str], None]
    """Raises ``SessionNotFound`` unless the session is stored."""
    message_rows: Callable[[C, str], MessageSource]
    """What ``page_messages`` reads a session's messages from."""
    span: Callable[[C, str], HistoryRange | None]
    """The revisions time travel reaches, or None."""
    for_compaction: Callable[[C, str, LogPolicy], CompactionRead | None]
    """What a compaction needs (``CompactionRead``), or None."""
    states: Callable[[C, list[str]], dict[str, tuple[bytes, list[bytes]]]]
    """The newest base and the records after it of each stored session of the ids."""
    compaction_in_one_statement: bool = False
    """``for_compaction`` is one statement, so one snapshot without a read transaction."""


class SqlLogStore(ABC, Generic[C]):
    """The log methods of a SQL store (module docstring); ``C`` is its connection type.

    A subclass sets ``policy``, ``_reads`` and ``_log_name`` (how messages name the
    store) and implements the hooks.
    """

    policy: LogPolicy
    compactor: Compactor
    _reads: LogReads[C]
    _log_name: str
    _param: str
    """The driver's query placeholder (``?`` for sqlite3, ``%s`` for psycopg)."""

    @abstractmethod
    def _read_one(self, what: str, read: Callable[[C], T], *, states: bool = False) -> T:
        """``read(conn)``, one statement's worth (``states``: a load of whole states)."""

    @abstractmethod
    def _read_many(self, what: str, read: Callable[[C], T], *, states: bool = False) -> T:
        """``read(conn)`` in one read transaction (one snapshot; ``states`` as above)."""

    @abstractmethod
    def _fetch_all(self, what: str, sql: str, params: Sequence[Any]) -> builtins.list[Any]:
        """The rows of one statement (``sql`` written with ``_param`` placeholders)."""

    @abstractmethod
    def _quarantine(self, session_id: str, raw: bytes, error: str) -> None:
        """Move a session whose stored bytes did not decode out of the log."""

    @abstractmethod
    def _commit_compaction(
        self,
        session_id: str,
        created_at: float,
        revision: int,
        base: bytes | None,
        cut: int,
        archive: tuple[int, bytes] | None,
    ) -> None:
        """Write a compaction: ``base`` for ``revision`` (None: none), the archived
        messages, and drop what is below ``cut`` (-1: nothing); skipped when the
        session was deleted or made again (another ``created_at``) since the read."""

    def list(
        self, owner: str | None = None, cursor: str | None = None, limit: int = 100
    ) -> SessionPage:
        """Sessions of ``owner`` (every owner when None), ordered by id, after ``cursor``.

        Raises:
            InvalidInput: ``limit`` is below 1.
            StoreUnavailable: the store is closed or could not be read.
        """
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, not {limit}")
        p = self._param
        clauses: builtins.list[str] = []
        params: builtins.list[Any] = []
        if owner is not None:
            clauses.append(f"owner = {p}")
            params.append(owner)
        if cursor is not None:
            clauses.append(f"session_id > {p}")
            params.append(cursor)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        params.append(limit + 1)
        query = f"SELECT {_INFO_COLUMNS} FROM sessions {where} ORDER BY session_id LIMIT {p}"
        rows = self._fetch_all("listing sessions", query, params)
        items = [StoredSessionInfo(*row) for row in rows[:limit]]
        next_cursor = items[-1].session_id if len(rows) > limit else None
        return SessionPage(items, next_cursor)

    def expired(self, now: float, limit: int = 1000) -> builtins.list[str]:
        """Ids of up to ``limit`` sessions whose ``expires_at`` is before ``now``, soonest first."""
        p = self._param
        rows = self._fetch_all(
            "finding expired sessions",
            f"SELECT session_id FROM sessions WHERE expires_at < {p} ORDER BY expires_at LIMIT {p}",
            (now, limit),
        )
        return [row[0] for row in rows]

    def load(self, session_id: str, revision: int | None = None) -> Session | None:
        """The last committed state of ``session_id`` (or revision ``revision``'s), or None.

        Reads the newest base at or before the revision and the records after it.

        Raises:
            RevisionNotFound: ``revision`` is outside the retained history.
            SnapshotDecodeError: the stored bytes did not decode; the session has
                been moved to the quarantine table (later loads return None).
            StoreUnavailable: the store is closed or could not be read.
        """
        reads = self._reads
        found = self._read_one(
            f"loading {session_id!r}",
            lambda c: reads.state(c, session_id, revision),
            states=True,
        )
        if found is None:
            return None
        base, records = found
        try:
            return rebuild(base, records, revision)
        except SnapshotDecodeError as exc:
            self._quarantine(session_id, exc.raw, str(exc))
            raise SnapshotDecodeError(
                f"session {session_id!r} in {self._log_name}: {exc}; "
                "the row was moved to quarantine",
                exc.raw,
            ) from exc

    def load_many(self, session_ids: Sequence[str]) -> dict[str, Session | ActorflowError]:
        """Each stored session of ``session_ids``, in one read (see
        `SessionStore.load_many`); a row that does not decode is quarantined."""
        ids = check_load_many(session_ids)
        reads = self._reads
        found = self._read_many(
            f"loading {len(ids)} sessions", lambda c: reads.states(c, ids), states=True
        )
        loaded: dict[str, Session | ActorflowError] = {}
        for session_id, (base, records) in found.items():
            try:
                loaded[session_id] = rebuild(base, records)
            except SnapshotDecodeError as exc:
                self._quarantine(session_id, exc.raw, str(exc))
                loaded[session_id] = SnapshotDecodeError(
                    f"session {session_id!r} in {self._log_name}: {exc}; "
                    "the row was moved to quarantine",
                    exc.raw,
                )
        return loaded

    def revisions(
        self, session_id: str, limit: int = 100, before: int | None = None
    ) -> builtins.list[RevisionInfo]:
        """The retained revisions below ``before``, newest first, at most ``limit``.

        Raises:
            InvalidInput: ``limit`` is below 1.
            SessionNotFound: no such session.
        """
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, not {limit}")
        reads = self._reads
        rows = self._read_one(
            f"reading revisions of {session_id!r}",
            lambda c: reads.revisions(c, session_id, limit, before),
        )
        return [revision_info(decode_record(row)) for row in rows]

    def messages(self, session_id: str, limit: int = 100, before: int | None = None) -> MessagePage:
        """The newest ``limit`` chat messages numbered below ``before``, oldest first.

        Reads only about what the page holds (``flow.stores._log.page_messages``).

        Raises:
            SessionNotFound: no such session.
        """
        reads = self._reads

        def page(conn: C) -> MessagePage:
            reads.require_session(conn, session_id)
            return page_messages(reads.message_rows(conn, session_id), limit, before)

        return self._read_many(f"reading messages of {session_id!r}", page)

    def history_range(self, session_id: str) -> HistoryRange | None:
        """The revisions time travel reaches, or None when there is no such session."""
        reads = self._reads
        return self._read_one(
            f"reading history of {session_id!r}", lambda c: reads.span(c, session_id)
        )

    def passivated(self, session_id: str) -> None:
        """``session_id`` is at rest: compact it soon if its records outweigh its base."""
        self.compactor.at_rest(session_id)

    def compact(self, session_id: str) -> bool:
        """Write a base for the newest revision and apply retention; False if nothing to do.

        Reads and rebases on the calling thread (the compactor's), then commits the
        base, the archived messages and the cut (``_commit_compaction``). Reads
        only the base, the records after it and, when retention drops some, those
        records: never the whole history; decodes none of them into objects
        (``flow._rebase``).
        """
        reads, policy = self._reads, self.policy
        read = self._read_one if reads.compaction_in_one_statement else self._read_many
        found = read(
            f"compacting {session_id!r}", lambda c: reads.for_compaction(c, session_id, policy)
        )
        if found is None:
            return False
        created_at, newest, base, tail, cut, dropped = found
        if base is None or (not tail and not dropped):
            return False
        made = rebased(base, tail) if tail else None
        archive = archived(dropped)
        cut_at = -1 if cut is None else cut  # -1: drop nothing
        self._commit_compaction(session_id, created_at, newest, made, cut_at, archive)
        return True
