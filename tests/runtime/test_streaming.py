"""Streaming in process: ``Runtime.stream``/``tail``, ``AsyncRuntime.stream``, ``ctx.emit*``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from flow import (
    Context,
    FanOutTask,
    FunctionTask,
    Graph,
    GraphBuilder,
    NextAction,
    TaskResult,
)
from runtime import (
    AsyncRuntime,
    IdempotencyKeyReused,
    Runtime,
    SessionBusy,
    SessionNotFound,
    StepTimeout,
    TaskFailed,
    TooManyWatchers,
)
from runtime.events import (
    Committed,
    CustomEvent,
    EventStream,
    Overflow,
    StepError,
    StepEvent,
    StepStarted,
    TaskFinished,
    TaskStarted,
    Token,
)

Opener = Callable[..., Runtime]


def _talker(action: NextAction, *, blocking: bool = True) -> FunctionTask:
    def run(ctx: Context) -> TaskResult:
        ctx.emit_token("a")
        ctx.emit("progress", {"done": 1})
        ctx.emit_token("b")
        return TaskResult("said ab", action)

    return FunctionTask("first", run, blocking=blocking)


def _reply(text: str, action: NextAction = NextAction.WaitForInput) -> FunctionTask:
    return FunctionTask(text, lambda ctx: TaskResult(text, action), blocking=False)


def _graph(action: NextAction) -> Graph:
    builder = GraphBuilder(f"kind-{action.kind}")
    builder.add_task(_talker(action)).add_task(_reply("second")).add_task(_reply("third"))
    return builder.add_edge("first", "second").add_edge("second", "third").build()


def _kinds(events: list[StepEvent]) -> list[str]:
    return [type(e).__struct_config__.tag for e in events]  # type: ignore[union-attr, misc]


# (action, whether the next task runs in the same step, the status after)
ACTIONS = [
    (NextAction.Continue, False, "paused"),
    (NextAction.ContinueAndExecute, True, "waiting_for_input"),
    (NextAction.WaitForInput, False, "waiting_for_input"),
    (NextAction.End, False, "completed"),
    (NextAction.GoTo("third"), False, "paused"),
    (NextAction.GoBack, False, "waiting_for_input"),
]


@pytest.mark.parametrize(("action", "chains", "status"), ACTIONS, ids=[a[0].kind for a in ACTIONS])
def test_events_come_in_order_for_each_next_action(
    open_runtime: Opener, action: NextAction, chains: bool, status: str
) -> None:
    rt = open_runtime([_graph(action)])
    sid = rt.create_session(f"kind-{action.kind}", owner="alice")
    events = list(rt.stream(sid, "go"))
    expected = ["step_started", "task_started", "token", "event", "token", "task_finished"]
    if chains:
        expected += ["task_started", "task_finished"]
    assert _kinds(events) == [*expected, "committed"]
    assert events[0] == StepStarted(sid, 0)
    assert events[1:6] == [
        TaskStarted("first"),
        Token("first", "a"),
        CustomEvent("first", "progress", {"done": 1}),
        Token("first", "b"),
        TaskFinished("first", "said ab", action.kind, action.task_id),
    ]
    committed = events[-1]
    assert isinstance(committed, Committed)
    view = rt.get_session(sid)
    assert (committed.revision, committed.status) == (view.revision, status) == (1, status)
    assert committed.next_task == view.current_task
    assert committed.response == ("second" if chains else "said ab")


def test_a_failing_task_streams_its_error_and_leaves_the_session_as_it_was(
    open_runtime: Opener,
) -> None:
    def fail(ctx: Context) -> TaskResult:
        ctx.emit_token("almost")
        ctx.set("x", 1)
        raise ValueError("no story today")

    graph = GraphBuilder("fails").add_task(FunctionTask("fail", fail)).build()
    rt = open_runtime([graph])
    sid = rt.create_session("fails", owner="alice")
    with capture_logs() as logs:  # (and not rendered: rich tracebacks are slow)
        events = list(rt.stream(sid, "go"))
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["step_failed"]
    assert _kinds(events) == ["step_started", "task_started", "token", "error"]
    error = events[-1]
    assert isinstance(error, StepError)
    assert isinstance(error.error, TaskFailed)
    assert "no story today" in str(error.error)
    view = rt.get_session(sid)
    assert (view.revision, view.context) == (0, {})


def test_fan_out_children_stream_their_own_events(open_runtime: Opener) -> None:
    def child(name: str) -> FunctionTask:
        def run(ctx: Context) -> TaskResult:
            ctx.emit_token(name)
            return TaskResult(name)

        return FunctionTask(name, run)

    graph = GraphBuilder("fan").add_task(FanOutTask("fan", [child("left"), child("right")])).build()
    rt = open_runtime([graph])
    sid = rt.create_session("fan", owner="alice")
    events = list(rt.stream(sid))
    children = {e.task for e in events if isinstance(e, Token)}
    assert children == {"left", "right"}
    starts = [e.task for e in events if isinstance(e, TaskStarted)]
    finishes = [e.task for e in events if isinstance(e, TaskFinished)]
    assert starts[0] == "fan"
    assert finishes[-1] == "fan"
    assert sorted(starts[1:]) == sorted(finishes[:-1]) == ["left", "right"]
    for name in ("left", "right"):  # each child: started, then its token, then finished
        mine = [e for e in events if getattr(e, "task", None) == name]
        assert _kinds(mine) == ["task_started", "token", "task_finished"]


def test_tokens_reach_the_reader_before_the_task_returns(open_runtime: Opener) -> None:
    seen = threading.Event()

    def wait_for_reader(ctx: Context) -> TaskResult:
        ctx.emit_token("first")
        # the task returns only once the reader has the token (else it fails the step)
        return TaskResult("saw it" if seen.wait(10) else "never seen", NextAction.WaitForInput)

    graph = GraphBuilder("handshake").add_task(FunctionTask("t", wait_for_reader)).build()
    rt = open_runtime([graph])
    sid = rt.create_session("handshake", owner="alice")
    with rt.stream(sid, "go") as stream:
        for event in stream:
            if isinstance(event, Token):
                seen.set()
            last = event
    assert isinstance(last, Committed)
    assert last.response == "saw it"


def test_an_async_stream_yields_the_same_events(tmp_path: Path) -> None:
    async def talk(ctx: Context) -> TaskResult:
        for word in ("one", "two"):
            ctx.emit_token(word)
            await asyncio.sleep(0)
        return TaskResult("one two", NextAction.WaitForInput)

    graph = GraphBuilder("async-talk").add_task(FunctionTask("talk", talk)).build()

    async def main() -> list[StepEvent]:
        async with AsyncRuntime.open(data_dir=tmp_path, graphs=[graph]) as art:
            sid = await art.create_session("async-talk", owner="alice")
            return [event async for event in art.stream(sid, "go")]

    events = asyncio.run(main())
    assert [e.text for e in events if isinstance(e, Token)] == ["one", "two"]
    assert isinstance(events[-1], Committed)


def test_task_loop_caller_runs_async_tasks_on_the_opening_loop(tmp_path: Path) -> None:
    """``task_loop="caller"``: an async task runs on the loop that opened the runtime,
    its tokens stream as on the runtime's own loop, and closing the runtime leaves
    that loop running; ``"own"`` (the default) runs it on another thread's loop."""
    loops: list[asyncio.AbstractEventLoop] = []

    async def talk(ctx: Context) -> TaskResult:
        loops.append(asyncio.get_running_loop())
        ctx.emit_token("here")
        await asyncio.sleep(0)
        return TaskResult("said", NextAction.WaitForInput)

    graph = GraphBuilder("where").add_task(FunctionTask("talk", talk)).build()

    async def main(task_loop: Any) -> tuple[list[StepEvent], bool]:
        async with AsyncRuntime.open(
            data_dir=tmp_path / task_loop, graphs=[graph], task_loop=task_loop
        ) as art:
            sid = await art.create_session("where", owner="alice")
            events = [event async for event in art.stream(sid, "go")]
        ran_here = loops[-1] is asyncio.get_running_loop()
        await asyncio.sleep(0)  # the caller's loop still runs after the runtime closed
        return events, ran_here

    events, ran_here = asyncio.run(main("caller"))
    assert ran_here
    assert [e.text for e in events if isinstance(e, Token)] == ["here"]
    assert isinstance(events[-1], Committed)
    events, ran_here = asyncio.run(main("own"))
    assert not ran_here
    assert isinstance(events[-1], Committed)
    with pytest.raises(ValueError, match="task_loop"):
        AsyncRuntime.open(data_dir=tmp_path, task_loop="mine")  # type: ignore[arg-type]


