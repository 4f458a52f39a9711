"""Three versions of a ``tickets`` graph and the migrations between them.

v1: intake -> triage -> close, the issue under context key ``issue``.
v2: intake -> assess -> close: ``triage`` was renamed ``assess`` and ``issue`` ``problem``.
v3: v2 whose ``close`` also reports the ``channel`` key the 2 -> 3 migration adds.

Importable by module path (``ticket_graphs:V1``) for daemons started by the tests.
"""

from __future__ import annotations

from flow import Context, FunctionTask, Graph, GraphBuilder, NextAction, TaskResult
from runtime import Migration, MigrationState


def _intake(key: str) -> FunctionTask:
    def run(ctx: Context) -> TaskResult:
        if ctx.input is None:
            return TaskResult("what is wrong?", NextAction.WaitForInput)
        ctx.set(key, str(ctx.input))
        return TaskResult(f"noted {key}", NextAction.Continue)

    return FunctionTask("intake", run, blocking=False)


def _rate(task_id: str) -> FunctionTask:
    def run(ctx: Context) -> TaskResult:
        if ctx.input is None:
            return TaskResult("how urgent?", NextAction.WaitForInput)
        ctx.set("priority", str(ctx.input))
        return TaskResult("noted priority", NextAction.Continue)

    return FunctionTask(task_id, run, blocking=False)


def _close(version: str, key: str) -> FunctionTask:
    def run(ctx: Context) -> TaskResult:
        channel = f" via {ctx.get('channel')}" if ctx.contains("channel") else ""
        return TaskResult(
            f"v{version} closed {ctx.get(key)} at {ctx.get('priority')}{channel}", NextAction.End
        )

    return FunctionTask("close", run, blocking=False)


def tickets(version: str) -> Graph:
    """The ``tickets`` graph at ``version`` ("1", "2" or "3")."""
    key = "issue" if version == "1" else "problem"
    middle = "triage" if version == "1" else "assess"
    return (
        GraphBuilder("tickets", version=version)
        .add_task(_intake(key))
        .add_task(_rate(middle))
        .add_task(_close(version, key))
        .add_edge("intake", middle)
        .add_edge(middle, "close")
        .build()
    )


def one_to_two(state: MigrationState) -> MigrationState:
    """Rename ``issue`` to ``problem`` and the task ``triage`` to ``assess``."""
    if "issue" in state.context:
        state.context["problem"] = state.context.pop("issue")
    rename = {"triage": "assess"}
    state.current_task = rename.get(state.current_task, state.current_task)
    state.back_stack = [rename.get(t, t) for t in state.back_stack]
    return state


def two_to_three(state: MigrationState) -> MigrationState:
    """Record the channel every old ticket came from."""
    state.context["channel"] = "web"
    return state


V1 = tickets("1")
V2 = tickets("2")
V3 = tickets("3")
MIGRATIONS = [
    Migration(graph="tickets", from_version="1", to_version="2", migrate=one_to_two),
    Migration(graph="tickets", from_version="2", to_version="3", migrate=two_to_three),
]
