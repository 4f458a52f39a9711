"""The Runtime / AsyncRuntime facade: API surface, errors, ownership, closing."""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import structlog
from runtime_helpers import counting_graph, wait_until

from flow import Context, FunctionTask, GraphBuilder, NextAction, TaskResult
from flow.demo import GRAPHS, echo
from runtime import (
    AsyncRuntime,
    GraphNotFound,
    InvalidInput,
    Runtime,
    RuntimeClosed,
    RuntimeConfig,
    SessionNotFound,
    TaskFailed,
)
from runtime.testing import ManualClock, crash_session, open_test_runtime, wait_passivated

Opener = Callable[..., Runtime]


@pytest.mark.parametrize("module", ["runtime", "runtime.errors", "actors", "actors.messages"])
def test_public_all_is_sorted_and_every_name_imports(module: str) -> None:
    mod = importlib.import_module(module)
    names = list(mod.__all__)
    assert names == sorted(names)
    for name in names:
        assert getattr(mod, name) is not None


def test_create_session_commits_revision_zero_and_validates(open_runtime: Opener) -> None:
    rt = open_runtime()
    sid = rt.create_session("support", owner="alice", context={"tier": "gold"}, client_addr="::1")
    stored = rt.store.load(sid)
    assert stored is not None
    assert stored.revision == 0
    assert stored.current_task == "greet"
    assert stored.metadata.client_addr == "::1"
    with pytest.raises(GraphNotFound):
        rt.create_session("nope", owner="alice")
    with pytest.raises(InvalidInput, match="bad"):
        rt.create_session("echo", owner="alice", context={"bad": object()})


def test_duplicate_graph_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="echo"):
        Runtime.open(data_dir=tmp_path, graphs=[echo, echo])


def test_a_session_of_another_owner_does_not_exist(open_runtime: Opener) -> None:
    rt = open_runtime()
    sid = rt.create_session("echo", owner="alice")
    with pytest.raises(SessionNotFound):
        rt.step(sid, "x", owner="mallory")  # not live yet
    rt.step(sid, "x", owner="alice")
    with pytest.raises(SessionNotFound):
        rt.step(sid, "x", owner="mallory")  # live
    with pytest.raises(SessionNotFound):
        rt.get_session(sid, owner="mallory")
    with pytest.raises(SessionNotFound):
        rt.delete_session(sid, owner="mallory")
    assert rt.get_session(sid, owner="alice").revision == 1
    with pytest.raises(SessionNotFound):
        rt.step("no-such-session", "x")


def test_get_session_of_a_live_session_sees_its_latest_step(open_runtime: Opener) -> None:
    rt = open_runtime(durability="passivate")
    sid = rt.create_session("echo", owner="a")
    rt.step(sid, "hello")
    view = rt.get_session(sid)
    assert view.revision == 1
    assert view.status == "waiting_for_input"
    assert [m["content"] for m in view.chat_history] == ["hello", "echo: hello"]
    assert view.metadata.request_count == 1


def test_inspect_live_sessions_and_stats_describe_the_actors(
    open_runtime: Opener, clock: ManualClock
) -> None:
    rt = open_runtime(clock=clock)
    sid = rt.create_session("echo", owner="a")
    rt.step(sid, "hello")
    clock.advance(5)
    info = rt.inspect(sid)
    assert info["live"] is True
    assert info["state"] == "idle"
    assert info["revision"] == 1
    assert info["context"]["count"] == 1
    assert info["history_tail"][-1]["content"] == "echo: hello"
    assert info["next_passivation_reason"] == "waiting for input"
    assert info["next_passivation"] == info["last_access"] + rt.config.wait_timeout
    assert "activated" in info["live_reason"]
    [live] = rt.live_sessions()
    assert live.session_id == sid
    assert live.idle_seconds == pytest.approx(5)
    assert live.snapshot_bytes == info["snapshot_bytes"] > 0
    assert (live.request_count, live.revision, live.mailbox_depth) == (1, 1, 0)
    stats = rt.stats()
    assert (stats.live, stats.activations, stats.steps, stats.stored) == (1, 1, 1, 1)
    assert rt.passivate(sid)
    wait_passivated(rt, sid)
    assert rt.inspect(sid)["live"] is False
    assert not rt.passivate(sid)