def test_errors_before_the_step_starts_are_raised(open_runtime: Opener) -> None:
    gate = threading.Event()

    def hold(ctx: Context) -> TaskResult:
        gate.wait(10)
        return TaskResult("held", NextAction.WaitForInput)

    graph = GraphBuilder("hold").add_task(FunctionTask("hold", hold)).build()
    rt = open_runtime([graph])
    with pytest.raises(SessionNotFound):
        next(iter(rt.stream("no-such-session")))
    sid = rt.create_session("hold", owner="alice")
    with pytest.raises(SessionNotFound):
        next(iter(rt.stream(sid, owner="mallory")))
    running = rt.stream(sid, "first")
    assert isinstance(next(running), StepStarted)
    with pytest.raises(SessionBusy):
        next(iter(rt.stream(sid, "second", on_busy="reject")))
    gate.set()
    assert isinstance(list(running)[-1], Committed)
    assert rt.stream_stats().subscribers == 0


def test_a_keyed_stream_replays_its_committed_result_without_running(open_runtime: Opener) -> None:
    rt = open_runtime()
    sid = rt.create_session("echo", owner="alice")
    first = list(rt.stream(sid, "hi", request_id="k-1"))
    again = list(rt.stream(sid, "hi", request_id="k-1"))
    assert isinstance(first[-1], Committed)
    assert again == [Committed(**{**_fields(first[-1]), "replayed": True})]
    with pytest.raises(IdempotencyKeyReused):
        next(iter(rt.stream(sid, "other", request_id="k-1")))
    assert rt.get_session(sid).revision == 1


