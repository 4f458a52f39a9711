"""The store protocol every session store implements (memory, SQLite, Redis).

For implementors of new stores: provide every method of ``SessionStore``.
``save`` must not make the caller wait for the disk: it returns a
``concurrent.futures.Future`` completed after the commit that holds the
snapshot (with ``RevisionConflict`` or ``StoreUnavailable`` on failure), and
snapshots of one session must be committed in the order they were saved.
A row whose bytes do not decode is moved to quarantine, never deleted.

A store keeps each session as a log (``flow.stores._log``): when the saved
session carries its step's record (``Session.record``, revision = expected + 1)
the store appends that record, otherwise it writes a whole base; ``load``
replays base + records; compaction and retention run off the save path.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from flow._errors import ActorflowError, InvalidInput
from flow._session import Session
from flow.stores._log import HistoryRange, MessagePage, RevisionInfo
from flow.stores._timer_index import DueTimer

__all__ = [
    "LOAD_MANY_LIMIT",
    "DueTimer",
    "Durability",
    "QuarantinedRow",
    "SessionPage",
    "SessionStore",
    "StoredSessionInfo",
]

Durability = Literal["fsync", "commit"]

#: Most ids one `SessionStore.load_many` call takes (SQLite binds each as a parameter).
LOAD_MANY_LIMIT = 500


def check_load_many(session_ids: Sequence[str]) -> list[str]:
    """``session_ids`` without repeats, or ``InvalidInput`` past `LOAD_MANY_LIMIT`."""
    ids = list(dict.fromkeys(session_ids))
    if len(ids) > LOAD_MANY_LIMIT:
        raise InvalidInput(f"load_many takes at most {LOAD_MANY_LIMIT} ids, not {len(ids)}")
    return ids


@dataclass(frozen=True, slots=True)
class StoredSessionInfo:
    """What a store's index knows of a session without decoding its snapshot."""

    session_id: str
    owner: str
    graph_id: str
    current_task: str
    status: str
    revision: int
    created_at: float
    last_accessed: float
    expires_at: float | None
    size: int


@dataclass(frozen=True, slots=True)
class SessionPage:
    """One page of ``list``: items ordered by session id; pass ``next_cursor`` for the next."""

    items: list[StoredSessionInfo]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class QuarantinedRow:
    """A snapshot that failed to decode, kept with its bytes and the error."""

    session_id: str
    raw: bytes
    error: str
    quarantined_at: float


@runtime_checkable
class SessionStore(Protocol):
    """The protocol shared by every session store."""

    def load(self, session_id: str, revision: int | None = None) -> Session | None:
        """The last committed state (or revision ``revision``'s), or None when there is none.

        Raises:
            RevisionNotFound: ``revision`` is outside the retained history.
            SnapshotDecodeError: the row did not decode; it has been quarantined.
            StoreUnavailable: the store could not be read.
        """
        ...

    def load_many(self, session_ids: Sequence[str]) -> dict[str, Session | ActorflowError]:
        """The last committed state of many sessions in one read (activations in a batch).

        At most `LOAD_MANY_LIMIT` ids. A session that is not stored has no key;
        one that could not be read has its error as the value
        (``SnapshotDecodeError``: quarantined, as `load` does).

        Raises:
            InvalidInput: more than `LOAD_MANY_LIMIT` ids.
            StoreUnavailable: the store could not be read (none was).
        """
        ...

    def revisions(
        self, session_id: str, limit: int = 100, before: int | None = None
    ) -> builtins.list[RevisionInfo]:
        """The retained revisions below ``before`` (all when None), newest first, at most ``limit``.

        Raises:
            SessionNotFound: no such session.
        """
        ...

    def messages(self, session_id: str, limit: int = 100, before: int | None = None) -> MessagePage:
        """The newest ``limit`` chat messages numbered below ``before``, oldest first.

        Raises:
            SessionNotFound: no such session.
        """
        ...

    def history_range(self, session_id: str) -> HistoryRange | None:
        """The revisions time travel reaches, or None when there is no such session."""
        ...

    def compact(self, session_id: str) -> bool:
        """Write a base for the newest revision and apply retention now; False if nothing to do."""
        ...

    def passivated(self, session_id: str) -> None:
        """``session_id``'s actor stopped (not for a shutdown): compact its log soon, off the
        caller's thread, if the records since its base outweigh the base. While a session
        is live its records may grow to ``LogPolicy.min_tail_bytes`` before a new base.
        Returns at once (it may be called on a store writer's thread)."""
        ...

    def save(self, session: Session, expected_revision: int | None) -> Future[None]:
        """Queue ``session`` for commit if the stored revision is ``expected_revision``.

        ``expected_revision`` is None for a session that must not exist yet.
        Returns at once; the future completes after the commit that holds it, or
        fails with ``RevisionConflict`` / ``StoreUnavailable``.
        """
        ...

    def delete(self, session_id: str) -> bool:
        """Delete a session (committed before returning); True if it existed."""
        ...

    def list(
        self, owner: str | None = None, cursor: str | None = None, limit: int = 100
    ) -> SessionPage:
        """Sessions of ``owner`` (every owner when None), ordered by id, after ``cursor``."""
        ...

    def expired(self, now: float, limit: int = 1000) -> builtins.list[str]:
        """Ids of up to ``limit`` sessions whose ``expires_at`` is before ``now``."""
        ...

    def due_timers(
        self, until: float, limit: int = 100, since: float | None = None
    ) -> builtins.list[DueTimer]:
        """Sessions whose earliest pending timer is due at or before ``until`` (and after
        ``since``, when given), soonest first.

        The due-time index is updated in the same commit as the save that changed
        a session's timers (``Session.timers``) and loses the session's entry when
        the session is deleted or expires; ``until=math.inf`` lists the next due.
        """
        ...

    def count(self) -> int:
        """How many sessions are stored (quarantined rows excluded)."""
        ...

    def quarantined(self, limit: int = 100) -> builtins.list[QuarantinedRow]:
        """Rows that failed to decode, newest first."""
        ...

    def flush(self) -> None:
        """Block until every save queued so far has been committed (or failed)."""
        ...

    def close(self) -> None:
        """Commit what is queued, stop the writer and release the store."""
        ...
