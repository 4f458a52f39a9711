"""Graphs the daemon tests serve beside the demo ones (``--graphs graphs_for_tests:GRAPHS``).

``gated``: one blocking task that marks itself started (creates the file named by
context key ``started_dir``/<session id>) and then waits until the file named by
context key ``gate`` exists, bounded by ``GATE_WAIT``; it answers like echo.
It is how a test holds steps in flight across the process boundary.

``boom``: one task that raises ``ValueError`` (500 task-failed).

``once``: one task that ends the session (a later step is 409 session-completed).

``teller``: one blocking task that streams the token ``first``, waits (bounded)
for the file named by context key ``gate``, streams `` second`` and answers
whether the gate opened while it waited (a streaming test opens it on seeing
the first token, so the answer proves the token arrived before the task ended).
``reminder``: one task that waits; an input ``{"name": N, "after": seconds}``
schedules a durable timer ``N``; a timer step appends its name to context key
``fired``.

``whereami``: one async task that answers the name of the thread running it.
"""

from __future__ import annotations

import os
import threading
import time

from flow import Context, FunctionTask, GraphBuilder, NextAction, TaskResult

GATE_WAIT = 20.0


def _gated(ctx: Context) -> TaskResult:
    started_dir = ctx.get("started_dir")
    if started_dir:
        with open(os.path.join(started_dir, str(ctx.session_id)), "a"):
            pass
    gate = ctx.get("gate")
    deadline = time.monotonic() + GATE_WAIT
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.005)  # across processes a file is the only signal the test can give
    ctx.set("count", int(ctx.get("count", 0)) + 1)
    return TaskResult(f"gated: {ctx.input}", NextAction.WaitForInput)


def _boom(ctx: Context) -> TaskResult:
    raise ValueError("boom on purpose")


def _teller(ctx: Context) -> TaskResult:
    ctx.emit_token("first")
    gate = ctx.get("gate")
    deadline = time.monotonic() + GATE_WAIT
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.005)  # across processes a file is the only signal the test can give
    ctx.emit_token(" second")
    ctx.set("count", int(ctx.get("count", 0)) + 1)
    opened = bool(gate) and os.path.exists(gate)
    return TaskResult(f"told: gate {'opened' if opened else 'shut'}", NextAction.WaitForInput)


def _once(ctx: Context) -> TaskResult:
    return TaskResult("the end", NextAction.End, "finished")


def _reminder(ctx: Context) -> TaskResult:
    if ctx.timer is not None:
        ctx.set("fired", [*ctx.get("fired", []), ctx.timer])
    elif isinstance(ctx.input, dict):
        ctx.schedule(ctx.input["after"], name=ctx.input["name"])
    return TaskResult("noted", NextAction.WaitForInput)


async def _whereami(ctx: Context) -> TaskResult:
    return TaskResult(threading.current_thread().name, NextAction.WaitForInput)


GRAPHS = [
    GraphBuilder("gated").add_task(FunctionTask("gated", _gated, blocking=True)).build(),
    GraphBuilder("boom").add_task(FunctionTask("boom", _boom, blocking=False)).build(),
    GraphBuilder("once").add_task(FunctionTask("once", _once, blocking=False)).build(),
    GraphBuilder("teller").add_task(FunctionTask("teller", _teller, blocking=True)).build(),
    GraphBuilder("reminder").add_task(FunctionTask("reminder", _reminder, blocking=False)).build(),
    GraphBuilder("whereami").add_task(FunctionTask("whereami", _whereami)).build(),
]
