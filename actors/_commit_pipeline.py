"""CommitPipeline: a session actor's saves, in order, and the answers that wait on them.

Threads: the pipeline's methods run in the owning actor's turn, and its fields
(the revision the store holds, the lineage, the last save) belong to that actor.
The callbacks it puts on save futures run on the store's writer thread; they
are free functions over thread-safe objects (the step's reply, the live index
via `answer_step`, the actor's ref) and never touch the actor or the pipeline.

Saves are compare-and-set against the previous revision, so when one commit
fails every later save of the same lineage fails too, and no caller is told
"ok" for a snapshot that was not committed; the actor then reloads its last
committed snapshot (`reload`) and starts a new lineage.

This is the one place a session actor hands the store a session (`_save`).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pykka

from actors._live_index import LiveEntry
from actors._services import ActorServices
from actors._step_runner import tell
from actors.messages import CommitFailed, PassivateRequest, Reply, Step
from flow._errors import SessionNotFound, StoreUnavailable
from flow._session import Session, SessionStatus
from flow._step import StepResult

__all__ = ["CommitPipeline", "answer_step", "log_commit_error"]


def answer_step(
    services: ActorServices,
    entry: LiveEntry,
    message: Step,
    outcome: StepResult | BaseException | None,
) -> None:
    """Answer a step's caller and account for it in the live index (any thread).

    Its watchers get its last event (``committed`` or ``error``) first. None answers
    a timer step that found no timer due (``Step.fire_timer``): it ran nothing, so
    its watchers get nothing.
    """
    services.index.finish(entry, failed=isinstance(outcome, BaseException))
    if outcome is not None:
        services.events.step_ended(message.session_id, message.stream, outcome)
    message.reply(outcome)
    if isinstance(outcome, StepResult) and outcome.status is SessionStatus.COMPLETED:
        services.tell_supervisor(PassivateRequest(message.session_id, "completed"))


def log_commit_error(
    services: ActorServices, session_id: str, revision: int, error: BaseException
) -> None:
    """Log a failed commit (any thread)."""
    services.log.warning(
        "commit_failed",
        session_id=session_id,
        revision=revision,
        error=type(error).__name__,
        detail=str(error),
    )


def _store_error(session_id: str, what: str, error: BaseException) -> StoreUnavailable:
    if isinstance(error, StoreUnavailable):
        return error
    return StoreUnavailable(f"session {session_id!r}: {what} failed: {error}")


def _step_committed(
    services: ActorServices,
    entry: LiveEntry,
    ref: pykka.ActorRef[Any],
    message: Step,
    result: StepResult,
    committed: Callable[[], None] | None,
    lineage: int,
    revision: int,
    future: Future[None],
) -> None:
    """On the store writer: answer the step now that its snapshot is committed (or not);
    ``committed`` runs first when it is, so that its caller sees what it did."""
    error = future.exception()
    if error is None:
        try:
            if committed is not None:
                committed()
        finally:
            answer_step(services, entry, message, result)
        return
    log_commit_error(services, message.session_id, revision, error)
    answer_step(services, entry, message, _store_error(message.session_id, "commit", error))
    tell(ref, CommitFailed(lineage, revision, error))


def _snapshot_committed(
    services: ActorServices,
    ref: pykka.ActorRef[Any],
    session_id: str,
    reply: Reply,
    size: int,
    lineage: int,
    revision: int,
    future: Future[None],
) -> None:
    """On the store writer: answer an explicit snapshot with its size, or its failure."""
    error = future.exception()
    if error is None:
        reply(size)
        return
    log_commit_error(services, session_id, revision, error)
    reply(_store_error(session_id, "snapshot", error))
    # Later saves expect this revision to be stored: start over from the store.
    tell(ref, CommitFailed(lineage, revision, error))


def _final_save_done(
    services: ActorServices, session_id: str, revision: int, future: Future[None]
) -> None:
    """On the store writer: log a failed save made on passivation (nobody waits on it)."""
    error = future.exception()
    if error is not None:
        log_commit_error(services, session_id, revision, error)


class CommitPipeline:
    """Saves one session's snapshots in order (owned by its `SessionActor`).

    Args:
        services: the runtime's shared resources.
        session: the session as last committed.
        entry: the session's live-index entry.
        ref: the owning actor's ref (a failed commit comes back as ``CommitFailed``).
    """

    __slots__ = ("_entry", "_last_save", "_ref", "_services", "_session_id", "lineage", "stored")

    def __init__(
        self,
        services: ActorServices,
        session: Session,
        entry: LiveEntry,
        ref: pykka.ActorRef[Any],
    ) -> None:
        self._services = services
        self._session_id = session.session_id
        self._entry = entry
        self._ref = ref
        #: The revision the store holds (the next save's expected revision).
        self.stored: int | None = session.revision
        #: Bumped when a commit fails: later completions of the old lineage are void.
        self.lineage = 0
        # Weak: a committed save's future is dropped by the store, and an idle actor
        # should not keep it (and its condition variable) alive.
        self._last_save: weakref.ref[Future[None]] | None = None

    def _save(self, session: Session) -> Future[None]:
        """Queue ``session`` for commit after everything queued before (compare-and-set)."""
        future = self._services.store.save(session, expected_revision=self.stored)
        self.stored = session.revision
        self._last_save = weakref.ref(future)
        return future

    def commit_step(
        self,
        message: Step,
        session: Session,
        result: StepResult,
        committed: Callable[[], None] | None = None,
    ) -> Future[None]:
        """Save a step's session and answer its caller after the commit; the save's future.

        ``committed`` (any thread: a free function over thread-safe objects) runs once
        the commit succeeded, before the caller is answered.
        """
        future = self._save(session)
        future.add_done_callback(
            functools.partial(
                _step_committed,
                self._services,
                self._entry,
                self._ref,
                message,
                result,
                committed,
                self.lineage,
                session.revision,
            )
        )
        return future

    def snapshot(self, session: Session, reply: Reply, size: int) -> None:
        """Save ``session`` now and answer ``reply`` with ``size`` after the commit."""
        future = self._save(session)
        future.add_done_callback(
            functools.partial(
                _snapshot_committed,
                self._services,
                self._ref,
                self._session_id,
                reply,
                size,
                self.lineage,
                session.revision,
            )
        )

    def save_final(self, session: Session) -> None:
        """Save a dirty session on passivation (``passivate`` durability)."""
        self._save(session).add_done_callback(
            functools.partial(_final_save_done, self._services, self._session_id, session.revision)
        )

    def pending_save(self) -> Future[None] | None:
        """The last queued save if it has not completed yet."""
        last = None if self._last_save is None else self._last_save()
        return None if last is None or last.done() else last

    def settled(self) -> bool:
        """Whether every save is committed: none in flight and the last one succeeded.

        A dropped future was committed or its failure's ``CommitFailed`` is
        already queued to the actor (its callbacks ran before the store let go).
        """
        last = None if self._last_save is None else self._last_save()
        return last is None or (last.done() and last.exception() is None)

    def reload(self, failed_revision: int) -> Session:
        """After a failed commit: start a new lineage from the store's last committed session.

        Raises:
            SessionNotFound: the session is no longer stored.
        """
        self.lineage += 1
        loaded = self._services.store.load(self._session_id)
        if loaded is None:
            raise SessionNotFound(
                self._session_id, f"session {self._session_id!r} vanished from the store"
            )
        self._services.log.warning(
            "session_reloaded",
            session_id=self._session_id,
            revision=loaded.revision,
            failed_revision=failed_revision,
        )
        self.stored = loaded.revision
        return loaded
