"""MemoryStore: the store protocol in a dict, for tests and throwaway runtimes.

It keeps each session's log as bytes (bases, records, archive), not sessions,
so a load is an independent copy and a snapshot that would not survive the
codec fails here as it would on disk. Compaction runs on its own thread, as
in the other stores.
"""

from __future__ import annotations

import bisect
import builtins
import heapq
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from flow._errors import (
    ActorflowError,
    InvalidInput,
    RevisionConflict,
    RevisionNotFound,
    SessionNotFound,
    SnapshotDecodeError,
    StoreUnavailable,
)
from flow._rebase import archived, rebased
from flow._record import decode_record
from flow._session import Session
from flow.stores._log import (
    Compactor,
    HistoryRange,
    LogPolicy,
    MessagePage,
    RevisionInfo,
    entry_for,
    page_messages,
    rebuild,
    retention_cut,
    revision_info,
)
from flow.stores._protocol import QuarantinedRow, SessionPage, StoredSessionInfo, check_load_many
from flow.stores._timer_index import DueTimer, index_change

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Log:
    info: StoredSessionInfo
    base_revisions: builtins.list[int]
    bases: dict[int, bytes]
    records: builtins.list[tuple[int, float, bytes]]
    archive: builtins.list[tuple[int, bytes]] = field(default_factory=builtins.list)
    tail_bytes: int = 0
    tail_count: int = 0

    def newest_base(self, revision: int | None = None) -> int:
        if revision is None:
            return self.base_revisions[-1]
        return self.base_revisions[bisect.bisect_right(self.base_revisions, revision) - 1]

    def records_after(self, base: int) -> builtins.list[bytes]:
        revs = [r[0] for r in self.records]
        return [r[2] for r in self.records[bisect.bisect_right(revs, base) :]]


