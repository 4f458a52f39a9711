"""GraphBuilder validation and the immutable Graph it builds."""

from __future__ import annotations

import itertools

import pytest
import structlog

from flow import (
    Context,
    FunctionTask,
    Graph,
    GraphBuilder,
    GraphInvalid,
    NextAction,
    TaskNotFound,
    TaskResult,
    new_session,
    step,
)


def t(task_id: str, *, blocking: bool = True) -> FunctionTask:
    return FunctionTask(task_id, lambda ctx: TaskResult(task_id), blocking=blocking)


def is_yes(ctx: Context) -> bool:
    return bool(ctx.input == "yes")


def line(*ids: str) -> GraphBuilder:
    builder = GraphBuilder("g")
    for task_id in ids:
        builder.add_task(t(task_id))
    for a, b in itertools.pairwise(ids):
        builder.add_edge(a, b)
    return builder


def test_first_task_added_is_the_start_unless_another_is_named() -> None:
    assert line("a", "b").build().start == "a"
    graph = GraphBuilder("g").add_task(t("a")).add_task(t("b")).add_edge("b", "a").start("b")
    assert graph.build().start == "b"


def test_build_rejects_a_graph_without_tasks() -> None:
    with pytest.raises(GraphInvalid, match="has no tasks"):
        GraphBuilder("g").build()


def test_build_rejects_duplicate_task_ids_naming_the_task() -> None:
    with pytest.raises(GraphInvalid, match="duplicate task id 'a'"):
        GraphBuilder("g").add_task(t("a")).add_task(t("a")).build()


def test_build_rejects_an_unknown_start_task() -> None:
    with pytest.raises(GraphInvalid, match="start task 'nope'"):
        line("a").start("nope").build()


def test_build_rejects_an_edge_to_an_unknown_task() -> None:
    with pytest.raises(GraphInvalid, match="unknown task 'ghost'"):
        line("a").add_edge("a", "ghost").build()


def test_build_rejects_an_edge_from_an_unknown_task() -> None:
    with pytest.raises(GraphInvalid, match="unknown task 'ghost'"):
        line("a", "b").add_edge("ghost", "a").build()


def test_build_rejects_a_conditional_edge_to_an_unknown_task() -> None:
    builder = GraphBuilder("g").add_task(t("a")).add_task(t("b"))
    with pytest.raises(GraphInvalid, match="unknown task 'ghost'"):
        builder.add_conditional_edge("a", is_yes, "b", "ghost").build()


def test_a_task_only_a_goto_reaches_is_built_with_a_warning() -> None:
    menu = FunctionTask("menu", lambda ctx: TaskResult(None, NextAction.GoTo("island")))
    with structlog.testing.capture_logs() as logs:
        builder = GraphBuilder("g").add_task(menu).add_task(t("b")).add_task(t("island"))
        graph = builder.add_edge("menu", "b").build()
    assert [e["event"] for e in logs] == ["graph_tasks_without_edge_in"]
    assert logs[0]["tasks"] == ["island"]
    session, _ = step(graph, new_session(graph, owner="alice"))
    assert session.current_task == "island"


def test_both_branches_of_a_conditional_edge_count_as_reachable() -> None:
    graph = (
        GraphBuilder("g")
        .add_task(t("a"))
        .add_task(t("yes"))
        .add_task(t("no"))
        .add_conditional_edge("a", is_yes, "yes", "no")
        .build()
    )
    assert set(graph.tasks) == {"a", "yes", "no"}


def test_build_rejects_two_plain_edges_out_of_one_task() -> None:
    builder = line("a", "b").add_task(t("c")).add_edge("a", "c")
    with pytest.raises(GraphInvalid, match="task 'a' has two plain edges"):
        builder.build()


def test_build_rejects_a_plain_edge_beside_a_conditional_edge() -> None:
    builder = line("a", "b").add_task(t("c")).add_conditional_edge("a", is_yes, "c", "b")
    with pytest.raises(GraphInvalid, match="task 'a' has both a plain edge and a conditional"):
        builder.build()
    reverse = (
        GraphBuilder("g")
        .add_task(t("a"))
        .add_task(t("b"))
        .add_task(t("c"))
        .add_conditional_edge("a", is_yes, "c", "b")
        .add_edge("a", "b")
    )
    with pytest.raises(GraphInvalid, match="task 'a' has both"):
        reverse.build()


