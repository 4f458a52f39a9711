"""``FanOutTask``: run child tasks concurrently, each on its own copy of the context.

graph-flow hands every child the same shared context (the last writer wins);
here each child gets ``ctx.copy()`` and only the recorded keys come back, in
child order, as graph-flow writes them:

    ``<prefix>.<child_id>.response`` (only when the child gave one),
    ``<prefix>.<child_id>.status`` (only when it gave a status message),
    ``<prefix>.<child_id>.next_action`` (graph-flow's spelling: ``End``,
    ``GoTo("x")``; children's actions are otherwise ignored).

The fan-out itself answers ``FanOutTask '<id>' completed N child task(s)``, with
the same text as its status message.

If any child raises, the fan-out raises ``TaskFailed`` naming the first failing
child (in child order) and records nothing.

A streamed step shows each child's ``task_started``, its emits (tagged with the
child's id) and its ``task_finished``, interleaved as the children run.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from flow._context import Context
from flow._errors import TaskFailed
from flow._events import TaskFinished, TaskStarted
from flow._task import (
    NextAction,
    RunAsync,
    RunBlocking,
    Task,
    TaskResult,
    run_on_private_loop,
)

__all__ = ["FanOutTask"]


class FanOutTask(Task):
    """Runs ``children`` concurrently and records their results under ``<prefix>.<id>.*``.

    From ``step`` sync children run on threads and async children together on the
    event loop ``run_async`` provides; from ``astep`` all children are gathered on the
    running loop (blocking sync ones through ``run_blocking``).

    Args:
        task_id: the fan-out's own id.
        children: the tasks to run (at least one; ids unique).
        prefix: the first part of the recorded keys (default ``"fanout"``).
        next_action: what the fan-out returns once its children are done
            (default ``NextAction.Continue``).
    """

    def __init__(
        self,
        task_id: str,
        children: Sequence[Task],
        prefix: str = "fanout",
        *,
        next_action: NextAction = NextAction.Continue,
    ) -> None:
        super().__init__(task_id)
        kids = list(children)
        if not kids:
            raise ValueError(f"FanOutTask {task_id!r} needs at least one child task")
        for kid in kids:
            if not isinstance(kid, Task):
                raise TypeError(
                    f"FanOutTask {task_id!r}: children must be Tasks, got {type(kid).__name__}"
                )
        ids = [kid.id for kid in kids]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"FanOutTask {task_id!r}: duplicate child ids {duplicates}")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"FanOutTask {task_id!r}: prefix must be a non-empty str")
        self.children: tuple[Task, ...] = tuple(kids)
        self.prefix = prefix
        self.next_action = next_action

    def run(self, ctx: Context) -> TaskResult:
        """Run the children from synchronous code (async ones on a private event loop)."""
        return self._execute(ctx, None)

    def _copies(self, ctx: Context) -> list[Context]:
        """One context per child, its emits tagged with the child's id."""
        copies = [ctx.copy() for _ in self.children]
        for kid, copy in zip(self.children, copies, strict=True):
            copy._task = kid.id
        return copies

    def _execute(self, ctx: Context, run_async: RunAsync | None) -> TaskResult:
        copies = self._copies(ctx)
        outcomes: list[TaskResult | BaseException | None] = [None] * len(self.children)
        sync = [i for i, kid in enumerate(self.children) if not kid.is_async]
        asyn = [i for i, kid in enumerate(self.children) if kid.is_async]
        futures: dict[int, Future[TaskResult]] = {}
        with ThreadPoolExecutor(
            max_workers=max(1, len(sync)), thread_name_prefix=f"fanout-{self.id}"
        ) as pool:
            for i in sync:
                futures[i] = pool.submit(_run_child, self.children[i], copies[i], run_async)
            if asyn:
                runner = run_async if run_async is not None else run_on_private_loop
                gathered = runner(self._gather(asyn, copies))
                for i, outcome in zip(asyn, gathered, strict=True):
                    outcomes[i] = outcome
        for i, future in futures.items():
            exc = future.exception()
            outcomes[i] = exc if exc is not None else future.result()
        return self._record(ctx, outcomes)

    def _gather(self, indexes: list[int], copies: list[Context]) -> Coroutine[Any, Any, Any]:
        async def gather() -> list[TaskResult | BaseException]:
            return await asyncio.gather(
                *(_arun_child(self.children[i], copies[i], asyncio.to_thread) for i in indexes),
                return_exceptions=True,
            )

        return gather()

    async def _aexecute(self, ctx: Context, run_blocking: RunBlocking) -> TaskResult:
        copies = self._copies(ctx)
        outcomes = await asyncio.gather(
            *(
                _arun_child(kid, c, run_blocking)
                for kid, c in zip(self.children, copies, strict=True)
            ),
            return_exceptions=True,
        )
        return self._record(ctx, list(outcomes))

    def _record(
        self, ctx: Context, outcomes: Sequence[TaskResult | BaseException | None]
    ) -> TaskResult:
        results: list[TaskResult] = []
        for kid, outcome in zip(self.children, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                raise TaskFailed(kid.id, outcome, ctx.session_id) from outcome
            if not isinstance(outcome, TaskResult):
                raise TypeError(f"child task {kid.id!r} of {self.id!r} gave no result")
            results.append(outcome)
        for kid, outcome in zip(self.children, results, strict=True):
            key = f"{self.prefix}.{kid.id}"
            if outcome.response is not None:
                ctx.set(f"{key}.response", outcome.response)
            if outcome.status_message is not None:
                ctx.set(f"{key}.status", outcome.status_message)
            ctx.set(f"{key}.next_action", _graph_flow_spelling(outcome.next_action))
        summary = f"FanOutTask {self.id!r} completed {len(results)} child task(s)"
        return TaskResult(summary, self.next_action, summary)


def _started(kid: Task, ctx: Context) -> None:
    events = ctx._events
    if events is not None and events.wanted():
        events.publish(TaskStarted(kid.id), 0)


def _finished(kid: Task, ctx: Context, result: TaskResult) -> TaskResult:
    events = ctx._events
    if events is not None and events.wanted():
        action = result.next_action
        events.publish(TaskFinished(kid.id, result.response, action.kind, action.task_id), 0)
    return result


def _run_child(kid: Task, ctx: Context, run_async: RunAsync | None) -> TaskResult:
    """On a fan-out thread: one child, between its task_started and task_finished events."""
    _started(kid, ctx)
    return _finished(kid, ctx, kid._execute(ctx, run_async))


async def _arun_child(kid: Task, ctx: Context, run_blocking: RunBlocking) -> TaskResult:
    """One child from a coroutine, between its task_started and task_finished events."""
    _started(kid, ctx)
    return _finished(kid, ctx, await kid._aexecute(ctx, run_blocking))


def _graph_flow_spelling(action: NextAction) -> str:
    """``action`` as graph-flow's ``format!("{:?}", next_action)`` writes it."""
    if action.task_id is not None:
        return f"GoTo({json.dumps(action.task_id)})"
    return repr(action).removeprefix("NextAction.")
