"""What a graph author sees: failures they can debug, and graph-flow's session options."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import structlog

from flow import Context, FunctionTask, GraphBuilder, NextAction, TaskFailed, TaskResult
from runtime import Runtime
from runtime.testing import ManualClock, wait_passivated


def _boom(ctx: Context) -> TaskResult:
    if ctx.input == "fail":
        raise ValueError("the line the author is looking for")
    return TaskResult("fine", NextAction.WaitForInput)


BOOM = GraphBuilder("boom").add_task(FunctionTask("boom", _boom, blocking=False)).build()


def _keep_pair(ctx: Context) -> TaskResult:
    if ctx.input == "set":
        ctx.set("pair", (1, ("a", 2.5)))
    return TaskResult(repr(ctx.get("pair")), NextAction.WaitForInput)


PAIRS = GraphBuilder("pairs").add_task(FunctionTask("keep", _keep_pair)).build()


def _records_itself(ctx: Context) -> TaskResult:
    ctx.chat_history.add_user(str(ctx.input))  # as a graph-flow task does
    return TaskResult("noted", NextAction.WaitForInput)


def _quiet_graph(record_input: bool) -> GraphBuilder:
    task = FunctionTask("note", _records_itself)
    return GraphBuilder(f"quiet-{record_input}", record_input=record_input).add_task(task)


def test_a_failing_task_is_logged_at_error_with_its_traceback_and_request_id(
    open_runtime: Callable[..., Runtime],
) -> None:
    clock = ManualClock()
    rt = open_runtime([BOOM], clock=clock)
    sid = rt.create_session("boom", owner="alice")
    rt.step(sid, "hello", owner="alice")
    with (
        structlog.testing.capture_logs() as logs,
        structlog.contextvars.bound_contextvars(request_id="req-42"),
        pytest.raises(TaskFailed, match="ValueError: the line the author"),
    ):
        rt.step(sid, "fail", owner="alice")
    [event] = [e for e in logs if e["event"] == "step_failed"]
    assert event["log_level"] == "error"
    assert (event["session_id"], event["task"], event["request_id"]) == (sid, "boom", "req-42")
    assert isinstance(event["exc_info"], TaskFailed)
    assert isinstance(event["exc_info"].__cause__, ValueError)
    failure = rt.inspect(sid)["last_failure"]
    assert failure == {
        "type": "ValueError",
        "message": "the line the author is looking for",
        "task": "boom",
        "time": clock(),
    }


def test_a_refused_step_is_logged_at_info_without_a_traceback(
    open_runtime: Callable[..., Runtime],
) -> None:
    rt = open_runtime()
    sid = rt.create_session("support", owner="alice")
    for said in ("I want a refund", "done"):
        rt.step(sid, said, owner="alice", mode="run")
    with structlog.testing.capture_logs() as logs, pytest.raises(Exception, match="completed"):
        rt.step(sid, "again", owner="alice")
    [event] = [e for e in logs if e["event"] == "step_failed"]
    assert event["log_level"] == "info"
    assert "exc_info" not in event
    assert rt.inspect(sid)["last_failure"]["type"] == "SessionCompleted"


def test_create_session_sets_the_chat_history_limit(open_runtime: Callable[..., Runtime]) -> None:
    rt = open_runtime()
    sid = rt.create_session("echo", owner="alice", max_messages=3)
    for i in range(4):
        rt.step(sid, f"m{i}", owner="alice")
    history = rt.get_session(sid, owner="alice").chat_history
    assert [m["content"] for m in history] == ["echo: m2", "m3", "echo: m3"]


def test_create_session_can_store_the_session_id_in_the_context(
    open_runtime: Callable[..., Runtime],
) -> None:
    rt = open_runtime()
    sid = rt.create_session("echo", owner="alice", session_id_key="session_id")
    assert rt.get_session(sid, owner="alice").context["session_id"] == sid
    other = rt.create_session("echo", owner="alice")
    assert "session_id" not in rt.get_session(other, owner="alice").context


def test_a_tuple_reads_the_same_live_and_after_passivation(
    open_runtime: Callable[..., Runtime],
) -> None:
    rt = open_runtime([PAIRS])
    live = rt.create_session("pairs", owner="alice")
    rested = rt.create_session("pairs", owner="alice")
    rt.step(live, "set", owner="alice")
    rt.step(rested, "set", owner="alice")
    assert rt.passivate(rested)
    wait_passivated(rt, rested)
    read_live = rt.step(live, "read", owner="alice").response
    read_rested = rt.step(rested, "read", owner="alice").response
    assert read_live == read_rested == "[1, ['a', 2.5]]"


@pytest.mark.parametrize(("record_input", "times"), [(True, 2), (False, 1)])
def test_record_input_false_leaves_the_user_message_to_the_task(
    open_runtime: Callable[..., Runtime], record_input: bool, times: int
) -> None:
    graph = _quiet_graph(record_input).build()
    rt = open_runtime([graph])
    sid = rt.create_session(graph.id, owner="alice")
    rt.step(sid, "hi there", owner="alice")
    history = rt.get_session(sid, owner="alice").chat_history
    assert [m["content"] for m in history].count("hi there") == times