def test_conditional_edges_out_of_one_task_must_share_their_no_branch() -> None:
    builder = (
        GraphBuilder("g")
        .add_task(t("a"))
        .add_task(t("b"))
        .add_task(t("c"))
        .add_task(t("d"))
        .add_conditional_edge("a", is_yes, "b", "c")
        .add_conditional_edge("a", is_yes, "c", "d")
    )
    with pytest.raises(GraphInvalid, match="task 'a' has conditional edges with different"):
        builder.build()


def test_a_predicate_must_be_callable() -> None:
    with pytest.raises(GraphInvalid, match="not callable"):
        GraphBuilder("g").add_conditional_edge("a", "yes", "b", "c")  # type: ignore[arg-type]


def test_add_task_rejects_something_that_is_not_a_task() -> None:
    with pytest.raises(GraphInvalid, match="needs a Task"):
        GraphBuilder("g").add_task(lambda ctx: None)  # type: ignore[arg-type]


def test_graph_tasks_mapping_is_read_only_and_attributes_cannot_change() -> None:
    graph = line("a", "b").build()
    with pytest.raises(TypeError):
        graph.tasks["c"] = t("c")  # type: ignore[index]
    with pytest.raises(AttributeError):
        graph.id = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        graph.extra = 1  # type: ignore[attr-defined]
    assert list(graph.tasks) == ["a", "b"]


def test_graph_task_lookup_raises_task_not_found() -> None:
    graph = line("a").build()
    assert graph.task("a").id == "a"
    with pytest.raises(TaskNotFound, match="'zz' not found in graph 'g'"):
        graph.task("zz")


def test_version_is_stable_and_changes_with_the_structure() -> None:
    first = line("a", "b").build()
    assert first.version == line("a", "b").build().version
    assert len(first.version) == 16
    assert line("a", "b", "c").build().version != first.version
    assert line("a", "b").start("a").build().version == first.version
    reversed_edge = GraphBuilder("g").add_task(t("a")).add_task(t("b")).add_edge("b", "a")
    assert reversed_edge.start("b").build().version != first.version
    renamed = GraphBuilder("h").add_task(t("a")).add_task(t("b")).add_edge("a", "b").build()
    assert renamed.version != first.version


def test_version_depends_on_the_task_classes() -> None:
    class Other(FunctionTask):
        pass

    other = GraphBuilder("g").add_task(Other("a", lambda ctx: TaskResult())).build()
    assert other.version != line("a").build().version


def test_describe_lists_tasks_and_edges() -> None:
    graph = (
        GraphBuilder("g")
        .add_task(t("a"))
        .add_task(t("b"))
        .add_task(t("c"))
        .add_conditional_edge("a", is_yes, "b", "c")
        .add_edge("b", "c")
        .build()
    )
    assert graph.describe() == {
        "id": "g",
        "version": graph.version,
        "start": "a",
        "tasks": ["a", "b", "c"],
        "edges": [
            {"from": "a", "yes": "b", "no": "c", "condition": f"{__name__}.is_yes"},
            {"from": "b", "to": "c"},
        ],
    }


def test_nonblocking_only_when_every_task_is_sync_and_non_blocking() -> None:
    async def afn(ctx: Context) -> TaskResult:
        return TaskResult()

    quick = GraphBuilder("g").add_task(t("a", blocking=False)).build()
    mixed = GraphBuilder("g").add_task(t("a", blocking=False)).add_task(t("b")).add_edge("a", "b")
    with_async = (
        GraphBuilder("g")
        .add_task(t("a", blocking=False))
        .add_task(FunctionTask("b", afn, blocking=False))
        .add_edge("a", "b")
    )
    assert quick.nonblocking is True
    assert mixed.build().nonblocking is False
    assert with_async.build().nonblocking is False


def test_next_task_tries_conditions_in_order_then_the_shared_no_branch() -> None:
    graph: Graph = (
        GraphBuilder("g")
        .add_task(t("a"))
        .add_task(t("refund"))
        .add_task(t("bye"))
        .add_task(t("faq"))
        .add_conditional_edge("a", lambda ctx: ctx.get("want") == "refund", "refund", "faq")
        .add_conditional_edge("a", lambda ctx: ctx.get("want") in ("refund", "bye"), "bye", "faq")
        .build()
    )
    ctx = Context()
    assert graph.next_task("a", ctx) == "faq"
    ctx.set("want", "refund")
    assert graph.next_task("a", ctx) == "refund"
    ctx.set("want", "bye")
    assert graph.next_task("a", ctx) == "bye"
    assert graph.next_task("faq", ctx) is None
