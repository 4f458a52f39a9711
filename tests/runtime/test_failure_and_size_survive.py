"""What ``inspect`` and ``ls`` show of a session outlives its actor.

A failed step writes no revision; its note (``last_failure``) is saved with the
session's next whole snapshot, at the latest when it passivates, so it is there
after reactivation and after the runtime is reopened. The size ``ls`` shows is
known after a step, without an ``inspect``, and agrees with ``inspect``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import structlog

from flow import Context, FunctionTask, GraphBuilder, NextAction, TaskFailed, TaskResult
from flow._codec import encode
from runtime import Runtime
from runtime.testing import wait_passivated


def _fragile(ctx: Context) -> TaskResult:
    if ctx.input == "fail":
        raise KeyError("no such order")
    ctx.set("said", f"{ctx.get('said') or ''}{ctx.input}")
    return TaskResult("ok", NextAction.WaitForInput)


FRAGILE = GraphBuilder("fragile").add_task(FunctionTask("check", _fragile)).build()


def _fail(rt: Runtime, sid: str) -> None:
    # captured: rendering the logged traceback on the console takes seconds
    with structlog.testing.capture_logs(), pytest.raises(TaskFailed):
        rt.step(sid, "fail", owner="alice")


def _passivate(rt: Runtime, sid: str) -> None:
    assert rt.passivate(sid)
    wait_passivated(rt, sid)


@pytest.mark.parametrize("steps_after", [0, 2])
def test_the_last_failure_is_kept_across_passivation_and_reopening(
    open_runtime: Callable[..., Runtime], steps_after: int
) -> None:
    rt = open_runtime([FRAGILE])
    sid = rt.create_session("fragile", owner="alice")
    rt.step(sid, "a", owner="alice")
    _fail(rt, sid)
    for _ in range(steps_after):
        rt.step(sid, "b", owner="alice")
    revisions = [r.revision for r in rt.revisions(sid, owner="alice")]
    expected = rt.inspect(sid)["last_failure"]
    assert expected is not None
    assert (expected["type"], expected["message"], expected["task"]) == (
        "KeyError",
        "'no such order'",
        "check",
    )
    _passivate(rt, sid)
    stored = rt.inspect(sid)
    assert stored["live"] is False
    assert stored["last_failure"] == expected
    # the failed step is still no revision: the note was saved over the newest one
    assert [r.revision for r in rt.revisions(sid, owner="alice")] == revisions
    assert stored["revision"] == 1 + steps_after
    rt.step(sid, "c", owner="alice")  # reactivated
    assert rt.inspect(sid)["last_failure"] == expected
    assert rt.get_session(sid, owner="alice").context.get("said") == "a" + "b" * steps_after + "c"
    rt.close()
    reopened = open_runtime([FRAGILE])
    assert reopened.inspect(sid)["last_failure"] == expected


def test_a_session_that_never_failed_shows_no_failure_after_passivation(
    open_runtime: Callable[..., Runtime],
) -> None:
    rt = open_runtime([FRAGILE])
    sid = rt.create_session("fragile", owner="alice")
    rt.step(sid, "a", owner="alice")
    _passivate(rt, sid)
    assert rt.inspect(sid)["last_failure"] is None


def test_ls_knows_the_snapshot_size_after_a_step_and_agrees_with_inspect(
    open_runtime: Callable[..., Runtime],
) -> None:
    rt = open_runtime([FRAGILE])
    sid = rt.create_session("fragile", owner="alice")
    for i in range(60):
        rt.step(sid, f"step {i} " + "x" * 40, owner="alice")
        [live] = rt.live_sessions()
        stored = rt.store.load(sid)
        assert stored is not None
        exact = len(encode(stored))
        # never measured by inspect: the size is known, an upper bound within 1.5x
        assert exact <= live.snapshot_bytes <= 1.5 * exact
    info = rt.inspect(sid)
    [live] = rt.live_sessions()
    assert live.snapshot_bytes == info["snapshot_bytes"] == exact