def _fields(event: Committed) -> dict[str, Any]:
    return {name: getattr(event, name) for name in event.__struct_fields__}


def test_a_timed_out_step_streams_its_error_and_nothing_after(open_runtime: Opener) -> None:
    release = threading.Event()
    after = threading.Event()

    def slow(ctx: Context) -> TaskResult:
        ctx.emit_token("before")
        release.wait(10)
        ctx.emit_token("after the deadline")  # dropped: the step is over
        after.set()
        return TaskResult("late")

    graph = GraphBuilder("slow").add_task(FunctionTask("slow", slow)).build()
    rt = open_runtime([graph], step_timeout=0.3)
    sid = rt.create_session("slow", owner="alice")
    with rt.tail(sid) as tail, capture_logs():
        events = list(rt.stream(sid, "go"))
        release.set()
        assert after.wait(10)
        assert _kinds(events) == ["step_started", "task_started", "token", "error"]
        error = events[-1]
        assert isinstance(error, StepError)
        assert isinstance(error.error, StepTimeout)
        tailed = [tail.next(5) for _ in range(4)]
    assert _kinds(tailed) == _kinds(events)  # type: ignore[arg-type]


def test_emits_are_checked_even_with_nobody_watching(open_runtime: Opener) -> None:
    def bad(ctx: Context) -> TaskResult:
        kind = ctx.input
        if kind == "token":
            ctx.emit_token(42)  # type: ignore[arg-type]
        elif kind == "data":
            ctx.emit("x", {"when": object()})
        elif kind == "big":
            ctx.emit_token("x" * (64 * 1024 + 1))
        elif kind == "name":
            ctx.emit("", 1)
        return TaskResult("fine")

    graph = GraphBuilder("bad").add_task(FunctionTask("bad", bad)).build()
    rt = open_runtime([graph])
    sid = rt.create_session("bad", owner="alice")
    for kind, fragment in [
        ("token", "emit_token needs a str"),
        ("data", "event 'x'"),
        ("big", "at most 65536"),
        ("name", "an event name"),
    ]:
        with pytest.raises(TaskFailed, match=fragment), capture_logs():
            rt.step(sid, kind)
    assert rt.step(sid, "ok").response == "fine"


