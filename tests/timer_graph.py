"""The graph the timer tests (and their child processes) run: ``timer_graph:GRAPH``.

One task, ``wait``, always waits for input. An input dict says what to set:
``{"wake": seconds}`` a ``wake_after``, ``{"schedule": {name: seconds}}`` named
timers (their payload is their name), ``{"cancel": name}`` cancels one,
``{"fail": n}`` makes the next ``n`` timer steps of the session raise (counted
in this process: a failed step leaves the session as it was). A timer step appends
``ctx.timer`` to the context list ``fired`` (so the session itself counts how
often each timer fired) and its payload to ``payloads``.
"""

from __future__ import annotations

from datetime import timedelta

from flow import Context, GraphBuilder, NextAction, TaskResult, task

FAILURES: dict[str, int] = {}


@task("wait", blocking=False)
def wait(ctx: Context) -> TaskResult:
    if ctx.timer is not None:
        sid = str(ctx.session_id)
        if FAILURES.get(sid, 0) > 0:
            FAILURES[sid] -= 1
            raise RuntimeError(f"timer {ctx.timer} failed on purpose")
        ctx.set("fired", [*ctx.get("fired", []), ctx.timer])
        ctx.set("payloads", [*ctx.get("payloads", []), ctx.input])
        return TaskResult(f"fired {ctx.timer}", NextAction.WaitForInput)
    order = ctx.input if isinstance(ctx.input, dict) else {}
    for name, seconds in order.get("schedule", {}).items():
        ctx.schedule(seconds, input=name, name=name)
    if "cancel" in order:
        ctx.cancel_schedule(order["cancel"])
    if "fail" in order:
        FAILURES[str(ctx.session_id)] = order["fail"]
    wake = order.get("wake")
    return TaskResult(
        "ok",
        NextAction.WaitForInput,
        wake_after=None if wake is None else timedelta(seconds=wake),
    )


GRAPH = GraphBuilder("timers").add_task(wait).build()