def test_delete_session_stops_the_actor_and_removes_the_row(open_runtime: Opener) -> None:
    rt = open_runtime()
    sid = rt.create_session("echo", owner="a")
    rt.step(sid, "x")
    rt.delete_session(sid, owner="a")
    assert rt.store.load(sid) is None
    with pytest.raises(SessionNotFound):
        rt.step(sid, "x")
    with pytest.raises(SessionNotFound):
        rt.delete_session(sid)


def test_list_sessions_pages_one_owners_sessions(open_runtime: Opener) -> None:
    rt = open_runtime()
    mine = {rt.create_session("echo", owner="a") for _ in range(3)}
    rt.create_session("echo", owner="b")
    first = rt.list_sessions("a", limit=2)
    rest = rt.list_sessions("a", cursor=first.next_cursor, limit=2)
    assert {i.session_id for i in [*first.items, *rest.items]} == mine


def test_every_call_after_close_raises_runtime_closed(open_runtime: Opener) -> None:
    rt = open_runtime()
    sid = rt.create_session("echo", owner="a")
    rt.close()
    rt.close()  # idempotent
    calls: list[Callable[[], object]] = [
        lambda: rt.step(sid, "x"),
        lambda: rt.run(sid),
        lambda: rt.create_session("echo", owner="a"),
        lambda: rt.get_session(sid),
        lambda: rt.delete_session(sid),
        lambda: rt.list_sessions("a"),
        lambda: rt.passivate(sid),
        lambda: rt.kill(sid),
        lambda: rt.snapshot(sid),
        lambda: rt.inspect(sid),
        lambda: rt.live_sessions(),
        lambda: rt.stats(),
    ]
    for call in calls:
        with pytest.raises(RuntimeClosed):
            call()


def test_close_lets_a_running_step_finish_and_saves_it(tmp_path: Path) -> None:
    graph = counting_graph("slow", sleep=0.2)
    rt = Runtime.open(data_dir=tmp_path, graphs=[graph])
    sid = rt.create_session("slow", owner="a")
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(rt.step, sid, "finishing")
        wait_until(lambda: rt.inspect(sid)["state"] == "running")
        rt.close()
        assert running.result(10).revision == 1
    with Runtime.open(data_dir=tmp_path, graphs=[graph]) as again:
        assert again.get_session(sid).context["log"] == ["finishing"]


def test_a_step_still_running_when_the_drain_times_out_gets_runtime_closed(
    open_runtime: Opener,
) -> None:
    gate = threading.Event()
    rt = open_runtime([counting_graph("gated", gate=gate)], drain_timeout=0.2)
    sid = rt.create_session("gated", owner="a")
    with ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(rt.step, sid, "stuck")
        wait_until(lambda: rt.inspect(sid)["state"] == "running")
        rt.close()
        with pytest.raises(RuntimeClosed):
            stuck.result(10)
        gate.set()


def test_begin_drain_refuses_new_requests_while_running_steps_finish(
    open_runtime: Opener,
) -> None:
    gate = threading.Event()
    rt = open_runtime([counting_graph("gated", gate=gate)])
    sid = rt.create_session("gated", owner="a")
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(rt.step, sid, "in flight")
        wait_until(lambda: rt.inspect(sid)["state"] == "running")
        rt.begin_drain()
        assert rt.draining
        with pytest.raises(RuntimeClosed):
            rt.step(sid, "new")
        gate.set()
        assert running.result(10).revision == 1


def test_open_test_runtime_and_structlog_events_name_the_session(tmp_path: Path) -> None:
    clock = ManualClock()
    with (
        structlog.testing.capture_logs() as logs,
        open_test_runtime(tmp_path, clock=clock, idle_timeout=10, wait_timeout=10) as rt,
    ):
        sid = rt.create_session("echo", owner="a")
        rt.step(sid, "x")
        clock.advance(11)
        rt.sweep_now()
        wait_passivated(rt, sid)
    events = {(e["event"], e.get("session_id")) for e in logs}
    assert ("session_activated", sid) in events
    assert ("session_passivated", sid) in events


