"""FencedStore: a Redis or PostgreSQL store whose sessions are live in one process at a time.

It is the store a clustered runtime hands its actors, so that the actors need
not know about leases:

- ``load`` (what the supervisor calls to activate a session) first takes the
  session's lease; when another node holds it, it raises ``LeaseHeldElsewhere``
  (carrying the holder, so that the daemon can forward the request there) and
  the session is not activated here.
- ``save`` fences every write with the lease held on the session (or, once
  that lease is lost, with the lost lease), so Redis refuses it (``LeaseLost``)
  once a newer epoch has been granted elsewhere; a new session
  (``expected_revision`` None) is saved unfenced (nobody can hold it yet).
- A lease no longer needed is released by the ``LeaseManager`` (its
  ``in_use`` callback says which sessions are live here).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING

from flow._errors import ActorflowError, SnapshotDecodeError, StoreUnavailable
from flow._session import Session
from flow.stores._lease import Holder, Lease, LeaseHeldElsewhere, LeaseLost, LeaseManager
from flow.stores._log import HistoryRange, MessagePage, RevisionInfo
from flow.stores._protocol import QuarantinedRow, SessionPage, check_load_many
from flow.stores._redis import RedisStore
from flow.stores._timer_index import DueTimer

if TYPE_CHECKING:
    from flow.stores._postgres import PostgresStore

__all__ = ["FencedStore"]


class FencedStore:
    """The store protocol over a ``RedisStore`` or ``PostgresStore``, with a lease per live
    session.

    Args:
        store: the Redis or PostgreSQL store.
        leases: this node's lease manager (on the same Redis and key prefix, or the same
            database: ``PostgresLeaseManager``).

    Attributes:
        inner: the store.
        leases: the lease manager.
    """

    def __init__(self, store: RedisStore | PostgresStore, leases: LeaseManager) -> None:
        if leases.key_prefix != store.key_prefix:
            raise ValueError(
                f"lease key prefix {leases.key_prefix!r} differs from the store's "
                f"{store.key_prefix!r}: fences would check the wrong keys"
            )
        self.inner = store
        self.leases = leases

    def __repr__(self) -> str:
        return f"FencedStore({self.inner!r}, node_id={self.leases.node_id!r})"

    def load(self, session_id: str, revision: int | None = None) -> Session | None:
        """Take the session's lease, then read its log (base + records).

        A past revision (``revision`` given) is read without a lease: it activates nothing.

        No lease is taken for a session that does not exist.

        Raises:
            LeaseHeldElsewhere: another node holds the lease (the session is live there).
            SnapshotDecodeError: the snapshot did not decode; it has been quarantined.
            StoreUnavailable: Redis could not be reached.
        """
        if revision is not None:
            return self.inner.load(session_id, revision)
        key = self.inner.session_key(session_id)
        taken, rev = self.leases.acquire_reading(session_id, key, "rev")
        if isinstance(taken, Holder):
            raise LeaseHeldElsewhere(taken)
        if taken is None or rev is None:
            return None
        return self.inner.load(session_id)

    def read(self, session_id: str) -> Session | None:
        """The stored session, for a read: without taking its lease, so that reading a
        session on one node does not pull its next steps there (they activate it where
        they land). Another node holding the lease has it live, maybe with steps not yet
        stored: ``LeaseHeldElsewhere``, as ``load`` raises (the daemon forwards the read).

        Raises:
            LeaseHeldElsewhere: another node holds the lease.
            SnapshotDecodeError: the snapshot did not decode; it has been quarantined.
            StoreUnavailable: the store could not be reached.
        """
        holder = self.leases.holder(session_id)
        if holder is not None and holder.node_id != self.leases.node_id:
            raise LeaseHeldElsewhere(holder)
        return self.inner.load(session_id)

    def load_many(self, session_ids: Sequence[str]) -> dict[str, Session | ActorflowError]:
        """`load` of each of ``session_ids`` (a lease each), the sessions read in one batch;
        a session whose lease another node holds maps to ``LeaseHeldElsewhere``."""
        found: dict[str, Session | ActorflowError] = {}
        leased: list[str] = []
        for session_id in check_load_many(session_ids):
            key = self.inner.session_key(session_id)
            taken, rev = self.leases.acquire_reading(session_id, key, "rev")
            if isinstance(taken, Holder):
                found[session_id] = LeaseHeldElsewhere(taken)
            elif taken is not None and rev is not None:
                leased.append(session_id)
        found.update(self.inner.load_many(leased))
        return found

    def save(self, session: Session, expected_revision: int | None) -> Future[None]:
        """Queue ``session``, fenced with this node's lease on it.

        A new session (``expected_revision`` None) is saved unfenced: it cannot
        be live anywhere yet. Otherwise the future fails with ``LeaseLost`` when
        this node holds no lease on the session (never held, or released) or a
        newer epoch has been granted elsewhere.
        """
        if expected_revision is None:
            # a new session: the compare-and-set already guarantees nobody has it;
            # its first activation takes the lease
            return self.inner.save(session, None)
        sid = session.session_id
        lease = self.leases.lease_for(sid) or self.leases.lost_lease(sid)
        if lease is None:
            return _failed(LeaseLost(sid, None, None))
        return self.inner.save(session, expected_revision, fence=lease.fence)

    def delete(self, session_id: str) -> bool:
        """Delete the session, then release this node's lease on it (if any)."""
        existed = self.inner.delete(session_id)
        lease = self.leases.lease_for(session_id)
        if lease is not None:
            self._release_quietly(lease)
        return existed

    def expire(self, session_id: str, now: float) -> bool:
        """Delete the session if its TTL passed before ``now``, under its lease; True if
        deleted.

        Other daemons share the store: the session may be live on one of them, which
        may have committed a step (refreshing the expiry) since the sweep read it. So
        the lease is taken first (held elsewhere: nothing deleted, the holder's own
        sweep decides), the session read again under it, and deleted only if it is
        still expired; holding the lease, no other node's write can land meanwhile
        (fenced). A session whose snapshot does not decode (quarantined) is deleted.
        """
        try:
            session = self.load(session_id)
        except LeaseHeldElsewhere:
            return False
        except SnapshotDecodeError:
            return self.delete(session_id)
        if session is None:
            return False
        expires_at = session.metadata.expires_at
        if expires_at is not None and expires_at < now:
            return self.delete(session_id)
        lease = self.leases.lease_for(session_id)
        if lease is not None:
            self._release_quietly(lease)  # refreshed elsewhere: not ours to keep
        return False

    def list(
        self, owner: str | None = None, cursor: str | None = None, limit: int = 100
    ) -> SessionPage:
        """Sessions of ``owner`` (every owner when None), ordered by id, after ``cursor``."""
        return self.inner.list(owner, cursor, limit)

    def expired(self, now: float, limit: int = 1000) -> builtins.list[str]:
        """Ids of up to ``limit`` sessions whose ``expires_at`` is before ``now``."""
        return self.inner.expired(now, limit)

    def due_timers(
        self, until: float, limit: int = 100, since: float | None = None
    ) -> builtins.list[DueTimer]:
        """Sessions whose earliest timer is due in (``since``, ``until``], soonest first."""
        return self.inner.due_timers(until, limit, since)

    def count(self) -> int:
        """How many sessions are stored."""
        return self.inner.count()

    def quarantined(self, limit: int = 100) -> builtins.list[QuarantinedRow]:
        """Snapshots that failed to decode, newest first."""
        return self.inner.quarantined(limit)

    def flush(self) -> None:
        """Block until every save queued so far has been committed (or failed)."""
        self.inner.flush()

    def close(self) -> None:
        """Commit what is queued, then release every lease and close the store."""
        self.inner.flush()
        self.leases.close(release=True)
        self.inner.close()

    def revisions(
        self, session_id: str, limit: int = 100, before: int | None = None
    ) -> builtins.list[RevisionInfo]:
        """The retained revisions below ``before``, newest first (no lease needed)."""
        return self.inner.revisions(session_id, limit, before)

    def messages(self, session_id: str, limit: int = 100, before: int | None = None) -> MessagePage:
        """The newest ``limit`` chat messages numbered below ``before`` (no lease needed)."""
        return self.inner.messages(session_id, limit, before)

    def history_range(self, session_id: str) -> HistoryRange | None:
        """The revisions time travel reaches."""
        return self.inner.history_range(session_id)

    def compact(self, session_id: str) -> bool:
        """Compact now: a base at a committed revision needs no fence."""
        return self.inner.compact(session_id)

    def passivated(self, session_id: str) -> None:
        """Compact soon if its records outweigh its base (no lease needed)."""
        self.inner.passivated(session_id)

    def _release_quietly(self, lease: Lease) -> None:
        try:
            self.leases.release(lease)
        except StoreUnavailable:
            return  # Redis is down: the lease expires after its ttl


def _failed(error: BaseException) -> Future[None]:
    future: Future[None] = Future()
    future.set_exception(error)
    return future
