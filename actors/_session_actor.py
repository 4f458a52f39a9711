"""SessionActor: one live session, one step at a time.

The actor owns its session's in-memory state. A step whose graph is
non-blocking runs inline on the dispatcher thread; otherwise a sync task runs on
the task pool and an async one on the runtime's event loop, and the completion
comes back as a ``TaskDone`` message while later requests wait in the stash.

After a step the actor adopts the new session at once (the next request runs on
it), hands the snapshot to the store and answers the caller from the save
future's callback, after the commit that holds it; it does not wait for the
disk. Saves are compare-and-set against the previous revision, so when one
commit fails every later save of the same lineage fails too and no caller is
told "ok" for a snapshot that was not committed; the actor then reloads its last
committed snapshot and starts a new lineage.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pykka
import structlog

from actors._live_index import LiveEntry
from actors._pinning import unserved
from actors._services import ActorServices
from actors._timers import Timer
from actors.dispatcher import DispatcherActor
from actors.messages import (
    ActorCrashed,
    ActorStopped,
    CommitFailed,
    Crash,
    Edit,
    Inspect,
    Kill,
    Passivate,
    PassivateRequest,
    Retire,
    Snapshot,
    Step,
    StepDeadline,
    TaskDone,
    ViewSession,
)
from flow._codec import encode
from flow._edit import edit, unchanged
from flow._errors import (
    ActorflowError,
    SessionNotFound,
    StepTimeout,
    StoreUnavailable,
    TaskFailed,
)
from flow._graph import Graph
from flow._session import Session, SessionMetadata, SessionStatus
from flow._step import StepResult, astep, step
from flow._task import is_async_task
from flow._versions import upgrade_to

__all__ = ["SessionActor", "session_document"]


@dataclass(slots=True)
class _Running:
    """A step running off the actor (task pool or event loop)."""

    seq: int
    step: Step
    lineage: int
    future: Future[tuple[Session, StepResult]]
    timer: Timer | None
    started: float


def _bound_in(context: contextvars.Context | None) -> dict[str, Any]:
    """The structlog values bound in a caller's ``context`` (none without one)."""
    return {} if context is None else context.run(structlog.contextvars.get_contextvars)


def session_document(session: Session, history_tail: int) -> dict[str, Any]:
    """What ``inspect`` shows of a session, live or stored: plain, JSON-like values."""
    meta = session.metadata
    history = session.context.chat_history
    return {
        "session_id": session.session_id,
        "graph": session.graph_id,
        "graph_version": session.graph_version,
        "owner": meta.owner,
        "status": session.status.value,
        "status_message": session.status_message,
        "current_task": session.current_task,
        "revision": session.revision,
        "context": session.context.to_dict(),
        "history_tail": [m.to_dict() for m in history.last_messages(history_tail)],
        "history_length": len(history),
        "metadata": {
            "owner": meta.owner,
            "created_at": meta.created_at,
            "last_accessed": meta.last_accessed,
            "request_count": meta.request_count,
            "client_addr": meta.client_addr,
            "expires_at": meta.expires_at,
        },
    }


