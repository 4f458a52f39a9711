"""Graphs the client tests serve beside the demo ones (``--graphs client_graphs:GRAPHS``).

``boom``: one task that raises ``ValueError`` (TaskFailed, HTTP 500 task-failed).
``once``: one task that ends the session (a later step is SessionCompleted, 409).
"""

from __future__ import annotations

from flow import Context, FunctionTask, GraphBuilder, NextAction, TaskResult


def _boom(ctx: Context) -> TaskResult:
    raise ValueError("boom on purpose")


def _once(ctx: Context) -> TaskResult:
    return TaskResult("the end", NextAction.End, "finished")


GRAPHS = [
    GraphBuilder("boom").add_task(FunctionTask("boom", _boom, blocking=False)).build(),
    GraphBuilder("once").add_task(FunctionTask("once", _once, blocking=False)).build(),
]
