"""step/astep/new_session: input, metadata, run mode, async tasks and rollback."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from flow import (
    Context,
    FunctionTask,
    Graph,
    GraphBuilder,
    InvalidInput,
    NextAction,
    Session,
    SessionStatus,
    TaskFailed,
    TaskNotFound,
    TaskResult,
    astep,
    new_session,
    step,
)


def one_task_graph(
    fn: Callable[[Context], Any], *, blocking: bool = True, graph_id: str = "g"
) -> Graph:
    return GraphBuilder(graph_id).add_task(FunctionTask("t", fn, blocking=blocking)).build()


def fresh(graph: Graph) -> Session:
    return new_session(graph, owner="alice", now=1000.0, expires_at=5000.0)


def wait(ctx: Context) -> TaskResult:
    return TaskResult("ok", NextAction.WaitForInput)


def assert_untouched(session: Session, before: Session) -> None:
    assert session == before
    assert session.context == before.context
    assert session.context.to_dict() == before.context.to_dict()
    assert session.context.chat_history.messages == before.context.chat_history.messages
    assert session.revision == before.revision
    assert session.back_stack == before.back_stack
    assert session.metadata == before.metadata


def test_new_session_starts_paused_at_the_start_task_at_revision_zero() -> None:
    graph = one_task_graph(wait)
    session = new_session(
        graph,
        owner="alice",
        context={"lang": "en"},
        session_id="s-1",
        client_addr="127.0.0.1",
        now=42.0,
        expires_at=99.0,
        max_messages=5,
    )
    assert (session.session_id, session.graph_id, session.graph_version) == (
        "s-1",
        "g",
        graph.version,
    )
    assert (session.current_task, session.status, session.revision) == (
        "t",
        SessionStatus.PAUSED,
        0,
    )
    assert session.context.to_dict() == {"lang": "en"}
    assert session.context.chat_history.max_messages == 5
    meta = session.metadata
    assert (meta.owner, meta.created_at, meta.last_accessed, meta.request_count) == (
        "alice",
        42.0,
        42.0,
        0,
    )
    assert (meta.client_addr, meta.expires_at) == ("127.0.0.1", 99.0)


def test_new_session_gives_a_uuid4_id_and_rejects_bad_context() -> None:
    graph = one_task_graph(wait)
    first, second = fresh(graph), fresh(graph)
    assert first.session_id != second.session_id
    assert len(first.session_id) == 36
    with pytest.raises(InvalidInput, match="'bad'"):
        new_session(graph, owner="alice", context={"bad": object()})
    with pytest.raises(InvalidInput, match="owner"):
        new_session(graph, owner="")


def test_step_bumps_revision_request_count_and_last_accessed_not_expires_at() -> None:
    graph = one_task_graph(wait)
    session = fresh(graph)
    session, result = step(graph, session, now=2000.0)
    session, result = step(graph, session, now=3000.0)
    assert session.revision == result.revision == 2
    assert session.metadata.request_count == 2
    assert session.metadata.last_accessed == 3000.0
    assert session.metadata.created_at == 1000.0
    assert session.metadata.expires_at == 5000.0


def test_a_step_given_a_ttl_expires_that_long_after_its_start() -> None:
    graph = one_task_graph(wait)
    session, _ = step(graph, fresh(graph), now=2000.0, ttl=100.0)
    assert (session.metadata.last_accessed, session.metadata.expires_at) == (2000.0, 2100.0)


def test_input_is_visible_as_ctx_input_and_user_input_and_in_chat_history_once() -> None:
    seen: list[tuple[Any, Any, int]] = []

    def look(ctx: Context) -> TaskResult:
        seen.append((ctx.input, ctx.get("user_input"), len(ctx.chat_history)))
        return TaskResult(None, NextAction.ContinueAndExecute)

    graph = (
        GraphBuilder("g")
        .add_task(FunctionTask("a", look))
        .add_task(FunctionTask("b", look))
        .add_task(FunctionTask("c", wait))
        .add_edge("a", "b")
        .add_edge("b", "c")
        .build()
    )
    session, _ = step(graph, fresh(graph), "hello")
    assert seen == [("hello", "hello", 1), ("hello", "hello", 1)]
    [message] = session.context.chat_history.messages
    assert (message.role, message.content) == ("user", "hello")
    assert session.context.input is None


def test_a_non_str_input_is_stored_but_not_added_to_the_chat() -> None:
    graph = one_task_graph(wait)
    session, _ = step(graph, fresh(graph), {"n": 3})
    assert session.context.get("user_input") == {"n": 3}
    assert len(session.context.chat_history) == 0


def test_no_input_leaves_user_input_unset() -> None:
    graph = one_task_graph(wait)
    session, _ = step(graph, fresh(graph))
    assert not session.context.contains("user_input")


def test_an_input_that_cannot_be_stored_is_rejected_before_any_task_runs() -> None:
    ran = threading.Event()

    def mark(ctx: Context) -> TaskResult:
        ran.set()
        return TaskResult()

    graph = one_task_graph(mark)
    with pytest.raises(InvalidInput, match="user_input"):
        step(graph, fresh(graph), {1, 2})
    assert not ran.is_set()


def test_the_returned_session_is_independent_of_the_given_one() -> None:
    def write(ctx: Context) -> TaskResult:
        ctx.set("items", [*ctx.get("items", []), "x"])
        return TaskResult(None, NextAction.WaitForInput)

    graph = one_task_graph(write)
    original = fresh(graph)
    before = original.copy()
    updated, _ = step(graph, original, "in")
    assert updated.context.get("items") == ["x"]
    assert_untouched(original, before)


def test_a_raising_sync_task_leaves_the_session_exactly_as_it_was() -> None:
    def half_then_raise(ctx: Context) -> TaskResult:
        ctx.set("written", True)
        ctx.chat_history.add_assistant("partial")
        raise ValueError("boom")

    graph = (
        GraphBuilder("g")
        .add_task(FunctionTask("first", lambda ctx: TaskResult(None, NextAction.Continue)))
        .add_task(FunctionTask("t", half_then_raise))
        .add_edge("first", "t")
        .build()
    )
    session, _ = step(graph, fresh(graph), "go")
    before = session.copy()
    with pytest.raises(TaskFailed) as info:
        step(graph, session, "again")
    assert info.value.task_id == "t"
    assert isinstance(info.value.cause, ValueError)
    assert info.value.__cause__ is info.value.cause
    assert info.value.session_id == session.session_id
    assert_untouched(session, before)


def test_a_raising_async_task_leaves_the_session_exactly_as_it_was() -> None:
    async def half_then_raise(ctx: Context) -> TaskResult:
        ctx.set("written", True)
        await asyncio.sleep(0)
        raise RuntimeError("async boom")

    graph = one_task_graph(half_then_raise)
    session = fresh(graph)
    before = session.copy()
    with pytest.raises(TaskFailed, match="async boom"):
        step(graph, session, "x")
    assert_untouched(session, before)
    with pytest.raises(TaskFailed, match="async boom"):
        asyncio.run(astep(graph, session, "x"))
    assert_untouched(session, before)


def test_a_chain_that_fails_midway_leaves_nothing_of_the_earlier_tasks() -> None:
    def first(ctx: Context) -> TaskResult:
        ctx.set("first", 1)
        return TaskResult("one", NextAction.ContinueAndExecute)

    def second(ctx: Context) -> TaskResult:
        raise OSError("disk")

    graph = (
        GraphBuilder("g")
        .add_task(FunctionTask("a", first))
        .add_task(FunctionTask("b", second))
        .add_edge("a", "b")
        .build()
    )
    session = fresh(graph)
    before = session.copy()
    with pytest.raises(TaskFailed, match="'b'"):
        step(graph, session)
    assert_untouched(session, before)


def test_step_runs_an_async_task_on_a_private_loop_by_default() -> None:
    async def slow(ctx: Context) -> TaskResult:
        await asyncio.sleep(0)
        return TaskResult(f"async {ctx.input}", NextAction.WaitForInput)

    graph = one_task_graph(slow)
    _, result = step(graph, fresh(graph), "hi")
    assert result.response == "async hi"


def test_step_hands_async_tasks_to_run_async_when_given() -> None:
    async def slow(ctx: Context) -> TaskResult:
        return TaskResult("from loop", NextAction.WaitForInput)

    used: list[str] = []

    def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
        used.append(type(coro).__name__)
        return asyncio.run(coro)

    graph = one_task_graph(slow)
    _, result = step(graph, fresh(graph), run_async=run_async)
    assert used == ["coroutine"]
    assert result.response == "from loop"


def test_step_refuses_an_async_task_inside_a_running_loop_without_run_async() -> None:
    async def slow(ctx: Context) -> TaskResult:
        return TaskResult()

    graph = one_task_graph(slow)
    session = fresh(graph)

    async def call_step() -> None:
        step(graph, session)

    with pytest.raises(TaskFailed) as info:
        asyncio.run(call_step())
    assert "use astep()" in str(info.value.cause)


def test_astep_awaits_async_tasks_on_the_running_loop() -> None:
    async def where(ctx: Context) -> TaskResult:
        return TaskResult(threading.current_thread().name, NextAction.WaitForInput)

    graph = one_task_graph(where)

    async def main() -> str | None:
        _, result = await astep(graph, fresh(graph), "x")
        assert result.response == threading.current_thread().name
        return result.response

    assert asyncio.run(main()) == threading.current_thread().name


def test_astep_sends_blocking_sync_tasks_through_run_blocking() -> None:
    calls: list[str] = []

    async def run_blocking(fn: Callable[..., Any], *args: Any) -> Any:
        calls.append("blocking")
        return await asyncio.to_thread(fn, *args)

    def where(ctx: Context) -> TaskResult:
        return TaskResult(threading.current_thread().name, NextAction.WaitForInput)

    blocking = one_task_graph(where, blocking=True)
    quick = one_task_graph(where, blocking=False)

    async def main() -> tuple[str | None, str | None, str]:
        _, slow = await astep(blocking, fresh(blocking), run_blocking=run_blocking)
        _, inline = await astep(quick, fresh(quick), run_blocking=run_blocking)
        return slow.response, inline.response, threading.current_thread().name

    slow_thread, inline_thread, loop_thread = asyncio.run(main())
    assert calls == ["blocking"]
    assert slow_thread != loop_thread
    assert inline_thread == loop_thread


def test_astep_uses_to_thread_for_blocking_tasks_by_default() -> None:
    def where(ctx: Context) -> TaskResult:
        return TaskResult(threading.current_thread().name, NextAction.WaitForInput)

    graph = one_task_graph(where, blocking=True)

    async def main() -> bool:
        _, result = await astep(graph, fresh(graph))
        return result.response != threading.current_thread().name

    assert asyncio.run(main())


def test_run_mode_keeps_going_until_waiting_for_input() -> None:
    graph = (
        GraphBuilder("g")
        .add_task(FunctionTask("a", lambda ctx: TaskResult("A")))
        .add_task(FunctionTask("b", lambda ctx: TaskResult(None, NextAction.GoTo("d"))))
        .add_task(FunctionTask("c", lambda ctx: TaskResult("C")))
        .add_task(FunctionTask("d", lambda ctx: TaskResult("D", NextAction.WaitForInput)))
        .add_edge("a", "b")
        .add_edge("b", "c")
        .add_edge("c", "d")
        .build()
    )
    session, result = step(graph, fresh(graph), mode="run")
    assert result.responses == ("A", "D")
    assert (result.status, result.next_task) == (SessionStatus.WAITING_FOR_INPUT, "d")
    assert session.revision == 1
    step_session, step_result = step(graph, fresh(graph), mode="step")
    assert (step_result.status, step_session.current_task) == (SessionStatus.PAUSED, "b")


def test_run_mode_stops_at_completion() -> None:
    graph = (
        GraphBuilder("g")
        .add_task(FunctionTask("a", lambda ctx: TaskResult("A")))
        .add_task(FunctionTask("b", lambda ctx: TaskResult("B", NextAction.End)))
        .add_edge("a", "b")
        .build()
    )
    _, result = step(graph, fresh(graph), mode="run")
    assert (result.status, result.responses) == (SessionStatus.COMPLETED, ("A", "B"))


def test_run_mode_stops_paused_where_there_is_no_edge() -> None:
    graph = one_task_graph(lambda ctx: TaskResult("once"))
    _, result = step(graph, fresh(graph), mode="run")
    assert (result.status, result.responses) == (SessionStatus.PAUSED, ("once",))
    assert result.status_message == "no outgoing edge"


def test_run_mode_is_bounded_by_max_chain() -> None:
    graph = (
        GraphBuilder("g")
        .add_task(FunctionTask("a", lambda ctx: TaskResult()))
        .add_task(FunctionTask("b", lambda ctx: TaskResult()))
        .add_edge("a", "b")
        .add_edge("b", "a")
        .build()
    )
    session = fresh(graph)
    with pytest.raises(TaskFailed, match="max_chain=10"):
        step(graph, session, mode="run", max_chain=10)
    with pytest.raises(TaskFailed, match="max_chain=3"):
        asyncio.run(astep(graph, session, mode="run", max_chain=3))


def test_astep_follows_the_same_semantics_as_step() -> None:
    graph = (
        GraphBuilder("g")
        .add_task(FunctionTask("a", lambda ctx: TaskResult("A", NextAction.ContinueAndExecute)))
        .add_task(FunctionTask("b", wait))
        .add_edge("a", "b")
        .build()
    )
    session = fresh(graph)
    sync_session, sync_result = step(graph, session, "in", now=7.0)
    async_session, async_result = asyncio.run(astep(graph, session, "in", now=7.0))
    assert sync_result == async_result
    assert sync_session.current_task == async_session.current_task == "b"
    assert sync_session.back_stack == async_session.back_stack == ["a"]


def test_step_rejects_a_session_of_another_graph_and_bad_arguments() -> None:
    graph = one_task_graph(wait)
    other = one_task_graph(wait, graph_id="other")
    session = fresh(graph)
    with pytest.raises(InvalidInput, match="belongs to graph 'g'"):
        step(other, session)
    with pytest.raises(InvalidInput, match="mode"):
        step(graph, session, mode="walk")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="max_chain"):
        step(graph, session, max_chain=0)


def test_a_session_at_a_task_the_graph_lost_raises_task_not_found() -> None:
    graph = one_task_graph(wait)
    session = fresh(graph)
    session.current_task = "removed"
    with pytest.raises(TaskNotFound, match="removed"):
        step(graph, session)


def test_a_step_records_the_graph_version_it_ran_under() -> None:
    graph = one_task_graph(wait)
    session = fresh(graph)
    session.graph_version = "old"
    updated, _ = step(graph, session)
    assert updated.graph_version == graph.version
