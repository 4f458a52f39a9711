"""SessionActor: one live session, one step at a time, as an explicit state machine.

Threads: every method of the actor runs in its own turn on a dispatcher worker
(see `actors._ownership`). The store writer, the task pool, the event loop and
the timer thread never touch its fields: a completion comes back as a message
(``TaskDone``, ``StepDeadline``, ``CommitFailed``) and a commit answers its step
through free functions of `actors._commit_pipeline`.

States (`ActorState`, changed only in `SessionActor._become`):

- ``idle``: ready for the next step (its previous commit may still be in
  flight: commits are pipelined, so the actor never waits for the disk);
- ``running``: a step runs off the actor (`StepRunner`); later requests wait
  in the stash (an edit from outside, ``Step.edit``, runs in the actor's turn
  and never enters this state, but waits behind a running step like any step);
- ``stopping``: told to stop; it stops once its last save is done;
- ``crashed``: an unexpected exception; requests are stashed until the
  supervisor retires it and hands them to the next incarnation.

After a step the actor adopts the new session at once (the next request runs on
it) and hands it to its `CommitPipeline`, which answers the caller after the
commit that holds it.
"""

from __future__ import annotations

import contextvars
import enum
import functools
import time
from concurrent.futures import Future
from typing import Any

import msgspec
import structlog
from pykka.messages import _ActorStop

from actors._commit_pipeline import CommitPipeline, answer_step
from actors._live_index import LiveEntry
from actors._ownership import Owned
from actors._services import ActorServices
from actors._size_guard import SizeGuard
from actors._step_runner import RunningStep, StepRunner, tell
from actors.dispatcher import DispatcherActor
from actors.messages import (
    ActorCrashed,
    ActorStopped,
    CommitFailed,
    Crash,
    Edit,
    Hibernate,
    Inspect,
    Kill,
    Passivate,
    Retire,
    Snapshot,
    Step,
    StepDeadline,
    TaskDone,
    ViewSession,
)
from flow._codec import decode, encode
from flow._edit import edit, unchanged
from flow._errors import (
    ActorflowError,
    IdempotencyKeyReused,
    Misdirected,
    StepTimeout,
    StoreUnavailable,
    TaskFailed,
)
from flow._graph import Graph
from flow._idempotency import KeyEntry, KeyTable
from flow._session import Access, Session, SessionStatus, StepFailure
from flow._sharing import shared
from flow._step import StepResult
from flow._timers import PendingTimer, next_due
from flow._versions import upgrade_to

__all__ = ["ActorState", "SessionActor", "session_document"]


class ActorState(enum.Enum):
    """What a session actor is doing (see the module docstring)."""

    IDLE = "idle"
    RUNNING = "running"
    STOPPING = "stopping"
    CRASHED = "crashed"


def _bound_in(context: contextvars.Context | None) -> dict[str, Any]:
    """The structlog values bound in a caller's ``context`` (none without one)."""
    return {} if context is None else context.run(structlog.contextvars.get_contextvars)


def _answer_replay(
    services: ActorServices,
    entry: LiveEntry,
    message: Step,
    result: StepResult,
    future: Future[None],
) -> None:
    """Answer a replayed step once the save of the newest keyed step is done (any thread).

    That save follows the replayed step's (compare-and-set), so its success is
    the replayed step's too.
    """
    error = future.exception()
    answer_step(
        services,
        entry,
        message,
        result
        if error is None
        else StoreUnavailable(
            f"session {message.session_id!r}: the step this key names may not be "
            f"committed ({error}); retry with the same key"
        ),
    )


def session_document(session: Session, history_tail: int) -> dict[str, Any]:
    """What ``inspect`` shows of a session, live or stored: plain, JSON-like values."""
    meta = session.metadata
    history = session.context.chat_history
    return {
        "session_id": session.session_id,
        "graph": session.graph_id,
        "graph_version": session.graph_version,
        "owner": meta.owner,
        "status": session.status._value_,
        "status_message": session.status_message,
        "current_task": session.current_task,
        "revision": session.revision,
        "context": session.context.to_dict(),
        "history_tail": [m.to_dict() for m in history.last_messages(history_tail)],
        "history_length": len(history),
        "timers": [{"name": t.name, "due": t.due, "wake": t.wake} for t in session.timers],
        "last_failure": None if session.last_failure is None else session.last_failure.to_dict(),
        "metadata": {
            "owner": meta.owner,
            "created_at": meta.created_at,
            "last_accessed": meta.last_accessed,
            "request_count": meta.request_count,
            "client_addr": meta.client_addr,
            "expires_at": meta.expires_at,
            "members": {user: access for user, access in meta.members},
        },
    }


