"""NextAction, TaskResult, Task, FunctionTask and the task decorator."""

from __future__ import annotations

import pytest

from flow import (
    Context,
    FunctionTask,
    GraphBuilder,
    NextAction,
    Task,
    TaskFailed,
    TaskResult,
    is_async_task,
    new_session,
    step,
    task,
)


class Greet(Task):
    def run(self, ctx: Context) -> TaskResult:
        return TaskResult("hi")


class AsyncGreet(Task):
    async def run(self, ctx: Context) -> TaskResult:
        return TaskResult("hi")


def test_next_action_has_all_six_kinds_spelled_like_graph_flow() -> None:
    kinds = {
        NextAction.Continue.kind,
        NextAction.ContinueAndExecute.kind,
        NextAction.WaitForInput.kind,
        NextAction.End.kind,
        NextAction.GoBack.kind,
        NextAction.GoTo("x").kind,
    }
    assert kinds == {
        "continue",
        "continue_and_execute",
        "wait_for_input",
        "end",
        "goback",
        "goto",
    }


def test_goto_carries_its_target_and_compares_by_value() -> None:
    jump = NextAction.GoTo("refund")
    assert jump.task_id == "refund"
    assert jump == NextAction.GoTo("refund")
    assert jump != NextAction.GoTo("faq")
    assert NextAction.Continue.task_id is None
    assert repr(jump) == "NextAction.GoTo('refund')"
    assert repr(NextAction.ContinueAndExecute) == "NextAction.ContinueAndExecute"


def test_goto_rejects_an_empty_target() -> None:
    with pytest.raises(ValueError, match="non-empty task id"):
        NextAction.GoTo("")


def test_next_action_is_immutable_and_validates_its_kind() -> None:
    with pytest.raises(AttributeError):
        NextAction.Continue.kind = "end"  # type: ignore[misc]
    with pytest.raises(ValueError, match="unknown next action kind"):
        NextAction("jump")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="goto"):
        NextAction("end", "x")


def test_task_result_defaults_and_graph_flow_shortcuts() -> None:
    result = TaskResult()
    assert (result.response, result.next_action, result.status_message) == (
        None,
        NextAction.Continue,
        None,
    )
    assert TaskResult.move_to_next() == TaskResult(None, NextAction.Continue)
    assert TaskResult.move_to_next_direct() == TaskResult(None, NextAction.ContinueAndExecute)


def test_task_default_id_is_the_qualified_class_name() -> None:
    assert Greet().id == f"{__name__}.Greet"
    assert Greet("hello").id == "hello"


def test_task_is_blocking_unless_it_says_otherwise() -> None:
    class Quick(Task):
        blocking = False

        def run(self, ctx: Context) -> TaskResult:
            return TaskResult()

    assert Greet().blocking is True
    assert Quick().blocking is False


def test_is_async_task_tells_coroutine_tasks_apart() -> None:
    async def afn(ctx: Context) -> TaskResult:
        return TaskResult()

    assert is_async_task(AsyncGreet()) is True
    assert is_async_task(Greet()) is False
    assert is_async_task(FunctionTask("a", afn)) is True
    assert is_async_task(FunctionTask("s", lambda ctx: TaskResult())) is False


def test_function_task_calls_its_function_with_the_context() -> None:
    seen: list[object] = []

    def fn(ctx: Context) -> TaskResult:
        seen.append(ctx.input)
        return TaskResult("done", NextAction.End)

    t = FunctionTask("f", fn, blocking=False)
    assert (t.id, t.blocking) == ("f", False)
    graph = GraphBuilder("g").add_task(t).build()
    _, result = step(graph, new_session(graph, owner="u"), "in")
    assert seen == ["in"]
    assert result.response == "done"


def test_task_decorator_builds_a_function_task() -> None:
    @task("shout", blocking=False)
    def shout(ctx: Context) -> TaskResult:
        return TaskResult(str(ctx.input).upper())

    @task()
    def unnamed(ctx: Context) -> TaskResult:
        return TaskResult()

    assert isinstance(shout, FunctionTask)
    assert (shout.id, shout.blocking) == ("shout", False)
    assert unnamed.id.endswith("test_task_decorator_builds_a_function_task.<locals>.unnamed")
    graph = GraphBuilder("g").add_task(shout).build()
    _, result = step(graph, new_session(graph, owner="u"), "hey")
    assert result.response == "HEY"


def test_a_task_returning_something_else_than_task_result_fails_naming_it() -> None:
    t = FunctionTask("bad", lambda ctx: "oops")  # type: ignore[arg-type,return-value]
    graph = GraphBuilder("g").add_task(t).build()
    with pytest.raises(TaskFailed, match="bad") as info:
        step(graph, new_session(graph, owner="u"))
    assert isinstance(info.value.cause, TypeError)
    assert "expected TaskResult" in str(info.value.cause)


def test_a_task_without_run_fails_clearly() -> None:
    graph = GraphBuilder("g").add_task(Task("empty")).build()
    with pytest.raises(TaskFailed) as info:
        step(graph, new_session(graph, owner="u"))
    assert isinstance(info.value.cause, NotImplementedError)


@pytest.mark.parametrize(
    ("result", "complaint"),
    [
        (TaskResult(42), "response of type int"),  # type: ignore[arg-type]
        (TaskResult("ok", NextAction.End, b"x"), "status_message of type bytes"),  # type: ignore[arg-type]
        (TaskResult("ok", "end"), "expected a NextAction"),  # type: ignore[arg-type]
    ],
    ids=["response", "status_message", "next_action"],
)
def test_a_malformed_task_result_fails_the_step_naming_the_field(
    result: TaskResult, complaint: str
) -> None:
    graph = GraphBuilder("g").add_task(FunctionTask("sloppy", lambda ctx: result)).build()
    with pytest.raises(TaskFailed, match="sloppy") as info:
        step(graph, new_session(graph, owner="u"))
    assert complaint in str(info.value.cause)
