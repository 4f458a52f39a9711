"""MemoryStore: the store protocol in a dict, for tests and throwaway runtimes.

It keeps encoded snapshots, not sessions, so a load is an independent copy and
a snapshot that would not survive the codec fails here as it would on disk.
"""

from __future__ import annotations

import builtins
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from flow._codec import decode, encode
from flow._errors import InvalidInput, RevisionConflict, SnapshotDecodeError, StoreUnavailable
from flow._session import Session
from flow.stores._protocol import QuarantinedRow, SessionPage, StoredSessionInfo

__all__ = ["MemoryStore"]


@dataclass(frozen=True, slots=True)
class _Entry:
    info: StoredSessionInfo
    data: bytes


class MemoryStore:
    """Sessions in memory: thread-safe, compare-and-set honoured, nothing persisted.

    ``save`` commits before it returns, so its future is already done.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._quarantine: builtins.list[QuarantinedRow] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._entries)} sessions)"

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def save(self, session: Session, expected_revision: int | None) -> Future[None]:
        """Store ``session`` if the stored revision is ``expected_revision`` (None: must not exist).

        Returns:
            A future that is already done: with None, or with ``RevisionConflict``.

        Raises:
            StoreUnavailable: the store is closed.
        """
        data = encode(session)
        meta = session.metadata
        info = StoredSessionInfo(
            session_id=session.session_id,
            owner=meta.owner,
            graph_id=session.graph_id,
            current_task=session.current_task,
            status=session.status.value,
            revision=session.revision,
            created_at=meta.created_at,
            last_accessed=meta.last_accessed,
            expires_at=meta.expires_at,
            size=len(data),
        )
        future: Future[None] = Future()
        future.set_running_or_notify_cancel()
        with self._lock:
            self._check_open()
            current = self._entries.get(session.session_id)
            stored = None if current is None else current.info.revision
            if stored != expected_revision:
                future.set_exception(
                    RevisionConflict(session.session_id, expected_revision, stored)
                )
                return future
            self._entries[session.session_id] = _Entry(info, data)
        future.set_result(None)
        return future

    def load(self, session_id: str) -> Session | None:
        """The stored snapshot of ``session_id`` (a fresh copy), or None.

        Raises:
            SnapshotDecodeError: the bytes did not decode; moved to quarantine.
            StoreUnavailable: the store is closed.
        """
        with self._lock:
            self._check_open()
            entry = self._entries.get(session_id)
        if entry is None:
            return None
        try:
            return decode(entry.data)
        except SnapshotDecodeError as exc:
            with self._lock:
                if self._entries.get(session_id) is entry:
                    del self._entries[session_id]
                self._quarantine.append(
                    QuarantinedRow(session_id, entry.data, str(exc), time.time())
                )
            raise SnapshotDecodeError(
                f"session {session_id!r}: {exc}; the row was moved to quarantine", entry.data
            ) from exc

    def delete(self, session_id: str) -> bool:
        """Delete ``session_id``; True if it existed."""
        with self._lock:
            self._check_open()
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

    def put_raw(self, session_id: str, data: bytes) -> None:
        """Replace the stored bytes of an existing session (tests use it to corrupt a row).

        Raises:
            KeyError: no session ``session_id`` is stored.
        """
        with self._lock:
            self._check_open()
            entry = self._entries[session_id]
            self._entries[session_id] = _Entry(entry.info, data)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("memory session store is closed")