class SessionActor(DispatcherActor, Owned):
    """The actor of one live session (started by the supervisor, never directly).

    Args:
        services: the runtime's shared resources.
        session: the session as last committed (loaded from the store).
        graph: the session's graph.
        entry: the session's live-index entry (the actor keeps its fields current).
    """

    def __init__(
        self, services: ActorServices, session: Session | bytes, graph: Graph, entry: LiveEntry
    ) -> None:
        super().__init__()
        self._services = services
        self._settings = services.settings
        self._entry = entry
        self._session_id = entry.session_id
        self._state = ActorState.IDLE
        self._runner = StepRunner(services, graph, self.actor_ref)
        self._size = SizeGuard(services.settings.max_session_bytes)
        self._session: Session
        self._commits: CommitPipeline
        # A woken session's bytes, decoded in the actor's first turn (`_thaw`),
        # not on the supervisor's thread that spawns it.
        self._frozen: bytes | None = None
        if isinstance(session, bytes):
            self._frozen = session
        else:
            self._adopt_loaded(session)
        self._dirty = False
        self._seq = 0
        self._running: RunningStep | None = None
        # a failure noted on the session and not yet in a saved snapshot of it
        self._failure_unsaved = False
        # Created on first use, and a list rather than a deque (it is short: at
        # most max_pending): most live sessions are idle and never need one.
        self._stash: list[Step | Passivate] | None = None
        self._current: Step | None = None
        self._crashed: BaseException | None = None
        self._handover: list[Step] | None = None
        # the save of the newest keyed step, until a replay finds it committed
        self._unconfirmed: Future[None] | None = None

    def _adopt_loaded(self, session: Session) -> None:
        self._session = session
        if session.stored_size is not None:
            self._size.stored(*session.stored_size)
        self._commits = CommitPipeline(self._services, session, self._entry, self.actor_ref)

    def _thaw(self, frozen: bytes) -> None:
        """Decode the session a hibernated entry kept (it is committed: nothing to save)."""
        self._frozen = None
        self._adopt_loaded(decode(frozen))
        self._size.measured(len(frozen))

    def _become(self, state: ActorState) -> None:
        """The one place the actor's state changes."""
        self._state = state

    # --- message handling ---------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        """Handle one message; an unexpected exception becomes a supervised crash."""
        frozen = self._frozen
        if frozen is not None and self._state is not ActorState.CRASHED:
            try:
                self._thaw(frozen)
            except Exception as exc:
                self._crash(exc)
        if self._state is ActorState.CRASHED:
            self._on_message_while_crashed(message)
            return None
        try:
            self._handle(message)
        except Exception as exc:
            self._crash(exc)
        return None

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        """Tell the supervisor (only reached if pykka itself saw an exception)."""
        error = exception_value if isinstance(exception_value, BaseException) else None
        self._services.tell_supervisor(
            ActorCrashed(self._session_id, self._entry.incarnation, error or RuntimeError("crash"))
        )

    def _handle(self, message: Any) -> None:
        if isinstance(message, Step):
            if message.epoch is None and self._services.grant_of is not None:
                message = self._accepted(message)
            if self._state is ActorState.RUNNING or self._stash:
                self._stash_push(message)
            else:
                self._start_step(message)
        elif isinstance(message, TaskDone):
            self._task_done(message)
        elif isinstance(message, StepDeadline):
            self._deadline(message)
        elif isinstance(message, CommitFailed):
            self._commit_failed(message)
        elif isinstance(message, ViewSession):
            message.reply(self._session.copy())
        elif isinstance(message, Inspect):
            message.reply(self._inspect(message.history_tail))
        elif isinstance(message, Snapshot):
            self._snapshot(message)
        elif isinstance(message, Passivate):
            self._passivate(message)
        elif isinstance(message, Hibernate):
            self._hibernate(message)
        elif isinstance(message, Kill):
            self._kill(message.reroute, message.error, None)
        elif isinstance(message, Retire):
            self._kill(True, StoreUnavailable("session actor retired"), None)
        elif isinstance(message, Crash):
            if message.reply is not None:
                message.reply(True)
            raise RuntimeError(f"injected crash of session actor {self._session_id!r}")
        else:
            raise TypeError(f"session actor got an unknown message {message!r}")

    # --- steps -----------------------------------------------------------------------

    def _start_step(self, message: Step) -> None:
        if self._state is ActorState.STOPPING:
            # Unreachable by the index's ordering (no step is sent to an actor after
            # it is told to stop); if it ever happens, the caller must not hang.
            self._answer(
                message,
                StoreUnavailable(f"session {self._session_id!r} was stopping; retry the step"),
            )
            return
        self._current = message
        if message.key is not None and self._replayed(message):
            return
        refused = self._misdirected(message)  # an edit too: it is queued like a step
        if refused is not None:
            self._step_failed(message, refused)
            return
        if message.edit is not None:
            self._edit(message, message.edit)
            return
        session = self._session
        if session.status is SessionStatus.ERROR:
            self._step_failed(
                message,
                TaskFailed(
                    session.current_task,
                    RuntimeError(
                        f"session is in status 'error' ({session.status_message or 'no reason'})"
                    ),
                    session.session_id,
                ),
            )
            return
        now = self._services.clock()
        fire: str | None = None
        if message.fire_timer:
            due = self._due_timer(now)
            if due is None:
                self._answer(message, None)
                return
            fire = due.name
        self._seq += 1
        try:
            outcome = self._runner.run(
                session, message, now, self._seq, self._commits.lineage, fire
            )
        except BaseException as exc:  # a task's SystemExit & co. are its failure, not ours
            self._step_failed(message, self._as_step_error(exc))
            return
        if isinstance(outcome, RunningStep):
            self._running = outcome
            self._current = None
            self._become(ActorState.RUNNING)
            self._entry.current_step_task = session.current_task
            return
        new, result = outcome
        self._adopt(message, new, result, now)

    def _due_timer(self, now: float) -> PendingTimer | None:
        """The session's earliest timer due by ``now`` (None: none, or the session expired)."""
        session = self._session
        expires = session.metadata.expires_at
        if expires is not None and expires <= now:
            return None  # the sweep deletes it: an expired session's timers never fire
        first = session.timers[0] if session.timers else None
        return first if first is not None and first.due <= now else None

    def _accepted(self, message: Step) -> Step:
        """``message`` stamped with the lease epoch this node holds now (in a cluster): the
        grant it was accepted under, and the only one it may run under (0: none held)."""
        grant_of = self._services.grant_of
        epoch = None if grant_of is None else grant_of(self._session_id)
        return msgspec.structs.replace(message, epoch=0 if epoch is None else epoch)

    def _misdirected(self, message: Step) -> Misdirected | None:
        """Why ``message`` must not start now, or None: past its deadline, or accepted under a
        lease grant this node no longer holds (lost, or replaced by a new grant after a failed
        commit or a restart), so that a step queued here across a lease loss never runs under
        the next grant (docs/cluster.md)."""
        if message.deadline is not None and time.time() > message.deadline:
            return Misdirected(
                self._session_id,
                "it would have started after the deadline of the daemon that forwarded it",
            )
        grant_of = self._services.grant_of
        if grant_of is None or message.epoch is None:
            return None
        held = grant_of(self._session_id)
        if held == message.epoch:
            return None
        now_held = "none now" if held is None else f"epoch {held} now"
        accepted = "no lease" if message.epoch == 0 else f"lease epoch {message.epoch}"
        return Misdirected(
            self._session_id,
            f"it was accepted under {accepted} of the session and this daemon holds {now_held}",
        )

    def _edit(self, message: Step, change: Edit) -> None:
        """Apply a repair from outside as one new revision (in this turn; no task runs)."""
        now = self._services.clock()
        graph = self._runner.graph
        if change.share is not None:
            self._share(message, *change.share, now)
            return
        try:
            if change.migrate_to is not None:
                graph, migrated = upgrade_to(
                    self._services.graphs, self._session, change.migrate_to
                )
                if migrated is None:
                    self._answer(message, unchanged(self._session))
                    return
                new, result = migrated, unchanged(migrated)
            else:
                new, result = edit(
                    graph,
                    self._session,
                    set=change.set,
                    unset=change.unset,
                    goto=change.goto,
                    by=change.by,
                    now=now,
                    ttl=self._settings.session_ttl,
                )
        except ActorflowError as exc:
            self._step_failed(message, exc)
            return
        self._services.log.info(
            "session_edited", session_id=self._session_id, by=change.by, revision=new.revision
        )
        self._adopt(message, new, result, now)
        if self._session is new and graph is not self._runner.graph:
            self._use_graph(graph)

    def _share(self, message: Step, user: str, access: Access | None, now: float) -> None:
        """Give ``user`` ``access`` (None: none) as one new revision (in this turn)."""
        try:
            outcome = shared(self._session, user, access, now=now)
        except ActorflowError as exc:
            self._answer(message, exc)  # a mistake of the sharer, not the session's failure
            return
        if outcome is None:
            self._answer(message, unchanged(self._session))
            return
        new, result = outcome
        self._services.log.info(
            "session_shared", session_id=self._session_id, user=user, access=access
        )
        self._adopt(message, new, result, now)

    def _use_graph(self, graph: Graph) -> None:
        """Run the session's later steps on ``graph`` (another version of its graph)."""
        self._runner = StepRunner(self._services, graph, self.actor_ref)
        self._entry.graph_version = graph.version

    def _as_step_error(self, exc: BaseException) -> ActorflowError:
        if isinstance(exc, ActorflowError):
            return exc
        return TaskFailed(self._session.current_task, exc, self._session_id)

    def _step_ended(self) -> RunningStep | None:
        """Leave ``running``: the running step, taken off the actor."""
        running = self._running
        self._running = None
        self._become(ActorState.IDLE)
        self._entry.current_step_task = None
        return running

    def _task_done(self, message: TaskDone) -> None:
        running = self._running
        if running is None or running.seq != message.seq:
            return  # the step already timed out or the actor was killed: drop it
        self._step_ended()
        running.ended()
        self._current = running.step
        if running.lineage != self._commits.lineage:
            self._step_failed(
                running.step,
                StoreUnavailable(
                    f"session {self._session_id!r}: an earlier step's commit failed while "
                    "this step ran; it was not applied"
                ),
            )
        else:
            try:
                new, result = running.future.result()
            except BaseException as exc:  # a task's SystemExit & co. are its failure, not ours
                self._step_failed(running.step, self._as_step_error(exc))
            else:
                self._adopt(running.step, new, result, self._services.clock())
        self._drain_stash()

    def _deadline(self, message: StepDeadline) -> None:
        running = self._running
        if running is None or running.seq != message.seq:
            return
        self._step_ended()
        running.abandon()
        self._step_failed(running.step, StepTimeout(self._session_id, self._settings.step_timeout))
        self._drain_stash()

    def _step_failed(self, message: Step, error: ActorflowError) -> None:
        """The one place a failed step is logged and answered (the session is unchanged)."""
        # a task's own exception is the graph author's bug: error level, with its traceback
        failed = error if isinstance(error, TaskFailed) else None
        task = self._session.current_task if failed is None else failed.task_id
        (self._services.log.info if failed is None else self._services.log.error)(
            "step_failed",
            **_bound_in(message.caller_context),
            session_id=self._session_id,
            task=task,
            error=type(error).__name__,
            detail=str(error),
            **({} if failed is None else {"exc_info": failed}),
        )
        cause = error if failed is None else failed.cause
        # Noted on the committed session (not a revision: nothing else changes);
        # saved with its next whole snapshot, at the latest on passivation.
        self._session.last_failure = StepFailure(
            type(cause).__name__, str(cause), task, self._services.clock()
        )
        self._failure_unsaved = True
        self._answer(message, error)

    # --- idempotency keys (flow._idempotency) ---------------------------------------

    def _replayed(self, message: Step) -> bool:
        """Answer a retry of a keyed step from the key table; False when the key is new.

        The answer waits for the commit of the step it repeats: a retry queued
        behind its first attempt is answered after that attempt's commit, never
        before, and never by a second run.
        """
        key = message.key
        table = self._session.keys
        entry = None if table is None or key is None else table.get(key)
        if entry is None or not self._settings.key_retention.keeps(
            entry, self._session.revision, self._services.clock()
        ):
            return False
        if entry.digest != message.digest:
            self._step_failed(message, IdempotencyKeyReused(self._session_id, entry.key))
            return True
        self._current = None
        result = msgspec.structs.replace(entry.result, replayed=True)
        unconfirmed = self._unconfirmed
        if unconfirmed is None:  # every remembered key is committed
            self._answer(message, result)
            return True
        if unconfirmed.done() and unconfirmed.exception() is None:
            self._unconfirmed = None
        unconfirmed.add_done_callback(
            functools.partial(_answer_replay, self._services, self._entry, message, result)
        )
        return True

    def _remember(
        self, key: str, digest: bytes, new: Session, result: StepResult, now: float
    ) -> None:
        """Add the step's key to ``new``'s table (shared with the session before it:
        only once the step is adopted)."""
        table = new.keys
        if table is None:
            table = new.keys = KeyTable(new.session_id)
        table.add(KeyEntry(key, digest, new.metadata.last_accessed, result))
        table.forget_outside(self._settings.key_retention, new.revision, now)

    def _adopt(self, message: Step, new: Session, result: StepResult, now: float) -> None:
        """Make ``new`` the session and commit it; the caller is answered after the commit.

        A session that would pass ``max_session_bytes`` is refused: nothing changes."""
        # ``flow.step`` set the expiry (ttl): the step's metadata is built once
        key, digest = message.key, message.digest
        if new.record is not None:
            # the record as the store appends it: the size guard's encoding of it is
            # the one the store reuses
            record = new.record.settled(new)
            if key is not None and digest is not None:
                record = record.with_key(key, digest, result.responses)
            new.record = record
        too_large = self._size.check(new)
        if too_large is not None:
            self._step_failed(message, too_large)
            return
        if key is not None and digest is not None:
            self._remember(key, digest, new, result, now)
        old = self._session
        timers = None
        if new.timers != old.timers or message.fire_timer:
            timers = functools.partial(timers_changed, self._services, old, new, now)
        self._session = new
        self._entry.snapshot_bytes = self._size.size
        self._publish(new)
        if self._settings.durability == "passivate" and timers is None:
            self._dirty = True
            self._answer(message, result)  # committed at passivation
            return
        # (``passivate`` too: a step that changed the timers is committed now, so that
        # the due-time index entry is durable with the timers it indexes)
        self._dirty = False
        # A store that raises here crashes the actor, which answers ``_current``.
        # the timers are counted, and the firing told of a nearer due time, once the
        # step is committed and before its caller is answered (on the writer's thread)
        future = self._commits.commit_step(message, new, result, timers)
        if message.key is not None:
            # held until a replay sees it done: a weak reference could not tell a
            # failed commit from a committed one once the store dropped the future
            self._unconfirmed = future
        self._current = None

    def _publish(self, session: Session) -> None:
        """Copy what callers read without asking the actor into its index entry."""
        entry = self._entry
        entry.status = session.status._value_
        entry.current_task = session.current_task
        entry.revision = session.revision
        entry.request_count = session.metadata.request_count
        entry.expires_at = session.metadata.expires_at
        entry.members = session.metadata.members

    def _answer(self, message: Step, outcome: StepResult | BaseException | None) -> None:
        """Answer a step's caller (once) from the actor's turn."""
        if self._current is message:
            self._current = None
        answer_step(self._services, self._entry, message, outcome)

    def _stash_push(self, message: Step | Passivate) -> None:
        if self._stash is None:
            self._stash = []
        self._stash.append(message)

    def _hand_over(self, message: Step) -> None:
        if self._handover is None:
            self._handover = []
        self._handover.append(message)

    def _drain_stash(self) -> None:
        while self._stash and self._state is ActorState.IDLE:
            message = self._stash.pop(0)
            if isinstance(message, Passivate):
                self._passivate(message)
            else:
                self._start_step(message)

    def _commit_failed(self, message: CommitFailed) -> None:
        if message.lineage != self._commits.lineage:
            return  # a later save of an already abandoned lineage: reloaded already
        loaded = self._commits.reload(message.revision)
        if self._failure_unsaved:
            loaded.last_failure = self._session.last_failure
        if loaded.graph_version != self._runner.graph.version:
            # a failed migration edit: run the version the stored session is pinned to
            graph = self._services.graphs.find(loaded.graph_id, loaded.graph_version)
            if graph is None:
                raise self._services.graphs.unavailable(loaded)
            self._use_graph(graph)
        self._session = loaded
        self._size.reset()
        self._entry.snapshot_bytes = 0
        self._unconfirmed = None  # the keys loaded are the committed ones
        self._dirty = False
        self._publish(loaded)

    # --- inspection and snapshots -------------------------------------------------------

    def _inspect(self, history_tail: int) -> dict[str, Any]:
        session = self._session
        entry = self._entry
        settings = self._settings
        running = self._running
        if session.status is SessionStatus.COMPLETED:
            passivation = (entry.last_used, "completed: passivated after its last reply")
        elif session.status is SessionStatus.WAITING_FOR_INPUT:
            passivation = (entry.last_used + settings.wait_timeout, "waiting for input")
        else:
            passivation = (entry.last_used + settings.idle_timeout, "idle")
        size = len(encode(session))
        self._size.measured(size)
        entry.snapshot_bytes = size
        return {
            **session_document(session, history_tail),
            "last_access": entry.last_used,
            "pending": entry.pending,
            "stashed": len(self._stash or ()),
            "state": self._state.value,
            "running_task": entry.current_step_task,
            "running_for": None if running is None else time.monotonic() - running.started,
            "next_passivation": passivation[0],
            "next_passivation_reason": passivation[1],
            "live_reason": entry.reason,
            "activated_at": entry.activated_at,
            "incarnation": entry.incarnation,
            "snapshot_bytes": size,
            "dirty": self._dirty,
        }

    def _snapshot(self, message: Snapshot) -> None:
        size = len(encode(self._session))
        self._size.measured(size)
        self._entry.snapshot_bytes = size
        self._dirty = False
        self._failure_unsaved = False
        self._commits.snapshot(self._session, message.reply, size)

    # --- stopping ------------------------------------------------------------------------

    def _passivate(self, message: Passivate) -> None:
        if message.force:
            error = message.error or StoreUnavailable("session actor stopped")
            self._abandon_running(error)
            while self._stash:
                queued = self._stash.pop(0)
                if isinstance(queued, Step):
                    self._answer(queued, error)
        elif self._state is ActorState.RUNNING or self._stash:
            self._stash_push(message)
            return
        if self._state is ActorState.STOPPING:
            return
        self._become(ActorState.STOPPING)
        session = self._session
        if self._dirty:
            self._entry.snapshot_bytes = len(encode(session))
            self._commits.save_final(session)
            self._dirty = False
        if self._failure_unsaved:
            # A step record does not hold the failure note: rewrite the session's
            # base at its revision (one write per activation that saw a failure).
            session.record = None
            self._commits.save_final(session)
            self._failure_unsaved = False
        # At rest in the store from now on: its log may be compacted more eagerly than
        # while it was live (not at shutdown, which should end soon).
        self._stop_after_saves(None, rested=message.reason != "shutdown")

    def _hibernate(self, message: Hibernate) -> None:
        """Leave the session as encoded bytes in the live index and stop, if nothing is
        in hand: idle, no unsaved change, every save committed, nothing queued."""
        if (
            self._state is not ActorState.IDLE
            or self._stash
            or self._dirty
            or self._failure_unsaved
            or not self._commits.settled()
        ):
            return
        frozen = encode(self._session)
        if not self._services.index.hibernate(
            self._entry, self.actor_ref, frozen, message.last_used
        ):
            return
        # No request can reach this actor any more: it stops with nothing to save,
        # and the supervisor wakes the session from ``frozen`` on its next request.
        self._become(ActorState.STOPPING)
        self._services.counters.add("hibernations")
        tell(self.actor_ref, _ActorStop())

    def _kill(self, reroute: bool, error: BaseException, crashed: BaseException | None) -> None:
        if self._state is ActorState.STOPPING:
            return
        self._abandon_running(error)
        while self._stash:
            queued = self._stash.pop(0)
            if isinstance(queued, Step):
                if reroute:
                    self._hand_over(queued)
                else:
                    self._answer(queued, error)
        self._become(ActorState.STOPPING)
        self._dirty = False
        self._stop_after_saves(crashed)

    def _abandon_running(self, error: BaseException) -> None:
        if self._running is None:
            return
        running = self._running
        self._running = None
        self._entry.current_step_task = None
        running.abandon()
        self._answer(running.step, error)

    def _stop_after_saves(self, crashed: BaseException | None, *, rested: bool = False) -> None:
        """Stop once the last queued save is done, then tell the supervisor (and, if the
        session is ``rested`` (passivated), the store)."""
        handover = tuple(self._handover or ())
        self._handover = None
        services = self._services
        if handover:
            # The supervisor re-sends these to the next incarnation's entry.
            services.index.release(self._entry, len(handover))
        stopped = ActorStopped(self._session_id, self._entry.incarnation, handover, crashed)
        ref = self.actor_ref
        session_id = self._session_id

        def finish(_: object = None) -> None:  # in this turn, or on the store writer
            tell(ref, _ActorStop())
            services.tell_supervisor(stopped)
            if rested:
                services.store.passivated(session_id)  # never blocks

        # (still frozen: its decoding failed, so nothing was ever saved)
        last = None if self._frozen is not None else self._commits.pending_save()
        if last is None:
            finish()
        else:
            last.add_done_callback(finish)

    # --- crashes -------------------------------------------------------------------------

    def _crash(self, error: Exception) -> None:
        """An unexpected exception: fail what is in hand, tell the supervisor, await Retire."""
        self._services.log.error(
            "session_crashed",
            session_id=self._session_id,
            error=type(error).__name__,
            detail=str(error),
        )
        failure = StoreUnavailable(
            f"session {self._session_id!r}: its actor crashed ({type(error).__name__}: {error}); "
            "it restarts from its last committed snapshot; retry"
        )
        current = self._current
        if current is not None:
            self._answer(current, failure)
        self._abandon_running(failure)
        self._crashed = error
        self._become(ActorState.CRASHED)
        self._services.tell_supervisor(
            ActorCrashed(self._session_id, self._entry.incarnation, error)
        )

    def _on_message_while_crashed(self, message: Any) -> None:
        if isinstance(message, Step):
            self._stash_push(message)
        elif isinstance(message, Retire | Kill | Passivate):
            self._crashed_stop(message)
        elif isinstance(message, Inspect | ViewSession | Snapshot):
            message.reply(
                StoreUnavailable(f"session {self._session_id!r} is restarting after a crash")
            )

    def _crashed_stop(self, message: Retire | Kill | Passivate) -> None:
        """Stop a crashed actor; its unrun steps go to the next incarnation (unless killed)."""
        reroute = not isinstance(message, Kill) or message.reroute
        error = message.error if isinstance(message, Kill) else None
        self._become(ActorState.IDLE)  # leave ``crashed`` so that _kill can stop it
        self._kill(reroute, error or StoreUnavailable("session actor crashed"), self._crashed)


def timers_changed(services: ActorServices, old: Session, new: Session, now: float) -> None:
    """Count what a step did to the timers; tell the firing of a nearer due time (any
    thread: ``old`` and ``new`` are no longer changed by anyone)."""
    record = new.record
    fired_name = None if record is None else record.fired
    fired = None
    if fired_name is not None:
        for timer in old.timers:
            if timer.name == fired_name:
                fired = timer
                break
    services.timer_stats.count_step(old.timers, new.timers, fired, now)
    due = next_due(new.timers)
    if due is not None and services.timer_alarm is not None:
        services.timer_alarm(due)