def test_async_runtime_answers_without_blocking_the_event_loop(tmp_path: Path) -> None:
    graph = counting_graph("slow", sleep=0.2)

    async def main() -> tuple[int, int, dict[str, object]]:
        rt = await AsyncRuntime.open(data_dir=tmp_path, graphs=[*GRAPHS, graph])
        try:
            sid = await rt.create_session("slow", owner="a")
            ticks = 0
            stop = asyncio.Event()

            async def ticker() -> None:
                nonlocal ticks
                while not stop.is_set():
                    ticks += 1
                    await asyncio.sleep(0.01)

            ticking = asyncio.create_task(ticker())
            result = await rt.step(sid, "x")
            stop.set()
            await ticking
            info = await rt.inspect(sid)
            assert await rt.snapshot(sid) > 0
            assert await rt.passivate(sid)
            view = await rt.get_session(sid)
            assert view.revision == 1
            assert (await rt.stats()).steps == 1
            return ticks, result.revision, info
        finally:
            await rt.aclose()

    ticks, revision, info = asyncio.run(main())
    assert revision == 1
    assert ticks >= 10, "the event loop kept running while the step ran"
    assert info["live"] is True


def test_async_runtime_errors_and_close(tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncRuntime.open(data_dir=tmp_path, graphs=GRAPHS) as rt:
            sid = await rt.create_session("echo", owner="a")
            with pytest.raises(SessionNotFound):
                await rt.step(sid, "x", owner="b")
            assert (await rt.run(sid, "go")).status == "waiting_for_input"
            assert [i.session_id for i in await rt.live_sessions()] == [sid]
            assert await rt.kill(sid)
            await rt.delete_session(sid)
            assert (await rt.list_sessions("a")).items == []
        assert rt.closed
        with pytest.raises(RuntimeClosed):
            await rt.step(sid, "x")

    asyncio.run(main())


def test_a_runtime_config_value_out_of_range_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="max_pending"):
        Runtime.open(data_dir=tmp_path, graphs=GRAPHS, config=RuntimeConfig(max_pending=0))


def test_a_sync_step_of_a_graph_with_an_async_task_in_a_chain_uses_the_runtime_loop(
    open_runtime: Opener,
) -> None:
    loops: list[object] = []

    def first(ctx: Context) -> TaskResult:
        return TaskResult("first", NextAction.ContinueAndExecute)

    async def second(ctx: Context) -> TaskResult:
        loops.append(asyncio.get_running_loop())
        return TaskResult("second", NextAction.WaitForInput)

    graph = (
        GraphBuilder("chain")
        .add_task(FunctionTask("first", first))
        .add_task(FunctionTask("second", second))
        .add_edge("first", "second")
        .build()
    )
    rt = open_runtime([graph])
    sid = rt.create_session("chain", owner="a")
    result = rt.step(sid)
    assert result.responses == ("first", "second")
    assert loops == [rt._core.loop_thread.loop]


def test_lifecycle_events_are_logged_with_the_session_id(tmp_path: Path) -> None:
    clock = ManualClock()
    graph = counting_graph("counter", blocking=False)
    with (
        structlog.testing.capture_logs() as logs,
        open_test_runtime(
            tmp_path, graphs=[*GRAPHS, graph], clock=clock, max_live=1, session_ttl=100
        ) as rt,
    ):
        first = rt.create_session("counter", owner="a")
        second = rt.create_session("counter", owner="a")
        rt.step(first, "x")
        rt.step(second, "x")  # evicts the first
        with pytest.raises(TaskFailed):
            rt.step(second, "boom")
        assert crash_session(rt, second)
        wait_until(lambda: rt.stats().restarts == 1)
        clock.advance(101)
        rt.sweep_now()
    events = {(e["event"], e.get("session_id")) for e in logs}
    assert ("session_evicted", first) in events
    assert ("step_failed", second) in events
    assert ("session_restarted", second) in events
    assert ("session_expired", first) in events
