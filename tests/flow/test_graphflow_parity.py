"""Every row of GRAPHFLOW.md's NextAction table, and the conventions around it."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from flow import (
    Context,
    FunctionTask,
    Graph,
    GraphBuilder,
    NextAction,
    Session,
    SessionCompleted,
    SessionStatus,
    TaskFailed,
    TaskNotFound,
    TaskResult,
    new_session,
    step,
)

Log = list[str]


def recorder(
    log: Log, task_id: str, result: Callable[[Context], TaskResult] | TaskResult
) -> FunctionTask:
    """A task that logs its id when it runs and returns ``result``."""

    def run(ctx: Context) -> TaskResult:
        log.append(task_id)
        return result(ctx) if callable(result) else result

    return FunctionTask(task_id, run, blocking=False)


def chain(log: Log, *results: tuple[str, Callable[[Context], TaskResult] | TaskResult]) -> Graph:
    """Tasks a -> b -> c ... with plain edges, each returning its result."""
    builder = GraphBuilder("g")
    for task_id, result in results:
        builder.add_task(recorder(log, task_id, result))
    ids = [task_id for task_id, _ in results]
    for a, b in itertools.pairwise(ids):
        builder.add_edge(a, b)
    return builder.build()


def fresh(graph: Graph) -> Session:
    return new_session(graph, owner="alice", now=1000.0)


def test_continue_moves_along_the_edge_and_does_not_run_the_next_task() -> None:
    log: Log = []
    graph = chain(log, ("a", TaskResult("A", NextAction.Continue)), ("b", TaskResult("B")))
    session, result = step(graph, fresh(graph))
    assert log == ["a"]
    assert (result.status, result.next_task, result.response) == (
        SessionStatus.PAUSED,
        "b",
        "A",
    )
    assert session.current_task == "b"
    session, result = step(graph, session)
    assert log == ["a", "b"]
    assert result.task == "b"


def test_continue_without_an_edge_stays_paused_with_no_outgoing_edge() -> None:
    log: Log = []
    graph = chain(log, ("a", TaskResult("A", NextAction.Continue)))
    session, result = step(graph, fresh(graph))
    assert (session.current_task, session.status) == ("a", SessionStatus.PAUSED)
    assert result.status_message == "no outgoing edge"
    assert session.status_message == "no outgoing edge"
    session, _ = step(graph, session)
    assert log == ["a", "a"]


def test_continue_without_an_edge_keeps_the_tasks_own_status_message() -> None:
    graph = chain([], ("a", TaskResult("A", NextAction.Continue, "mine")))
    _, result = step(graph, fresh(graph))
    assert result.status_message == "mine"


def test_continue_and_execute_runs_the_chain_in_one_call_keeping_every_response() -> None:
    log: Log = []
    graph = chain(
        log,
        ("a", TaskResult("A", NextAction.ContinueAndExecute)),
        ("b", TaskResult(None, NextAction.ContinueAndExecute)),
        ("c", TaskResult("C", NextAction.WaitForInput)),
    )
    session, result = step(graph, fresh(graph))
    assert log == ["a", "b", "c"]
    assert result.responses == ("A", "C")
    assert (result.task, result.response, result.next_task) == ("c", "C", "c")
    assert result.status is SessionStatus.WAITING_FOR_INPUT
    assert session.back_stack == ["a", "b"]
    assert session.revision == 1
    assert session.metadata.request_count == 1


def test_continue_and_execute_beyond_max_chain_fails_clearly_and_changes_nothing() -> None:
    log: Log = []
    loop = (
        GraphBuilder("g")
        .add_task(recorder(log, "ping", TaskResult("p", NextAction.ContinueAndExecute)))
        .add_task(recorder(log, "pong", TaskResult("q", NextAction.ContinueAndExecute)))
        .add_edge("ping", "pong")
        .add_edge("pong", "ping")
        .build()
    )
    session = fresh(loop)
    before = session.copy()
    with pytest.raises(TaskFailed) as info:
        step(loop, session, max_chain=5)
    assert isinstance(info.value.cause, RuntimeError)
    assert "max_chain=5" in str(info.value.cause)
    assert len(log) == 5
    assert session == before


def test_wait_for_input_stays_and_the_next_step_reruns_the_task() -> None:
    log: Log = []
    graph = chain(
        log,
        ("ask", lambda ctx: TaskResult(f"got {ctx.input}", NextAction.WaitForInput)),
        ("next", TaskResult()),
    )
    session, result = step(graph, fresh(graph), "one")
    assert (result.status, result.next_task) == (SessionStatus.WAITING_FOR_INPUT, "ask")
    session, result = step(graph, session, "two")
    assert log == ["ask", "ask"]
    assert result.response == "got two"
    assert session.back_stack == []


def test_end_completes_the_session_and_a_later_step_is_a_clear_error() -> None:
    graph = chain([], ("a", TaskResult("bye", NextAction.End, "finished")))
    session, result = step(graph, fresh(graph))
    assert result.status is SessionStatus.COMPLETED
    assert session.status is SessionStatus.COMPLETED
    assert session.status_message == "finished"
    before = session.copy()
    with pytest.raises(SessionCompleted, match=session.session_id):
        step(graph, session, "again")
    assert session == before


def test_goto_jumps_without_running_the_target() -> None:
    log: Log = []
    graph = (
        GraphBuilder("g")
        .add_task(recorder(log, "a", TaskResult("A", NextAction.GoTo("c"))))
        .add_task(recorder(log, "b", TaskResult("B")))
        .add_task(recorder(log, "c", TaskResult("C", NextAction.End)))
        .add_edge("a", "b")
        .add_edge("b", "c")
        .build()
    )
    session, result = step(graph, fresh(graph))
    assert log == ["a"]
    assert (result.status, result.next_task) == (SessionStatus.PAUSED, "c")
    assert session.back_stack == ["a"]
    session, result = step(graph, session)
    assert log == ["a", "c"]
    assert result.status is SessionStatus.COMPLETED


def test_goto_an_unknown_task_fails_with_task_not_found_and_changes_nothing() -> None:
    graph = chain([], ("a", TaskResult("A", NextAction.GoTo("nowhere"))))
    session = fresh(graph)
    before = session.copy()
    with pytest.raises(TaskFailed) as info:
        step(graph, session, "x")
    assert isinstance(info.value.cause, TaskNotFound)
    assert info.value.cause.task_id == "nowhere"
    assert info.value.task_id == "a"
    assert session == before
    assert session.context.chat_history.messages == []


def test_goback_returns_across_several_hops_then_waits_when_the_stack_is_empty() -> None:
    log: Log = []

    def go(ctx: Context) -> TaskResult:
        return TaskResult(None, NextAction.GoBack if ctx.input == "back" else NextAction.Continue)

    graph = (
        GraphBuilder("g")
        .add_task(recorder(log, "a", go))
        .add_task(recorder(log, "b", go))
        .add_task(recorder(log, "c", go))
        .add_task(recorder(log, "d", go))
        .add_edge("a", "b")
        .add_edge("b", "c")
        .add_edge("c", "d")
        .build()
    )
    session = fresh(graph)
    for _ in range(3):
        session, _ = step(graph, session, "next")
    assert (session.current_task, session.back_stack) == ("d", ["a", "b", "c"])
    visited = []
    for _ in range(3):
        session, result = step(graph, session, "back")
        assert result.status is SessionStatus.PAUSED
        visited.append(session.current_task)
    assert visited == ["c", "b", "a"]
    assert session.back_stack == []
    log.clear()
    session, result = step(graph, session, "back")
    assert (session.current_task, result.status) == ("a", SessionStatus.WAITING_FOR_INPUT)
    session, _ = step(graph, session, "next")
    assert (log, session.current_task) == (["a", "a"], "b")


def test_goback_after_a_goto_returns_to_the_task_that_jumped() -> None:
    graph = (
        GraphBuilder("g")
        .add_task(FunctionTask("a", lambda ctx: TaskResult(None, NextAction.GoTo("c"))))
        .add_task(FunctionTask("b", lambda ctx: TaskResult()))
        .add_task(FunctionTask("c", lambda ctx: TaskResult(None, NextAction.GoBack)))
        .add_edge("a", "b")
        .add_edge("b", "c")
        .build()
    )
    session, _ = step(graph, fresh(graph))
    session, _ = step(graph, session)
    assert session.current_task == "a"


def test_status_message_is_the_last_tasks_and_none_overwrites() -> None:
    def talk(ctx: Context) -> TaskResult:
        message = None if ctx.input == "quiet" else "busy"
        return TaskResult("ok", NextAction.WaitForInput, message)

    graph = chain([], ("a", talk))
    session, result = step(graph, fresh(graph), "loud")
    assert result.status_message == "busy"
    session, result = step(graph, session, "quiet")
    assert result.status_message is None
    assert session.status_message is None


def test_conditional_edges_see_the_context_as_the_task_left_it() -> None:
    def decide(ctx: Context) -> TaskResult:
        ctx.set("route", "left" if ctx.input == "L" else "right")
        return TaskResult(None, NextAction.Continue)

    graph = (
        GraphBuilder("g")
        .add_task(FunctionTask("decide", decide))
        .add_task(FunctionTask("left", lambda ctx: TaskResult()))
        .add_task(FunctionTask("right", lambda ctx: TaskResult()))
        .add_conditional_edge("decide", lambda ctx: ctx.get("route") == "left", "left", "right")
        .build()
    )
    left, _ = step(graph, fresh(graph), "L")
    right, _ = step(graph, fresh(graph), "R")
    assert (left.current_task, right.current_task) == ("left", "right")


def test_a_raising_predicate_fails_the_step_naming_the_task() -> None:
    def boom(ctx: Context) -> bool:
        raise KeyError("route")

    graph = (
        GraphBuilder("g")
        .add_task(FunctionTask("decide", lambda ctx: TaskResult()))
        .add_task(FunctionTask("x", lambda ctx: TaskResult()))
        .add_conditional_edge("decide", boom, "x", "x")
        .build()
    )
    session = fresh(graph)
    before = session.copy()
    with pytest.raises(TaskFailed, match="decide") as info:
        step(graph, session)
    assert isinstance(info.value.cause, KeyError)
    assert session == before


def test_input_is_stored_under_user_input_like_graph_flow() -> None:
    graph = chain([], ("a", TaskResult(None, NextAction.WaitForInput)))
    session, _ = step(graph, fresh(graph), "hello")
    assert session.context.get("user_input") == "hello"
    session, _ = step(graph, session)
    assert session.context.get("user_input") == "hello"
