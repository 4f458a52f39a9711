"""The supervisor's store I/O, run on its own small store pool (never the user task pool).

Threads: each function here runs on a store-pool thread, touches only its
arguments and thread-safe objects (the store, the index, the counters, the
log), and reports back to the supervisor with a message (``Loaded``,
``ExpiredFound``), so that the supervisor never waits on the store and a stuck
user task cannot delay it.

A snapshot whose graph version is no longer served is migrated here too
(`pin_version`: the migration is user code and its new revision a store
write, and the supervisor waits on neither); a sync caller that reads a
snapshot on its own thread (the runtime's preload) calls it the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol, runtime_checkable

from actors._services import ActorServices
from actors.messages import ExpiredFound, Loaded, Reply
from flow._errors import (
    ActorflowError,
    RevisionConflict,
    RuntimeClosed,
    SessionNotFound,
    TaskFailed,
)
from flow._session import Session, SessionStatus
from flow._versions import upgrade

__all__ = [
    "delete_expired",
    "find_expired",
    "is_expired",
    "load_sessions",
    "mark_error",
    "pin_version",
]


@runtime_checkable
class SharedStore(Protocol):
    """A store other daemons write too (``FencedStore``)."""

    def expire(self, session_id: str, now: float) -> bool: ...


def is_expired(services: ActorServices, session: Session) -> bool:
    """Whether ``session``'s TTL has passed by the runtime's clock."""
    expires_at = session.metadata.expires_at
    return expires_at is not None and expires_at < services.clock()


def _expire(services: ActorServices, session_ids: Sequence[str]) -> list[str]:
    """Delete expired sessions; the ids kept because they are not expired after all.

    A store shared with other daemons (``FencedStore``: it has ``expire``) deletes only under the
    session's lease and only if it is still expired: another daemon may hold it
    live and have refreshed its expiry since the sweep read it. A store only this
    process writes needs no more than the supervisor's own check.
    """
    store = services.store
    kept: list[str] = []
    now = services.clock()
    for session_id in session_ids:
        if isinstance(store, SharedStore):
            if not store.expire(session_id, now):
                kept.append(session_id)
        else:
            store.delete(session_id)
    services.index.bump()
    for session_id in session_ids:
        if session_id in kept:
            services.log.info("session_expiry_kept", session_id=session_id)
            continue
        services.counters.add("expirations")
        services.log.info("session_expired", session_id=session_id)
    return kept


def load_sessions(services: ActorServices, session_ids: Sequence[str]) -> None:
    """Read each snapshot (deleting it if expired) and report each as ``Loaded``."""
    for session_id in session_ids:
        outcome: Session | BaseException | None
        try:
            outcome = services.store.load(session_id)
            if outcome is not None and is_expired(services, outcome):
                _expire(services, [session_id])
                outcome = SessionNotFound(session_id, f"session {session_id!r} expired")
            elif outcome is not None:
                outcome = pin_version(services, outcome)
        except Exception as exc:
            outcome = exc
        services.tell_supervisor(Loaded(session_id, outcome))


def pin_version(services: ActorServices, session: Session) -> Session:
    """``session`` if its version is served, else migrated and committed as a new revision.

    Raises:
        GraphVersionUnavailable: no served version and no migration (nothing written).
        MigrationFailed: a migration failed (nothing written).
        StoreUnavailable: the migrated revision could not be committed.
    """
    _, migrated = upgrade(services.graphs, session)
    if migrated is None:
        return session
    try:
        services.store.save(migrated, expected_revision=session.revision).result()
    except RevisionConflict:
        # Another reader of the same snapshot (a caller's preload and a store
        # job) migrated it first: use what it committed.
        fresh = services.store.load(session.session_id)
        if fresh is None or services.graphs.find(fresh.graph_id, fresh.graph_version) is None:
            raise
        return fresh
    services.log.info(
        "session_migrated",
        session_id=session.session_id,
        graph=session.graph_id,
        from_version=session.graph_version,
        to_version=migrated.graph_version,
        revision=migrated.revision,
    )
    return migrated


def find_expired(services: ActorServices, now: float, reply: Reply | None) -> None:
    """Scan the store for sessions expired at ``now`` and report them as ``ExpiredFound``."""
    try:
        found: list[str] | BaseException = list(
            services.store.expired(now, limit=services.settings.sweep_batch)
        )
    except Exception as exc:
        found = exc
    if not services.tell_supervisor(ExpiredFound(found, now, reply)) and reply is not None:
        reply(RuntimeClosed("the runtime is closed"))


def delete_expired(
    services: ActorServices, session_ids: Sequence[str], reply: Reply | None
) -> None:
    """Delete expired sessions the supervisor chose, then report each as not found."""
    error: BaseException | None = None
    kept: list[str] = []
    try:
        kept = _expire(services, session_ids)
    except Exception as exc:
        error = exc
    for session_id in session_ids:
        if session_id in kept:
            continue
        gone = SessionNotFound(session_id, f"session {session_id!r} expired")
        services.tell_supervisor(Loaded(session_id, gone if error is None else error))
    # live on another daemon, or refreshed there: whoever waits gets what an
    # activation gets (LeaseHeldElsewhere, then forwarding; or the session)
    load_sessions(services, kept)
    if reply is not None:
        reply(True if error is None else error)


def mark_error(services: ActorServices, session_id: str, why: str) -> None:
    """Store the session with status ``error``, then report the failure as ``Loaded``.

    Its pending timers are dropped in the same save: no step of a session in status
    ``error`` runs, so each would be retried forever. Rolling back to an earlier
    revision (what an operator does to revive it) restores that revision's timers.
    """
    try:
        session = services.store.load(session_id)
        if session is not None:
            marked = replace(
                session,
                status=SessionStatus.ERROR,
                status_message=why,
                revision=session.revision + 1,
                timers=(),
            )
            services.store.save(marked, expected_revision=session.revision).result()
            if session.timers:
                services.timer_stats.count_step(session.timers, (), None, services.clock())
                services.log.warning(
                    "session_timers_dropped",
                    session_id=session_id,
                    timers=[t.name for t in session.timers],
                    reason="session in status error",
                )
    except ActorflowError as exc:
        services.log.error("session_mark_error_failed", session_id=session_id, detail=str(exc))
    services.tell_supervisor(
        Loaded(session_id, TaskFailed(session_id, RuntimeError(why), session_id))
    )
