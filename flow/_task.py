"""Tasks and what they return: ``Task``, ``FunctionTask``, ``TaskResult``, ``NextAction``.

A task is an id plus ``run(ctx) -> TaskResult``; ``run`` may be a plain method or
``async def``. The engine (``step``/``astep``) calls a task through two internal
methods, ``_execute`` (from synchronous code) and ``_aexecute`` (from a coroutine):
they are the extension points for implementors of composite tasks such as
``FanOutTask``; ordinary tasks only implement ``run``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, ClassVar, Final, Literal

import msgspec

from flow._context import Context
from flow._errors import InvalidInput
from flow._timers import check_after

__all__ = [
    "ActionKind",
    "FunctionTask",
    "NextAction",
    "RunAsync",
    "RunBlocking",
    "Task",
    "TaskFn",
    "TaskResult",
    "is_async_task",
    "task",
]

ActionKind = Literal["continue", "continue_and_execute", "wait_for_input", "end", "goto", "goback"]

#: Runs a task's coroutine to completion from synchronous code and returns its result.
RunAsync = Callable[[Coroutine[Any, Any, Any]], Any]
#: ``run_blocking(fn, *args)`` runs a blocking callable off the event loop (``asyncio.to_thread``).
RunBlocking = Callable[..., Awaitable[Any]]

_KINDS: Final[frozenset[str]] = frozenset(
    ("continue", "continue_and_execute", "wait_for_input", "end", "goto", "goback")
)
_NAMES: Final[dict[str, str]] = {
    "continue": "Continue",
    "continue_and_execute": "ContinueAndExecute",
    "wait_for_input": "WaitForInput",
    "end": "End",
    "goback": "GoBack",
}


class NextAction(msgspec.Struct, frozen=True):
    """What the engine does after a task ran.

    Use the ready-made instances ``NextAction.Continue`` (move along the edge and
    return), ``NextAction.ContinueAndExecute`` (move and run the next task in the
    same step), ``NextAction.WaitForInput`` (stay; the next step re-runs this task),
    ``NextAction.End`` (the session is completed), ``NextAction.GoBack`` (return to
    the previous task) and build a jump with ``NextAction.GoTo("task_id")``.

    Attributes:
        kind: one of ``continue``, ``continue_and_execute``, ``wait_for_input``,
            ``end``, ``goto``, ``goback``.
        task_id: the target of a ``goto``; None for every other kind.
    """

    kind: ActionKind
    task_id: str | None = None

    Continue: ClassVar[NextAction]
    ContinueAndExecute: ClassVar[NextAction]
    WaitForInput: ClassVar[NextAction]
    End: ClassVar[NextAction]
    GoBack: ClassVar[NextAction]

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown next action kind {self.kind!r}")
        if (self.kind == "goto") != (self.task_id is not None):
            raise ValueError("a goto next action needs a task_id, and only a goto has one")

    @staticmethod
    def GoTo(task_id: str) -> NextAction:
        """Jump to ``task_id`` without running it (the session pauses there)."""
        if not isinstance(task_id, str) or not task_id:
            raise ValueError(f"GoTo needs a non-empty task id, got {task_id!r}")
        return NextAction("goto", task_id)

    def __repr__(self) -> str:
        if self.kind == "goto":
            return f"NextAction.GoTo({self.task_id!r})"
        return f"NextAction.{_NAMES[self.kind]}"


NextAction.Continue = NextAction("continue")
NextAction.ContinueAndExecute = NextAction("continue_and_execute")
NextAction.WaitForInput = NextAction("wait_for_input")
NextAction.End = NextAction("end")
NextAction.GoBack = NextAction("goback")


class TaskResult(msgspec.Struct, frozen=True):
    """What a task's ``run`` returns.

    Attributes:
        response: the text for the caller (None: nothing to say).
        next_action: what the engine does next (default ``NextAction.Continue``).
        status_message: becomes the session's status message (None clears it).
        wake_after: with ``NextAction.WaitForInput`` only: if no input arrives
            within this delay, the session is woken by a step of its own
            (``ctx.timer == "wake_after"``, ``ctx.input`` None); an input arriving
            first cancels it.

    Raises:
        InvalidInput: ``wake_after`` without ``WaitForInput``, or out of range
            (0 to 366 days).
    """

    response: str | None = None
    next_action: NextAction = NextAction.Continue
    status_message: str | None = None
    wake_after: timedelta | None = None

    def __post_init__(self) -> None:
        if self.wake_after is None:
            return
        if self.next_action != NextAction.WaitForInput:
            raise InvalidInput(
                f"wake_after needs next_action=NextAction.WaitForInput, not {self.next_action!r}"
                " (use ctx.schedule for a timer that fires whatever happens)"
            )
        check_after(self.wake_after, "wake_after")

    @classmethod
    def move_to_next(cls) -> TaskResult:
        """No response; move along the edge and return (graph-flow's shortcut)."""
        return cls(None, NextAction.Continue)

    @classmethod
    def move_to_next_direct(cls) -> TaskResult:
        """No response; move along the edge and run the next task in the same step."""
        return cls(None, NextAction.ContinueAndExecute)


class Task:
    """A unit of work in a graph: subclass it and implement ``run``.

    ``run(ctx)`` may be a plain method or ``async def``. Its ``id`` defaults to the
    qualified class name (``module.Class``); pass ``task_id`` to name it.

    Attributes:
        blocking: True (the default) when ``run`` may block (I/O, long CPU work), so the
            runtime runs it off its dispatcher threads; a quick sync task sets it False.
    """

    blocking: bool = True
    _task_id: str | None = None

    def __init__(self, task_id: str | None = None) -> None:
        if task_id is not None:
            if not isinstance(task_id, str) or not task_id:
                raise ValueError(f"a task id must be a non-empty str, got {task_id!r}")
            self._task_id = task_id

    @property
    def id(self) -> str:
        """The task's id, unique within its graph."""
        if self._task_id is not None:
            return self._task_id
        cls = type(self)
        return f"{cls.__module__}.{cls.__qualname__}"

    @property
    def is_async(self) -> bool:
        """Whether ``run`` is a coroutine function."""
        return inspect.iscoroutinefunction(self.run)

    def run(self, ctx: Context) -> TaskResult | Awaitable[TaskResult]:
        """Do the task's work on ``ctx`` and say what happens next."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement run(ctx)")

    def _execute(self, ctx: Context, run_async: RunAsync | None) -> TaskResult:
        """Run to completion from synchronous code (internal: for composite tasks).

        A coroutine returned by ``run`` is handed to ``run_async``; when that is None
        it runs on a private new event loop.
        """
        outcome: Any = self.run(ctx)
        if inspect.isawaitable(outcome):
            runner = run_async if run_async is not None else run_on_private_loop
            coro = outcome if inspect.iscoroutine(outcome) else _awaited(outcome)
            outcome = runner(coro)
        return checked_result(self, outcome)

    async def _aexecute(self, ctx: Context, run_blocking: RunBlocking) -> TaskResult:
        """Run to completion from a coroutine (internal: for composite tasks).

        Async tasks are awaited; non-blocking sync tasks run inline; blocking sync
        tasks go through ``run_blocking(self.run, ctx)``.
        """
        if self.is_async or not self.blocking:
            outcome: Any = self.run(ctx)
        else:
            outcome = await run_blocking(self.run, ctx)
        if inspect.isawaitable(outcome):
            outcome = await outcome
        return checked_result(self, outcome)

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} id={self.id!r}>"


TaskFn = Callable[[Context], TaskResult | Awaitable[TaskResult]]


class FunctionTask(Task):
    """A task made from a function ``fn(ctx) -> TaskResult`` (plain or ``async def``)."""

    def __init__(self, task_id: str, fn: TaskFn, *, blocking: bool = True) -> None:
        if not callable(fn):
            raise TypeError(f"FunctionTask {task_id!r}: fn must be callable, got {fn!r}")
        super().__init__(task_id)
        self.fn = fn
        self.blocking = blocking

    @property
    def is_async(self) -> bool:
        """Whether ``fn`` is a coroutine function."""
        return inspect.iscoroutinefunction(self.fn)

    def run(self, ctx: Context) -> TaskResult | Awaitable[TaskResult]:
        """Call ``fn(ctx)``."""
        return self.fn(ctx)


def task(task_id: str | None = None, *, blocking: bool = True) -> Callable[[TaskFn], FunctionTask]:
    """Decorator that turns ``fn(ctx) -> TaskResult`` into a ``FunctionTask``.

    Args:
        task_id: the task's id (default: the function's qualified name).
        blocking: whether the function may block (see ``Task.blocking``).
    """

    def wrap(fn: TaskFn) -> FunctionTask:
        name = task_id if task_id is not None else f"{fn.__module__}.{fn.__qualname__}"
        return FunctionTask(name, fn, blocking=blocking)

    return wrap


def is_async_task(t: Task) -> bool:
    """Whether ``t.run`` is a coroutine function (the runtime runs it on its event loop)."""
    return t.is_async


def checked_result(t: Task, outcome: object) -> TaskResult:
    """Return ``outcome`` if it is a well-formed ``TaskResult``; else raise a TypeError."""
    if not isinstance(outcome, TaskResult):
        raise TypeError(f"task {t.id!r} returned {type(outcome).__name__}, expected TaskResult")
    for field, value in (
        ("response", outcome.response),
        ("status_message", outcome.status_message),
    ):
        if value is not None and not isinstance(value, str):
            raise TypeError(
                f"task {t.id!r} returned a {field} of type {type(value).__name__}, "
                "expected str or None"
            )
    if not isinstance(outcome.next_action, NextAction):
        raise TypeError(
            f"task {t.id!r} returned next_action {outcome.next_action!r}, expected a NextAction"
        )
    return outcome


def run_on_private_loop(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` on a new event loop; refuse (closing it) inside a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise RuntimeError(
        "step() cannot run an async task from inside a running event loop: "
        "use astep(), or pass run_async to step()"
    )


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
