"""Running a session one step: ``step`` (sync), ``astep`` (asyncio) and ``new_session``.

A step is a transaction: it works on a copy of the session and returns the new
session, so whatever raises (a task, a predicate, the chain limit, a GoTo to an
unknown task) leaves the given session exactly as it was.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from flow._context import DEFAULT_MAX_MESSAGES, ChatHistory, Context
from flow._errors import InvalidInput, SessionCompleted, TaskFailed, TaskNotFound
from flow._events import StepEvents, StepStarted, TaskFinished, TaskStarted
from flow._frozen import Frozen
from flow._graph import Graph
from flow._record import record_of
from flow._session import Session, SessionMetadata, SessionStatus, new_session_id
from flow._task import RunAsync, RunBlocking, Task, TaskResult
from flow._timers import WAKE_AFTER, PendingTimer, TimerBook, check_after

__all__ = ["NO_EDGE_MESSAGE", "Mode", "StepResult", "astep", "new_session", "step"]

Mode = Literal["step", "run"]
#: The status message of a Continue with nowhere to go (graph-flow's wording).
NO_EDGE_MESSAGE = "no outgoing edge"


class StepResult(Frozen, frozen=True, gc=False):
    """What one ``step`` call did.

    Attributes:
        session_id: the session that stepped.
        task: the id of the last task that ran.
        response: the last response any task gave in this step (None when none gave
            one; graph-flow returns the last task's, even when that is None).
        responses: every non-None response of the tasks that ran, in order.
        status: the session's status after the step.
        next_task: the task the session is at now (the one the next step runs).
        status_message: the session's status message after the step.
        revision: the session's revision after the step.
        replayed: True when this is the recorded answer of an earlier step with the
            same idempotency key, which did not run again (not compared).
    """

    session_id: str
    task: str
    response: str | None
    responses: tuple[str, ...]
    status: SessionStatus
    next_task: str
    status_message: str | None
    revision: int
    replayed: bool = False

    _not_compared: ClassVar[tuple[str, ...]] = ("replayed",)


def new_session(
    graph: Graph,
    *,
    owner: str,
    context: Mapping[str, Any] | Context | None = None,
    session_id: str | None = None,
    client_addr: str | None = None,
    now: float | None = None,
    expires_at: float | None = None,
    max_messages: int | None = DEFAULT_MAX_MESSAGES,
) -> Session:
    """A new session of ``graph`` at its start task: revision 0, status paused.

    Args:
        graph: the graph the session runs.
        owner: who owns the session.
        context: initial context values (msgpack-safe), or a ``Context`` to copy.
        session_id: the id (default: a new UUID4).
        client_addr: the creating client's address, if known.
        now: the creation time, UNIX seconds (default: ``time.time()``).
        expires_at: when the session expires (None: never).
        max_messages: how many chat messages to keep (None: all).

    Raises:
        InvalidInput: a context value is not msgpack-safe, or an argument is malformed.
    """
    if not isinstance(owner, str) or not owner:
        raise InvalidInput(f"a session owner must be a non-empty str, got {owner!r}")
    if session_id is None:
        session_id = new_session_id()
    elif not isinstance(session_id, str) or not session_id:
        raise InvalidInput(f"a session id must be a non-empty str, got {session_id!r}")
    if isinstance(context, Context):
        ctx = context.copy()
        ctx.input = None
        ctx.session_id = session_id
    else:
        ctx = Context(
            dict(context or {}), ChatHistory(max_messages=max_messages), session_id=session_id
        )
    created = time.time() if now is None else now
    return Session(
        session_id=session_id,
        graph_id=graph.id,
        graph_version=graph.version,
        current_task=graph.start,
        status=SessionStatus.PAUSED,
        context=ctx,
        metadata=SessionMetadata(
            owner=owner,
            created_at=created,
            last_accessed=created,
            request_count=0,
            client_addr=client_addr,
            expires_at=expires_at,
        ),
    )


def step(
    graph: Graph,
    session: Session,
    input: Any = None,
    *,
    mode: Mode = "step",
    now: float | None = None,
    max_chain: int = 1000,
    run_async: RunAsync | None = None,
    events: StepEvents | None = None,
    timer: str | None = None,
    ttl: float | None = None,
) -> tuple[Session, StepResult]:
    """Run ``session``'s current task once (or a chain of tasks) and return the new session.

    ``session`` itself is never modified.

    Args:
        graph: the session's graph.
        session: the committed session.
        input: this step's input: ``ctx.input`` for the tasks, stored under context key
            ``user_input`` when not None, and appended to the chat history as a user
            message when it is a str (unless the graph was built with
            ``record_input=False``).
        mode: ``"step"`` follows the tasks' actions; ``"run"`` keeps going after every
            move until the session waits for input, completes or cannot move.
        now: the time of the step, UNIX seconds (default: ``time.time()``).
        max_chain: the most tasks one call may run.
        run_async: runs an async task's coroutine and returns its result (default: a
            private new event loop; refused inside a running loop, use ``astep``).
        events: where the step streams its events (``flow._events``): step_started,
            then per task task_started, what it emits, task_finished. None: nowhere.
        timer: fire this pending timer (``flow._timers``): ``input`` is ignored, the
            tasks see ``ctx.timer == timer`` and the timer's payload as ``ctx.input``
            (not recorded as a user message), and the new session no longer holds
            it. Without it, the step is an input and cancels a ``wake_after``.
        ttl: how long the session lives after this step: the new session's
            ``expires_at`` is ``now + ttl``, counted from the step's start like
            ``last_accessed`` (None: ``expires_at`` is kept).

    Returns:
        The new session (revision + 1) and what the step did.

    Raises:
        SessionCompleted: the session has completed.
        InvalidInput: the session is not of this graph, an argument is malformed,
            the input is not msgpack-safe, or ``timer`` is not pending.
        TaskNotFound: the session's current task is not in the graph.
        TaskFailed: a task or an edge predicate raised, a GoTo named an unknown task,
            or the step exceeded ``max_chain`` (the cause is attached).
    """
    run = _StepRun(graph, session, input, mode, now, max_chain, events, timer, ttl)
    t: Task | None = run.first_task()
    while t is not None:
        run.task_started(t)
        try:
            result = t._execute(run.ctx, run_async)
        except Exception as exc:
            raise TaskFailed(t.id, exc, session.session_id) from exc
        t = run.after(t, result)
    return run.finish()


async def astep(
    graph: Graph,
    session: Session,
    input: Any = None,
    *,
    mode: Mode = "step",
    now: float | None = None,
    max_chain: int = 1000,
    run_blocking: RunBlocking | None = None,
    events: StepEvents | None = None,
    timer: str | None = None,
    ttl: float | None = None,
) -> tuple[Session, StepResult]:
    """The asyncio form of ``step``: same arguments, results and errors.

    Async tasks are awaited, non-blocking sync tasks run inline, blocking sync tasks
    go through ``run_blocking(fn, *args)`` (default ``asyncio.to_thread``).
    """
    blocking_runner: RunBlocking = asyncio.to_thread if run_blocking is None else run_blocking
    run = _StepRun(graph, session, input, mode, now, max_chain, events, timer, ttl)
    t: Task | None = run.first_task()
    while t is not None:
        run.task_started(t)
        try:
            result = await t._aexecute(run.ctx, blocking_runner)
        except Exception as exc:
            raise TaskFailed(t.id, exc, session.session_id) from exc
        t = run.after(t, result)
    return run.finish()


class _StepRun:
    """One step call's state on a working copy; shared by ``step`` and ``astep``."""

    def __init__(
        self,
        graph: Graph,
        session: Session,
        input: Any,
        mode: Mode,
        now: float | None,
        max_chain: int,
        events: StepEvents | None,
        timer: str | None = None,
        ttl: float | None = None,
    ) -> None:
        if session.graph_id != graph.id:
            raise InvalidInput(
                f"session {session.session_id!r} belongs to graph {session.graph_id!r}, "
                f"not {graph.id!r}"
            )
        if session.status is SessionStatus.COMPLETED:
            raise SessionCompleted(session.session_id)
        if mode not in ("step", "run"):
            raise InvalidInput(f"step mode must be 'step' or 'run', got {mode!r}")
        if isinstance(max_chain, bool) or not isinstance(max_chain, int) or max_chain < 1:
            raise InvalidInput(f"max_chain must be an int >= 1, got {max_chain!r}")
        self.graph = graph
        self.mode = mode
        self.now = time.time() if now is None else now
        self.max_chain = max_chain
        self.ttl = ttl
        self.work = session.copy()
        self.ctx = self.work.context
        self.ctx.track()
        self.back_low = len(self.work.back_stack)
        self.book = book = TimerBook(session.timers, self.now)
        if timer is not None:
            pending = book.timers.get(timer) if isinstance(timer, str) else None
            if pending is None:
                raise InvalidInput(f"session {session.session_id!r} has no pending timer {timer!r}")
            book.cancel(timer)
            input = pending.input
        else:
            book.cancel(WAKE_AFTER)  # an input arrived first
        self.timer = timer
        self.input = input
        self.ctx.session_id = session.session_id
        self.ctx.input = input
        self.ctx.timer = timer
        self.ctx._timers = book
        if timer is None:
            if input is not None:
                self.ctx.set("user_input", input)
            if isinstance(input, str) and graph.record_input:
                self.ctx.chat_history.add_user(input)
        self.ran = 0
        self.last_task = session.current_task
        self.responses: list[str] = []
        self.events = events
        self.ctx._events = events
        if events is not None and events.wanted():
            events.publish(StepStarted(session.session_id, session.revision), 0)

    def first_task(self) -> Task:
        """The task to run first: the session's current one."""
        self.ran = 1
        return self.graph.task(self.work.current_task)

    def task_started(self, t: Task) -> None:
        """Point the context's emits at ``t`` and announce it."""
        self.ctx._task = t.id
        events = self.events
        if events is not None and events.wanted():
            events.publish(TaskStarted(t.id), 0)

    def after(self, t: Task, result: TaskResult) -> Task | None:
        """Apply ``t``'s result to the working copy; return the next task to run, if any."""
        work = self.work
        events = self.events
        if events is not None and events.wanted():
            action = result.next_action
            events.publish(TaskFinished(t.id, result.response, action.kind, action.task_id), 0)
        self.last_task = t.id
        if result.response is not None:
            self.responses.append(result.response)
        work.status_message = result.status_message
        action = result.next_action
        moved = False
        if action.kind in ("continue", "continue_and_execute"):
            try:
                target = self.graph.next_task(t.id, self.ctx)
            except Exception as exc:
                raise TaskFailed(t.id, exc, work.session_id) from exc
            if target is None:
                work.status = SessionStatus.PAUSED
                if work.status_message is None:
                    work.status_message = NO_EDGE_MESSAGE
            else:
                moved = self._move_to(target)
        elif action.kind == "wait_for_input":
            work.status = SessionStatus.WAITING_FOR_INPUT
            if result.wake_after is not None:
                self._wake_after(t, result)
        elif action.kind == "end":
            work.status = SessionStatus.COMPLETED
        elif action.kind == "goto":
            target = action.task_id
            if target is None or target not in self.graph.tasks:
                missing = TaskNotFound(str(target), self.graph.id)
                raise TaskFailed(t.id, missing, work.session_id) from missing
            moved = self._move_to(target)
        elif work.back_stack:
            work.status = SessionStatus.PAUSED
            work.current_task = work.back_stack.pop()
            self.back_low = min(self.back_low, len(work.back_stack))
            moved = True
        else:
            # GoBack with nowhere to go back to: stay and wait, as graph-flow does
            work.status = SessionStatus.WAITING_FOR_INPUT
        if not moved:
            return None
        if action.kind != "continue_and_execute" and self.mode != "run":
            return None
        if self.ran >= self.max_chain:
            limit = RuntimeError(
                f"step ran {self.ran} tasks in one call and reached max_chain={self.max_chain} "
                "without waiting for input, pausing or completing"
            )
            raise TaskFailed(t.id, limit, work.session_id) from limit
        self.ran += 1
        return self.graph.task(work.current_task)

    def _wake_after(self, t: Task, result: TaskResult) -> None:
        assert result.wake_after is not None
        due = self.now + check_after(result.wake_after, "wake_after")
        try:
            self.book.set(PendingTimer(WAKE_AFTER, due, None, wake=True))
        except InvalidInput as exc:
            raise TaskFailed(t.id, exc, self.work.session_id) from exc

    def _move_to(self, target: str) -> bool:
        work = self.work
        work.back_stack.append(work.current_task)
        work.current_task = target
        work.status = SessionStatus.PAUSED
        return True

    def finish(self) -> tuple[Session, StepResult]:
        """Bump revision and metadata; return the new session and the step's result."""
        work = self.work
        work.revision += 1
        work.graph_version = self.graph.version
        meta = work.metadata
        work.metadata = SessionMetadata(
            meta.owner,
            meta.created_at,
            self.now,
            meta.request_count + 1,
            meta.client_addr,
            meta.expires_at if self.ttl is None else self.now + self.ttl,
            meta.members,
        )
        self.ctx.input = None
        self.ctx._events = None
        self.ctx.timer = None
        self.ctx._timers = None
        book = self.book
        if work.status is SessionStatus.COMPLETED:
            book.clear()  # a completed session never steps again
        if book.changed:
            work.timers = book.pending()
        work.record = record_of(
            work,
            task=self.last_task,
            input=self.input,
            response=self.responses[-1] if self.responses else None,
            back_low=self.back_low,
            timers_changed=book.changed,
            fired=self.timer,
        )
        self.ctx.stop_tracking()
        result = StepResult(
            session_id=work.session_id,
            task=self.last_task,
            response=self.responses[-1] if self.responses else None,
            responses=tuple(self.responses),
            status=work.status,
            next_task=work.current_task,
            status_message=work.status_message,
            revision=work.revision,
        )
        return work, result
