"""FanOutTask: concurrent children on copies of the context, recorded in child order."""

from __future__ import annotations

import asyncio
import threading

import pytest

from flow import (
    Context,
    FanOutTask,
    FunctionTask,
    Graph,
    GraphBuilder,
    NextAction,
    Session,
    SessionStatus,
    TaskFailed,
    TaskResult,
    astep,
    new_session,
    step,
)

TIMEOUT = 5.0


def fanout_graph(fan: FanOutTask) -> Graph:
    after = FunctionTask("after", lambda ctx: TaskResult("after", NextAction.WaitForInput))
    return GraphBuilder("g").add_task(fan).add_task(after).add_edge(fan.id, "after").build()


def fresh(graph: Graph) -> Session:
    return new_session(graph, owner="alice", context={"base": 1}, now=1.0)


def barrier_child(task_id: str, barrier: threading.Barrier) -> FunctionTask:
    def run(ctx: Context) -> TaskResult:
        barrier.wait(TIMEOUT)
        return TaskResult(f"{task_id} done", NextAction.WaitForInput, f"{task_id} ok")

    return FunctionTask(task_id, run)


def test_sync_children_really_run_at_the_same_time() -> None:
    barrier = threading.Barrier(3)
    fan = FanOutTask("fan", [barrier_child(name, barrier) for name in ("a", "b", "c")])
    graph = fanout_graph(fan)
    session, result = step(graph, fresh(graph))
    assert not barrier.broken
    assert (result.status, result.next_task) == (SessionStatus.PAUSED, "after")
    ctx = session.context
    assert ctx.get("fanout.a.response") == "a done"
    assert ctx.get("fanout.b.status") == "b ok"
    assert ctx.get("fanout.c.next_action") == "WaitForInput"


def test_async_and_sync_children_overlap_from_step() -> None:
    barrier = threading.Barrier(3)

    async def async_child(ctx: Context) -> TaskResult:
        await asyncio.to_thread(barrier.wait, TIMEOUT)
        return TaskResult("async")

    async def async_child_two(ctx: Context) -> TaskResult:
        await asyncio.to_thread(barrier.wait, TIMEOUT)
        return TaskResult("async two")

    fan = FanOutTask(
        "fan",
        [
            FunctionTask("x", async_child),
            barrier_child("s", barrier),
            FunctionTask("y", async_child_two),
        ],
    )
    graph = fanout_graph(fan)
    session, _ = step(graph, fresh(graph))
    assert session.context.get("fanout.x.response") == "async"
    assert session.context.get("fanout.y.response") == "async two"
    assert session.context.get("fanout.s.response") == "s done"


@pytest.mark.parametrize("use_astep", [False, True], ids=["step", "astep"])
def test_async_children_overlap_on_one_event_loop(use_astep: bool) -> None:
    first_may_finish = asyncio.Event()
    arrived: list[str] = []

    async def first(ctx: Context) -> TaskResult:
        arrived.append("first")
        await asyncio.wait_for(first_may_finish.wait(), TIMEOUT)
        return TaskResult("first")

    async def second(ctx: Context) -> TaskResult:
        arrived.append("second")
        first_may_finish.set()
        return TaskResult("second")

    fan = FanOutTask("fan", [FunctionTask("first", first), FunctionTask("second", second)])
    graph = fanout_graph(fan)
    if use_astep:
        session, _ = asyncio.run(astep(graph, fresh(graph)))
    else:
        session, _ = step(graph, fresh(graph))
    assert arrived == ["first", "second"]
    assert session.context.get("fanout.first.response") == "first"
    assert session.context.get("fanout.second.response") == "second"


def test_children_work_on_their_own_copies_and_only_records_come_back() -> None:
    barrier = threading.Barrier(2)
    seen: dict[str, object] = {}

    def writer(task_id: str, value: int) -> FunctionTask:
        def run(ctx: Context) -> TaskResult:
            ctx.set("shared", value)
            ctx.chat_history.add_assistant(f"{task_id} talking")
            barrier.wait(TIMEOUT)
            seen[task_id] = (ctx.get("shared"), len(ctx.chat_history), ctx.get("base"))
            return TaskResult(task_id)

        return FunctionTask(task_id, run)

    fan = FanOutTask("fan", [writer("a", 1), writer("b", 2)])
    graph = fanout_graph(fan)
    session, _ = step(graph, fresh(graph), "go")
    assert seen == {"a": (1, 2, 1), "b": (2, 2, 1)}
    assert not session.context.contains("shared")
    assert [m.content for m in session.context.chat_history] == ["go"]


def test_records_are_written_in_child_order_whatever_order_children_finish() -> None:
    b_done = threading.Event()

    def slow_a(ctx: Context) -> TaskResult:
        assert b_done.wait(TIMEOUT)
        return TaskResult("a")

    def quick_b(ctx: Context) -> TaskResult:
        b_done.set()
        return TaskResult("b")

    fan = FanOutTask("fan", [FunctionTask("a", slow_a), FunctionTask("b", quick_b)], "res")
    graph = fanout_graph(fan)
    session, _ = step(graph, fresh(graph))
    assert session.context.keys() == [
        "base",
        "res.a.response",
        "res.a.next_action",
        "res.b.response",
        "res.b.next_action",
    ]