class MemoryStore:
    """Sessions in memory: thread-safe, compare-and-set honoured, nothing persisted.

    ``save`` commits before it returns, so its future is already done.

    Args:
        policy: history retention and compaction (default: keep 1,000 revisions).
    """

    def __init__(self, policy: LogPolicy | None = None) -> None:
        self.policy = policy or LogPolicy()
        self._lock = threading.Lock()
        self._entries: dict[str, _Log] = {}
        self._due: dict[str, float] = {}  # the due-time index of timers
        self._quarantine: builtins.list[QuarantinedRow] = []
        self._closed = False
        self.compactor = Compactor("memory", self.compact, self.policy)

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._entries)} sessions)"

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def save(self, session: Session, expected_revision: int | None) -> Future[None]:
        """Store ``session`` if the stored revision is ``expected_revision`` (None: must not exist).

        Appends the step's record when the session carries it, else writes a whole base.

        Returns:
            A future that is already done: with None, or with ``RevisionConflict``.

        Raises:
            StoreUnavailable: the store is closed.
        """
        entry = entry_for(session, expected_revision)
        timers_changed, next_due = index_change(session, entry)
        future: Future[None] = Future()
        future.set_running_or_notify_cancel()
        tail: tuple[int, int, int] | None = None  # the log after an append (base, records)
        with self._lock:
            self._check_open()
            log = self._entries.get(session.session_id)
            stored = None if log is None else log.info.revision
            if stored != expected_revision:
                future.set_exception(
                    RevisionConflict(session.session_id, expected_revision, stored)
                )
                return future
            if entry.base is not None:
                if log is None:
                    log = _Log(self._info(session, 0), [], {}, [])
                    self._entries[session.session_id] = log
                if entry.revision not in log.bases:
                    log.base_revisions.append(entry.revision)
                log.bases[entry.revision] = entry.base
                if entry.record is not None:
                    log.records.append((entry.revision, entry.at, entry.record))
                log.tail_bytes = log.tail_count = 0
            else:
                assert log is not None  # expected_revision matched a stored one
                assert entry.record is not None  # a step's save has its record
                log.records.append((entry.revision, entry.at, entry.record))
                log.tail_bytes += len(entry.record)
                log.tail_count += 1
                tail = (len(log.bases[log.newest_base()]), log.tail_bytes, log.tail_count)
            base_size = len(log.bases[log.newest_base()])
            log.info = self._info(session, base_size + log.tail_bytes)
            if timers_changed:
                if next_due is None:
                    self._due.pop(session.session_id, None)
                else:
                    self._due[session.session_id] = next_due
        if tail is not None:  # first: the future's callbacks may tell it the session rests
            self.compactor.offer(session.session_id, *tail)
        future.set_result(None)
        return future

    @staticmethod
    def _info(session: Session, size: int) -> StoredSessionInfo:
        meta = session.metadata
        return StoredSessionInfo(
            session_id=session.session_id,
            owner=meta.owner,
            graph_id=session.graph_id,
            current_task=session.current_task,
            status=session.status._value_,
            revision=session.revision,
            created_at=meta.created_at,
            last_accessed=meta.last_accessed,
            expires_at=meta.expires_at,
            size=size,
        )

    def load_many(self, session_ids: Sequence[str]) -> dict[str, Session | ActorflowError]:
        """Each stored session of ``session_ids`` (see `SessionStore.load_many`)."""
        found: dict[str, Session | ActorflowError] = {}
        for session_id in check_load_many(session_ids):
            try:
                session = self.load(session_id)
            except SnapshotDecodeError as exc:
                found[session_id] = exc
                continue
            if session is not None:
                found[session_id] = session
        return found

    def load(self, session_id: str, revision: int | None = None) -> Session | None:
        """The stored session (or its revision ``revision``) as a fresh copy, or None.

        Raises:
            RevisionNotFound: ``revision`` is outside the retained history.
            SnapshotDecodeError: the bytes did not decode; moved to quarantine.
            StoreUnavailable: the store is closed.
        """
        with self._lock:
            self._check_open()
            log = self._entries.get(session_id)
            if log is None:
                return None
            if revision is not None:
                oldest = log.base_revisions[0]
                if not oldest <= revision <= log.info.revision:
                    raise RevisionNotFound(session_id, revision, oldest, log.info.revision)
            base_rev = log.newest_base(revision)
            base = log.bases[base_rev]
            records = log.records_after(base_rev)
        try:
            return rebuild(base, records, revision)
        except SnapshotDecodeError as exc:
            with self._lock:
                if self._entries.get(session_id) is log:
                    del self._entries[session_id]
                    self._due.pop(session_id, None)
                self._quarantine.append(QuarantinedRow(session_id, exc.raw, str(exc), time.time()))
            raise SnapshotDecodeError(
                f"session {session_id!r}: {exc}; the row was moved to quarantine", exc.raw
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
        with self._lock:
            log = self._log(session_id)
            chosen = [r for rev, _, r in reversed(log.records) if before is None or rev < before]
        return [revision_info(decode_record(raw)) for raw in chosen[:limit]]

    def messages(self, session_id: str, limit: int = 100, before: int | None = None) -> MessagePage:
        """The newest ``limit`` chat messages numbered below ``before``, oldest first.

        Raises:
            SessionNotFound: no such session.
        """
        with self._lock:
            return page_messages(_MessageRows(self._log(session_id)), limit, before)

    def history_range(self, session_id: str) -> HistoryRange | None:
        """The revisions time travel reaches, or None when there is no such session."""
        with self._lock:
            self._check_open()
            log = self._entries.get(session_id)
            if log is None:
                return None
            return HistoryRange(log.base_revisions[0], log.info.revision)

    def passivated(self, session_id: str) -> None:
        """``session_id`` is at rest: compact it soon if its records outweigh its base."""
        self.compactor.at_rest(session_id)

    def compact(self, session_id: str) -> bool:
        """Write a base for the newest revision and apply retention; False if nothing to do."""
        with self._lock:
            if self._closed:
                return False
            log = self._entries.get(session_id)
            if log is None:
                return False
            newest = log.info.revision
            base_rev = log.newest_base()
            base = log.bases[base_rev]
            records = log.records_after(base_rev)
        made = rebased(base, records) if records else None
        with self._lock:
            if self._closed or self._entries.get(session_id) is not log:
                return False
            if made is not None and newest not in log.bases:
                log.bases[newest] = made
                bisect.insort(log.base_revisions, newest)
                tail = log.records_after(newest)
                log.tail_bytes = sum(len(r) for r in tail)
                log.tail_count = len(tail)
            cut = retention_cut(
                self.policy, log.base_revisions, [(r, at) for r, at, _ in log.records], time.time()
            )
            dropped = [r for r in log.records if r[0] < cut]
            if dropped:
                archive = archived(raw for _, _, raw in dropped)
                if archive is not None:
                    log.archive.append(archive)
                del log.records[: len(dropped)]
            for rev in [r for r in log.base_revisions if r < cut]:
                del log.bases[rev]
            log.base_revisions = [r for r in log.base_revisions if r >= cut]
            return made is not None or bool(dropped)

    def delete(self, session_id: str) -> bool:
        """Delete ``session_id`` and its whole log; True if it existed."""
        with self._lock:
            self._check_open()
            self._due.pop(session_id, None)
            return self._entries.pop(session_id, None) is not None

    def list(
        self, owner: str | None = None, cursor: str | None = None, limit: int = 100
    ) -> SessionPage:
        """Sessions of ``owner`` (every owner when None), ordered by id, after ``cursor``.

        Raises:
            InvalidInput: ``limit`` is below 1.
        """
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, not {limit}")
        with self._lock:
            self._check_open()
            infos = [
                entry.info
                for sid, entry in self._entries.items()
                if (owner is None or entry.info.owner == owner) and (cursor is None or sid > cursor)
            ]
        infos.sort(key=lambda info: info.session_id)
        items = infos[:limit]
        next_cursor = items[-1].session_id if len(infos) > limit else None
        return SessionPage(items, next_cursor)

    def expired(self, now: float, limit: int = 1000) -> builtins.list[str]:
        """Ids of up to ``limit`` sessions whose ``expires_at`` is before ``now``, soonest first."""
        with self._lock:
            self._check_open()
            due = [
                (entry.info.expires_at, sid)
                for sid, entry in self._entries.items()
                if entry.info.expires_at is not None and entry.info.expires_at < now
            ]
        due.sort()
        return [sid for _, sid in due[:limit]]

    def due_timers(
        self, until: float, limit: int = 100, since: float | None = None
    ) -> builtins.list[DueTimer]:
        """Sessions whose earliest timer is due in (``since``, ``until``], soonest first."""
        low = -math.inf if since is None else since
        with self._lock:
            self._check_open()
            due = [(at, sid) for sid, at in self._due.items() if low < at <= until]
        return [DueTimer(sid, at) for at, sid in heapq.nsmallest(limit, due)]

    def count(self) -> int:
        """How many sessions are stored (quarantined rows excluded)."""
        with self._lock:
            self._check_open()
            return len(self._entries)

    def quarantined(self, limit: int = 100) -> builtins.list[QuarantinedRow]:
        """Rows that failed to decode, newest first."""
        with self._lock:
            self._check_open()
            return self._quarantine[::-1][:limit]

    def flush(self) -> None:
        """Nothing to wait for: every save is committed before it returns."""
        with self._lock:
            self._check_open()

    def close(self) -> None:
        """Drop every session; later calls raise ``StoreUnavailable``."""
        with self._lock:
            self._closed = True
            self._entries.clear()
            self._due.clear()
        self.compactor.close()

    def put_raw(self, session_id: str, data: bytes) -> None:
        """Replace the newest base's bytes of an existing session (tests use it to corrupt one).

        Raises:
            KeyError: no session ``session_id`` is stored.
        """
        with self._lock:
            self._check_open()
            log = self._entries[session_id]
            log.bases[log.newest_base()] = data

    def _log(self, session_id: str) -> _Log:
        self._check_open()
        log = self._entries.get(session_id)
        if log is None:
            raise SessionNotFound(session_id)
        return log

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("memory session store is closed")


class _MessageRows:
    """One session's records and archive entries for ``page_messages`` (under the lock)."""

    def __init__(self, log: _Log) -> None:
        self._log = log

    def records(self, upto: int, count: int) -> builtins.list[tuple[int, bytes]]:
        """At most ``count`` records at or below revision ``upto``, newest first."""
        records = self._log.records
        end = bisect.bisect_right(records, upto, key=lambda r: r[0])
        return [(rev, raw) for rev, _, raw in reversed(records[max(0, end - count) : end])]

    def chunks(self, below: int, count: int) -> builtins.list[tuple[int, bytes]]:
        """At most ``count`` archive entries starting below message ``below``, newest first."""
        archive = self._log.archive
        end = bisect.bisect_left(archive, below, key=lambda a: a[0])
        return archive[max(0, end - count) : end][::-1]