def test_a_stalled_reader_is_dropped_while_others_and_steps_go_on(open_runtime: Opener) -> None:
    read = threading.Semaphore(0)

    def chatty(ctx: Context) -> TaskResult:
        if ctx.input != "go":
            return TaskResult("quiet", NextAction.WaitForInput)
        for i in range(50):
            ctx.emit_token(str(i))
            if i % 4 == 3:  # the reading tail keeps up: it has each batch of 4 first
                for _ in range(4):
                    assert read.acquire(timeout=10)
        return TaskResult("done", NextAction.WaitForInput)

    def read_all(reader: EventStream) -> list[StepEvent]:
        got = []
        for event in reader:
            got.append(event)
            if isinstance(event, Token):
                read.release()
            if isinstance(event, Committed):
                return got
        return got

    graph = GraphBuilder("chatty").add_task(FunctionTask("c", chatty)).build()
    rt = open_runtime([graph], stream_buffer=8)
    sid = rt.create_session("chatty", owner="alice")
    stalled = rt.tail(sid)  # never read while the step runs
    with rt.tail(sid) as reader, ThreadPoolExecutor(1) as pool:
        reading = pool.submit(read_all, reader)
        assert rt.step(sid, "go").response == "done"
        got = reading.result(20)
    assert rt.step(sid, "again").revision == 2
    assert [e.text for e in got if isinstance(e, Token)] == [str(i) for i in range(50)]
    assert isinstance(got[-1], Committed)
    held = list(stalled)
    assert len(held) == 9  # its buffer (8), then the overflow that ended it
    assert isinstance(held[-1], Overflow)
    assert rt.stream_stats().overflows == 1


def test_streams_and_plain_steps_on_one_session_stay_serialized(open_runtime: Opener) -> None:
    def count(ctx: Context) -> TaskResult:
        n = int(ctx.get("count", 0)) + 1
        ctx.emit_token(str(n))
        ctx.set("count", n)
        return TaskResult(str(n), NextAction.WaitForInput)

    graph = GraphBuilder("count").add_task(FunctionTask("count", count)).build()
    rt = open_runtime([graph])
    sid = rt.create_session("count", owner="alice")

    def client(i: int) -> list[int]:
        revisions = []
        for j in range(4):
            if (i + j) % 2:
                events = list(rt.stream(sid, f"{i}.{j}"))
                committed = events[-1]
                assert isinstance(committed, Committed)
                token = next(e for e in events if isinstance(e, Token))
                assert token.text == committed.response  # its own step's token
                revisions.append(committed.revision)
            else:
                revisions.append(rt.step(sid, f"{i}.{j}").revision)
        return revisions

    with ThreadPoolExecutor(32) as pool:
        seen = [r for rs in pool.map(client, range(32)) for r in rs]
    assert sorted(seen) == list(range(1, 129))
    view = rt.get_session(sid)
    assert (view.revision, view.context["count"]) == (128, 128)
    assert rt.stream_stats().subscribers == 0


def test_tails_past_the_caps_are_refused_and_streams_never_are(open_runtime: Opener) -> None:
    rt = open_runtime(max_tails_per_session=2, max_tails=3)
    one, two = (rt.create_session("echo", owner="alice") for _ in range(2))
    first, second = rt.tail(one), rt.tail(one)
    with pytest.raises(TooManyWatchers, match="2 tails open"):
        rt.tail(one)
    third = rt.tail(two)  # another session: its own cap, but the runtime's is reached
    with pytest.raises(TooManyWatchers, match="runtime has 3 tails open"):
        rt.tail(two)
    # a stream is a step's own reader: never refused
    assert isinstance(list(rt.stream(one, "hi"))[-1], Committed)
    first.close()
    with rt.tail(one) as again:
        assert again is not None
    for tail in (second, third):
        tail.close()
    assert rt.stream_stats().refused == 2