def test_a_failing_child_fails_the_fanout_and_records_nothing() -> None:
    finished = threading.Event()

    def ok(ctx: Context) -> TaskResult:
        finished.set()
        return TaskResult("fine")

    def bad(ctx: Context) -> TaskResult:
        raise LookupError("no such order")

    fan = FanOutTask("fan", [FunctionTask("ok", ok), FunctionTask("bad", bad)])
    graph = fanout_graph(fan)
    session = fresh(graph)
    before = session.copy()
    with pytest.raises(TaskFailed) as info:
        step(graph, session)
    assert info.value.task_id == "fan"
    child_failure = info.value.cause
    assert isinstance(child_failure, TaskFailed)
    assert child_failure.task_id == "bad"
    assert isinstance(child_failure.cause, LookupError)
    assert finished.is_set()
    assert session == before
    assert session.context.to_dict() == {"base": 1}


def test_a_failing_async_child_fails_the_fanout_in_astep() -> None:
    async def bad(ctx: Context) -> TaskResult:
        raise ValueError("async child broke")

    fan = FanOutTask(
        "fan", [FunctionTask("ok", lambda ctx: TaskResult()), FunctionTask("bad", bad)]
    )
    graph = fanout_graph(fan)
    session = fresh(graph)
    before = session.copy()
    with pytest.raises(TaskFailed, match="async child broke"):
        asyncio.run(astep(graph, session))
    assert session == before


def test_astep_runs_blocking_sync_children_concurrently_on_threads() -> None:
    barrier = threading.Barrier(2)
    fan = FanOutTask("fan", [barrier_child("a", barrier), barrier_child("b", barrier)])
    graph = fanout_graph(fan)
    session, _ = asyncio.run(astep(graph, fresh(graph)))
    assert session.context.get("fanout.a.response") == "a done"
    assert session.context.get("fanout.b.response") == "b done"


def test_the_fanouts_own_next_action_is_continue_unless_given() -> None:
    child = FunctionTask("c", lambda ctx: TaskResult("c", NextAction.End))
    graph = fanout_graph(FanOutTask("fan", [child]))
    _, result = step(graph, fresh(graph))
    assert (result.status, result.next_task) == (SessionStatus.PAUSED, "after")
    waiting = fanout_graph(FanOutTask("fan", [child], next_action=NextAction.WaitForInput))
    _, result = step(waiting, fresh(waiting))
    assert (result.status, result.next_task) == (SessionStatus.WAITING_FOR_INPUT, "fan")


def test_fanouts_nest() -> None:
    inner = FanOutTask("inner", [FunctionTask("leaf", lambda ctx: TaskResult("leaf"))], "in")
    outer = FanOutTask("outer", [inner, FunctionTask("side", lambda ctx: TaskResult("side"))])
    graph = fanout_graph(outer)
    session, _ = step(graph, fresh(graph))
    assert session.context.get("fanout.side.response") == "side"
    assert session.context.get("fanout.inner.next_action") == "Continue"
    summary = "FanOutTask 'inner' completed 1 child task(s)"
    assert session.context.get("fanout.inner.response") == summary
    assert not session.context.contains("in.leaf.response")


def test_fanout_rejects_no_children_duplicates_and_an_empty_prefix() -> None:
    child = FunctionTask("c", lambda ctx: TaskResult())
    with pytest.raises(ValueError, match="at least one child"):
        FanOutTask("fan", [])
    with pytest.raises(ValueError, match="duplicate child ids"):
        FanOutTask("fan", [child, child])
    with pytest.raises(ValueError, match="prefix"):
        FanOutTask("fan", [child], prefix="")
    with pytest.raises(TypeError, match="must be Tasks"):
        FanOutTask("fan", [lambda ctx: TaskResult()])  # type: ignore[list-item]


def test_fanout_records_keys_as_graph_flow_writes_them() -> None:
    children = [
        FunctionTask("quiet", lambda ctx: TaskResult(None, NextAction.End)),
        FunctionTask("jump", lambda ctx: TaskResult("went", NextAction.GoTo("x"), "jumped")),
    ]
    fan = FanOutTask("fan", children)
    graph = fanout_graph(fan)
    session, result = step(graph, fresh(graph))
    ctx = session.context
    assert not ctx.contains("fanout.quiet.response")
    assert not ctx.contains("fanout.quiet.status")
    assert ctx.get("fanout.quiet.next_action") == "End"
    assert ctx.get("fanout.jump.response") == "went"
    assert ctx.get("fanout.jump.status") == "jumped"
    assert ctx.get("fanout.jump.next_action") == 'GoTo("x")'
    assert result.responses[0] == "FanOutTask 'fan' completed 2 child task(s)"
