"""Graphs the fault tests serve beside the demo ones (``--graphs fault_graphs:GRAPHS``).

Both tasks are blocking (they run on the runtime's task threads) and first mark
themselves started by creating the file ``<started_dir>/<session id>`` when the
context holds ``started_dir``: across the process boundary a file is the only
signal a test can wait on.

``sleepy``: sleeps ``sleep`` seconds (context key, at most ``SLEEP_BOUND``),
counts the step in context key ``count``, marks itself finished in
``<finished_dir>/<session id>`` (when given) and waits for input. With a shorter
``--step-timeout`` it is a task that runs past its deadline.

``stuck``: waits on an event that nothing ever sets (bounded by ``STUCK_BOUND``
only so that a broken shutdown cannot leave a process behind forever). It is a
task that never returns.
"""

from __future__ import annotations

import os
import threading
import time

from flow import Context, FunctionTask, GraphBuilder, NextAction, TaskResult

SLEEP_BOUND = 30.0
STUCK_BOUND = 600.0

_NEVER_SET = threading.Event()


def _mark(ctx: Context, key: str) -> None:
    directory = ctx.get(key)
    if directory:
        with open(os.path.join(str(directory), str(ctx.session_id)), "a"):
            pass


def _count(ctx: Context) -> None:
    ctx.set("count", int(ctx.get("count", 0)) + 1)


def _sleepy(ctx: Context) -> TaskResult:
    _mark(ctx, "started_dir")
    seconds = min(float(ctx.get("sleep", 0.0)), SLEEP_BOUND)
    time.sleep(seconds)  # the slow task under test: sleeping is its whole behaviour
    _count(ctx)
    _mark(ctx, "finished_dir")
    return TaskResult(f"slept {seconds} s", NextAction.WaitForInput)


def _stuck(ctx: Context) -> TaskResult:
    _mark(ctx, "started_dir")
    _NEVER_SET.wait(STUCK_BOUND)
    _count(ctx)
    return TaskResult("unstuck", NextAction.WaitForInput)


GRAPHS = [
    GraphBuilder("sleepy").add_task(FunctionTask("sleepy", _sleepy, blocking=True)).build(),
    GraphBuilder("stuck").add_task(FunctionTask("stuck", _stuck, blocking=True)).build(),
]
