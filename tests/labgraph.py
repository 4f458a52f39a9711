"""The ``lab`` graph the session-log tests step: each input says what the step does.

``tests/`` is on ``sys.path``; test modules import it as ``from labgraph import lab_graph``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flow import Context, Graph, GraphBuilder, NextAction, TaskResult
from flow._task import FunctionTask


def lab_work(extra: dict[str, Any]) -> Callable[[Context], TaskResult]:
    """A task that does what its input says: ``set k v`` (stores ``{"v": v, "n": len(v),
    **extra}``), ``rm k``, ``clear``, ``say x``, ``hclear``, ``go`` (to the other task),
    ``back`` (GoBack), joined by ``;``."""

    def work(ctx: Context) -> TaskResult:
        action = NextAction.WaitForInput
        for command in str(ctx.input or "").split(";"):
            verb, _, rest = command.strip().partition(" ")
            if verb == "set":
                key, _, value = rest.partition(" ")
                ctx.set(key, {"v": value, "n": len(value), **extra})
            elif verb == "rm":
                ctx.remove(rest)
            elif verb == "clear":
                ctx.clear()
            elif verb == "say":
                ctx.chat_history.add_assistant(rest)
            elif verb == "hclear":
                ctx.chat_history.clear()
            elif verb == "go":
                action = NextAction.GoTo("b" if ctx.get("at") != "b" else "a")
                ctx.set("at", "b" if ctx.get("at") != "b" else "a")
            elif verb == "back":
                action = NextAction.GoBack
        return TaskResult(f"did {ctx.input}", action)

    return work


def lab_graph(**extra: Any) -> Graph:
    """Tasks ``a`` and ``b`` (an edge from ``a`` to ``b``), both ``lab_work(extra)``."""
    work = lab_work(extra)
    return (
        GraphBuilder("lab")
        .add_task(FunctionTask("a", work, blocking=False))
        .add_task(FunctionTask("b", work, blocking=False))
        .add_edge("a", "b")
        .build()
    )