class SessionActor(DispatcherActor):
    """The actor of one live session (started by the supervisor, never directly).

    Args:
        services: the runtime's shared resources.
        session: the session as last committed (loaded from the store).
        graph: the session's graph.
        entry: the session's live-index entry (the actor keeps its fields current).
    """

    def __init__(
        self, services: ActorServices, session: Session, graph: Graph, entry: LiveEntry
    ) -> None:
        super().__init__()
        self._services = services
        self._settings = services.settings
        self._session = session
        self._graph = graph
        self._inline = services.runs_inline(graph)
        self._entry = entry
        self._session_id = session.session_id
        self._stored_revision: int | None = session.revision
        self._dirty = False
        self._lineage = 0
        self._seq = 0
        self._running: _Running | None = None
        self._last_failure: dict[str, Any] | None = None  # what inspect shows
        # Created on first use, and a list rather than a deque (it is short: at
        # most max_pending): most live sessions are idle and never need one.
        self._stash: list[Step | Passivate] | None = None
        self._current: Step | None = None
        # Weak: a committed save's future is dropped by the store, and an idle actor
        # should not keep it (and its condition variable) alive.
        self._last_save: weakref.ref[Future[None]] | None = None
        self._stopping = False
        self._crashed: BaseException | None = None
        self._handover: list[Step] | None = None

    # --- message handling ---------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        """Handle one message; an unexpected exception becomes a supervised crash."""
        if self._crashed is not None:
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
            if self._running is not None or self._stash:
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
        if self._stopping:
            # Unreachable by the index's ordering (no step is sent to an actor after
            # it is told to stop); if it ever happens, the caller must not hang.
            self._answer(
                message,
                StoreUnavailable(f"session {self._session_id!r} was stopping; retry the step"),
            )
            return
        self._current = message
        session = self._session
        if message.edit is not None:
            self._edit(message, message.edit)
            return
        if session.status is SessionStatus.ERROR:
            self._answer(
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
        task = self._graph.tasks.get(session.current_task)
        run_step = functools.partial(
            step,
            self._graph,
            session,
            message.input,
            mode=message.mode,
            now=now,
            max_chain=self._settings.max_chain,
            run_async=self._services.run_async,
        )
        if self._inline or task is None:
            try:
                new, result = run_step()
            except ActorflowError as exc:
                self._step_failed(message, exc)
                return
            except BaseException as exc:  # a task's SystemExit & co. are its failure, not ours
                self._step_failed(message, TaskFailed(session.current_task, exc, self._session_id))
                return
            self._adopt(message, new, result, now)
            return
        self._seq += 1
        seq = self._seq
        if is_async_task(task):
            future: Future[tuple[Session, StepResult]] = asyncio.run_coroutine_threadsafe(
                astep(
                    self._graph,
                    session,
                    message.input,
                    mode=message.mode,
                    now=now,
                    max_chain=self._settings.max_chain,
                    run_blocking=self._run_blocking,
                ),
                self._services.loop,
            )
        else:
            future = self._services.task_pool.submit(run_step)
        timer = self._services.timers.call_later(
            self._settings.step_timeout, functools.partial(self._tell_self, StepDeadline(seq))
        )
        self._running = _Running(seq, message, self._lineage, future, timer, time.monotonic())
        self._current = None
        self._entry.state = "running"
        self._entry.current_step_task = session.current_task
        future.add_done_callback(lambda f: self._tell_self(TaskDone(seq, f)))

    def _edit(self, message: Step, change: Edit) -> None:
        """Apply a repair from outside as one new revision (in this turn; no task runs)."""
        now = self._services.clock()
        try:
            if change.migrate_to is not None:
                graph, migrated = upgrade_to(
                    self._services.graphs, self._session, change.migrate_to
                )
                if migrated is None:
                    self._answer(message, unchanged(self._session))
                    return
                new, result = migrated, unchanged(migrated)
                self._graph = graph
                self._inline = self._services.runs_inline(graph)
                self._entry.graph_version = graph.version
            else:
                new, result = edit(
                    self._graph,
                    self._session,
                    set=change.set,
                    unset=change.unset,
                    goto=change.goto,
                    by=change.by,
                    now=now,
                )
        except ActorflowError as exc:
            self._step_failed(message, exc)
            return
        self._services.log.info(
            "session_edited", session_id=self._session_id, by=change.by, revision=new.revision
        )
        self._adopt(message, new, result, now)

    async def _run_blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._services.task_pool, functools.partial(fn, *args))

    def _tell_self(self, message: Any) -> None:
        try:
            self.actor_ref.tell(message)
        except pykka.ActorDeadError:
            return  # a late completion or deadline of a stopped actor: nothing to do

    def _task_done(self, message: TaskDone) -> None:
        running = self._running
        if running is None or running.seq != message.seq:
            return  # the step already timed out or the actor was killed: drop it
        self._running = None
        self._entry.state = "idle"
        self._entry.current_step_task = None
        if running.timer is not None:
            running.timer.cancel()
        self._current = running.step
        if running.lineage != self._lineage:
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
            except ActorflowError as exc:
                self._step_failed(running.step, exc)
            except BaseException as exc:  # a task's SystemExit & co. are its failure, not ours
                self._step_failed(
                    running.step, TaskFailed(self._session.current_task, exc, self._session_id)
                )
            else:
                self._adopt(running.step, new, result, self._services.clock())
        self._drain_stash()

    def _deadline(self, message: StepDeadline) -> None:
        running = self._running
        if running is None or running.seq != message.seq:
            return
        self._running = None
        self._entry.state = "idle"
        self._entry.current_step_task = None
        running.future.cancel()
        error = StepTimeout(self._session_id, self._settings.step_timeout)
        self._services.log.warning(
            "step_failed",
            session_id=self._session_id,
            error="step_timeout",
            task=self._session.current_task,
        )
        self._answer(running.step, error)
        self._drain_stash()

    def _step_failed(self, message: Step, error: ActorflowError) -> None:
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
        self._last_failure = {
            "type": type(cause).__name__,
            "message": str(cause),
            "task": task,
            "time": self._services.clock(),
        }
        self._answer(message, error)

    def _adopt(self, message: Step, new: Session, result: StepResult, now: float) -> None:
        """Make ``new`` the session, save it, and answer after the commit."""
        meta = new.metadata
        # ``new`` is the step's own working copy: set its expiry in place.
        new.metadata = SessionMetadata(
            meta.owner,
            meta.created_at,
            meta.last_accessed,
            meta.request_count,
            meta.client_addr,
            now + self._settings.session_ttl,
        )
        self._session = new
        entry = self._entry
        entry.status = new.status.value
        entry.current_task = new.current_task
        entry.revision = new.revision
        entry.request_count = new.metadata.request_count
        entry.expires_at = new.metadata.expires_at
        if self._settings.durability == "passivate":
            self._dirty = True
            self._answer(message, result)
            self._after_reply(result)
            return
        future = self._save(new)
        lineage = self._lineage
        self._current = None
        future.add_done_callback(
            lambda f: self._committed(f, message, result, lineage, new.revision)
        )

    def _save(self, session: Session) -> Future[None]:
        """Queue ``session`` for commit after everything queued before (compare-and-set)."""
        future = self._services.store.save(session, expected_revision=self._stored_revision)
        self._stored_revision = session.revision
        self._last_save = weakref.ref(future)
        self._dirty = False
        return future

    def _committed(
        self, future: Future[None], message: Step, result: StepResult, lineage: int, revision: int
    ) -> None:
        """Runs on the store's writer thread once the step's snapshot is committed (or not)."""
        error = future.exception()
        if error is None:
            self._answer(message, result)
            self._after_reply(result)
            return
        self._commit_error(revision, error)
        self._answer(
            message,
            error
            if isinstance(error, StoreUnavailable)
            else StoreUnavailable(f"session {self._session_id!r}: commit failed: {error}"),
        )
        self._tell_self(CommitFailed(lineage, revision, error))

    def _after_reply(self, result: StepResult) -> None:
        if result.status is SessionStatus.COMPLETED:
            self._services.tell_supervisor(PassivateRequest(self._session_id, "completed"))

    def _answer(self, message: Step, outcome: StepResult | BaseException) -> None:
        """Answer a step's caller (once) and update the live-index accounting."""
        if self._current is message:
            self._current = None
        self._services.index.finish(self._entry, failed=isinstance(outcome, BaseException))
        message.reply(outcome)

    def _stash_push(self, message: Step | Passivate) -> None:
        if self._stash is None:
            self._stash = []
        self._stash.append(message)

    def _hand_over(self, message: Step) -> None:
        if self._handover is None:
            self._handover = []
        self._handover.append(message)

    def _drain_stash(self) -> None:
        while self._stash and self._running is None and self._crashed is None:
            message = self._stash.pop(0)
            if isinstance(message, Passivate):
                self._passivate(message)
            else:
                self._start_step(message)

    def _commit_failed(self, message: CommitFailed) -> None:
        if message.lineage != self._lineage:
            return  # a later save of an already abandoned lineage: reloaded already
        self._lineage += 1
        loaded = self._services.store.load(self._session_id)
        if loaded is None:
            raise SessionNotFound(
                self._session_id, f"session {self._session_id!r} vanished from the store"
            )
        self._services.log.warning(
            "session_reloaded",
            session_id=self._session_id,
            revision=loaded.revision,
            failed_revision=message.revision,
        )
        self._session = loaded
        self._repin(loaded)
        self._stored_revision = loaded.revision
        self._dirty = False
        self._entry.revision = loaded.revision
        self._entry.status = loaded.status.value
        self._entry.current_task = loaded.current_task
        self._entry.request_count = loaded.metadata.request_count

    def _repin(self, loaded: Session) -> None:
        """After a reload, run the graph version the stored session is pinned to."""
        if loaded.graph_version == self._graph.version:
            return
        graph = self._services.graphs.find(loaded.graph_id, loaded.graph_version)
        if graph is None:
            raise unserved(self._services.graphs, loaded)
        self._graph = graph
        self._inline = self._services.runs_inline(graph)
        self._entry.graph_version = graph.version

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
        entry.snapshot_bytes = size
        return {
            **session_document(session, history_tail),
            "last_access": entry.last_used,
            "pending": entry.pending,
            "stashed": len(self._stash or ()),
            "state": "running" if running is not None else entry.state,
            "running_task": entry.current_step_task,
            "running_for": None if running is None else time.monotonic() - running.started,
            "next_passivation": passivation[0],
            "next_passivation_reason": passivation[1],
            "live_reason": entry.reason,
            "activated_at": entry.activated_at,
            "incarnation": entry.incarnation,
            "snapshot_bytes": size,
            "dirty": self._dirty,
            "last_failure": self._last_failure,
        }

    def _snapshot(self, message: Snapshot) -> None:
        size = len(encode(self._session))
        self._entry.snapshot_bytes = size
        revision = self._session.revision
        lineage = self._lineage
        future = self._save(self._session)

        def done(f: Future[None]) -> None:
            error = f.exception()
            if error is None:
                message.reply(size)
                return
            self._commit_error(revision, error)
            message.reply(
                error
                if isinstance(error, StoreUnavailable)
                else StoreUnavailable(f"snapshot of {self._session_id!r} failed: {error}")
            )
            # Later saves expect this revision to be stored: start over from the store.
            self._tell_self(CommitFailed(lineage, revision, error))

        future.add_done_callback(done)

    def _commit_error(self, revision: int, error: BaseException) -> None:
        self._services.log.warning(
            "commit_failed",
            session_id=self._session_id,
            revision=revision,
            error=type(error).__name__,
            detail=str(error),
        )

    # --- stopping ------------------------------------------------------------------------

    def _passivate(self, message: Passivate) -> None:
        if message.force:
            error = message.error or StoreUnavailable("session actor stopped")
            self._abandon_running(error)
            while self._stash:
                queued = self._stash.pop(0)
                if isinstance(queued, Step):
                    self._answer(queued, error)
        elif self._running is not None or self._stash:
            self._stash_push(message)
            return
        if self._stopping:
            return
        self._stopping = True
        if self._dirty:
            self._entry.snapshot_bytes = len(encode(self._session))
            self._save(self._session).add_done_callback(
                functools.partial(self._log_failed_save, self._session.revision)
            )
        self._stop_after_saves(None)

    def _log_failed_save(self, revision: int, future: Future[None]) -> None:
        error = future.exception()
        if error is not None:
            self._commit_error(revision, error)

    def _kill(self, reroute: bool, error: BaseException, crashed: BaseException | None) -> None:
        if self._stopping:
            return
        self._abandon_running(error)
        while self._stash:
            queued = self._stash.pop(0)
            if isinstance(queued, Step):
                if reroute:
                    self._hand_over(queued)
                else:
                    self._answer(queued, error)
        self._stopping = True
        self._dirty = False
        self._stop_after_saves(crashed)

    def _abandon_running(self, error: BaseException) -> None:
        running = self._running
        if running is None:
            return
        self._running = None
        if running.timer is not None:
            running.timer.cancel()
        running.future.cancel()
        self._answer(running.step, error)

    def _stop_after_saves(self, crashed: BaseException | None) -> None:
        """Stop once the last queued save is done, then tell the supervisor."""
        handover = tuple(self._handover or ())
        self._handover = None
        if handover:
            # The supervisor re-sends these to the next incarnation's entry.
            self._services.index.release(self._entry, len(handover))
        stopped = ActorStopped(self._session_id, self._entry.incarnation, handover, crashed)

        def finish(_: object = None) -> None:
            self.stop()
            self._services.tell_supervisor(stopped)

        last = None if self._last_save is None else self._last_save()
        if last is None or last.done():
            finish()
        else:
            last.add_done_callback(finish)

    # --- crashes -------------------------------------------------------------------------

    def _crash(self, error: Exception) -> None:
        """An unexpected exception: fail what is in hand, tell the supervisor, await Retire."""
        self._crashed = error
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
        if self._stopping:
            return
        reroute = not isinstance(message, Kill) or message.reroute
        error = message.error if isinstance(message, Kill) else None
        self._kill(reroute, error or StoreUnavailable("session actor crashed"), self._crashed)
