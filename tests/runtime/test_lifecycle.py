"""Passivation, the LRU cap, TTL expiry, mailbox bounds, deadlines and failures."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from runtime_helpers import FlakyStore, counting_graph, ending_graph, wait_until

from flow import Context, FunctionTask, GraphBuilder, NextAction, TaskResult
from flow.stores import MemoryStore
from runtime import (
    Runtime,
    SessionBusy,
    SessionNotFound,
    SnapshotDecodeError,
    StepTimeout,
    StoreUnavailable,
    TaskFailed,
)
from runtime.testing import ManualClock, crash_session, wait_passivated

Opener = Callable[..., Runtime]


def _live(rt: Runtime) -> set[str]:
    return {info.session_id for info in rt.live_sessions()}


def test_an_idle_session_is_passivated_after_idle_timeout_and_resumes(
    open_runtime: Opener, clock: ManualClock
) -> None:
    rt = open_runtime(
        [counting_graph("counter", blocking=False)], clock=clock, idle_timeout=60, wait_timeout=60
    )
    sid = rt.create_session("counter", owner="a")
    rt.step(sid, "one")
    clock.advance(59)
    rt.sweep_now()
    assert sid in _live(rt), "not idle long enough yet"
    clock.advance(2)
    rt.sweep_now()
    wait_passivated(rt, sid)
    assert sid not in _live(rt)
    assert rt.stats().passivations == 1
    assert rt.step(sid, "two").revision == 2
    assert rt.get_session(sid).context["log"] == ["one", "two"]


def test_a_waiting_session_is_passivated_after_wait_timeout_but_a_paused_one_is_not(
    open_runtime: Opener, clock: ManualClock
) -> None:
    rt = open_runtime(clock=clock, idle_timeout=300, wait_timeout=30)
    waiting = rt.create_session("echo", owner="a")
    paused = rt.create_session("support", owner="a")
    assert rt.step(waiting, "hi").status == "waiting_for_input"
    assert rt.step(paused).status == "paused"
    clock.advance(31)
    rt.sweep_now()
    wait_passivated(rt, waiting)
    assert _live(rt) == {paused}
    clock.advance(300)
    rt.sweep_now()
    wait_passivated(rt, paused)
    assert _live(rt) == set()


def test_a_completed_session_is_passivated_at_once(open_runtime: Opener) -> None:
    rt = open_runtime([ending_graph()])
    sid = rt.create_session("ender", owner="a")
    rt.step(sid)
    assert rt.step(sid, "bye").status == "completed"
    wait_passivated(rt, sid)
    assert rt.get_session(sid).status == "completed"


def test_max_live_caps_live_actors_and_every_session_stays_correct(open_runtime: Opener) -> None:
    rt = open_runtime([counting_graph("counter", blocking=False)], max_live=10)
    sids = [rt.create_session("counter", owner="a") for _ in range(100)]
    peak = 0
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(chunk: list[str]) -> None:
        nonlocal peak
        try:
            for round_ in range(3):
                for sid in chunk:
                    rt.step(sid, round_)
                    with lock:
                        peak = max(peak, len(rt.live_sessions()))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=client, args=(sids[i::4],)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not errors, errors
    assert peak <= 10
    assert rt.stats().evictions >= 90
    for sid in sids:
        assert rt.get_session(sid).context["log"] == [0, 1, 2]


def test_concurrent_first_steps_activate_a_session_once(open_runtime: Opener) -> None:
    rt = open_runtime()
    sid = rt.create_session("echo", owner="a")
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: rt.step(sid, str(i)), range(16)))
    assert sorted(r.revision for r in results) == list(range(1, 17))
    assert rt.stats().activations == 1


def test_an_expired_session_is_swept_from_store_and_memory(
    open_runtime: Opener, clock: ManualClock
) -> None:
    rt = open_runtime(clock=clock, session_ttl=100, idle_timeout=1000, wait_timeout=1000)
    live = rt.create_session("echo", owner="a")
    stored = rt.create_session("echo", owner="a")
    fresh = rt.create_session("echo", owner="a")
    rt.step(live, "x")
    clock.advance(90)
    rt.step(fresh, "refreshes its ttl")
    clock.advance(20)
    rt.sweep_now()
    wait_passivated(rt, live)
    assert rt.store.load(live) is None
    assert rt.store.load(stored) is None
    assert rt.get_session(fresh).context["count"] == 1
    assert rt.stats().expirations == 2
    with pytest.raises(SessionNotFound):
        rt.step(live, "again")


def test_a_steps_expiry_counts_from_its_start_inline_and_on_the_task_pool(
    open_runtime: Opener, clock: ManualClock
) -> None:
    def slow(ctx: Context) -> TaskResult:
        clock.advance(30)  # the step takes 30 s of the runtime's clock
        return TaskResult("done", NextAction.WaitForInput)

    graphs = [
        GraphBuilder(name).add_task(FunctionTask("slow", slow, blocking=blocking)).build()
        for name, blocking in (("inline", False), ("pooled", True))
    ]
    rt = open_runtime(graphs, clock=clock, session_ttl=100)
    for graph in ("inline", "pooled"):
        sid = rt.create_session(graph, owner="a")
        started = clock()
        rt.step(sid, "x")
        meta = rt.get_session(sid).metadata
        assert (meta.last_accessed, meta.expires_at) == (started, started + 100), graph
        assert rt.store.load(sid).metadata.expires_at == started + 100  # type: ignore[union-attr]


def test_a_full_mailbox_refuses_at_once_and_reject_refuses_a_busy_session(
    open_runtime: Opener,
) -> None:
    gate = threading.Event()
    rt = open_runtime([counting_graph("gated", gate=gate)], max_pending=2)
    sid = rt.create_session("gated", owner="a")
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(rt.step, sid, "first")
        wait_until(lambda: rt.inspect(sid)["state"] == "running")
        with pytest.raises(SessionBusy) as rejected:
            rt.step(sid, "rejected", on_busy="reject")
        assert not rejected.value.mailbox_full
        second = pool.submit(rt.step, sid, "second")
        wait_until(lambda: rt.live_sessions()[0].mailbox_depth == 2)
        with pytest.raises(SessionBusy) as full:
            rt.step(sid, "third")
        assert full.value.mailbox_full
        gate.set()
        assert first.result(10).revision == 1
        assert second.result(10).revision == 2
    assert rt.get_session(sid).context["log"] == ["first", "second"]


def test_a_step_past_its_deadline_times_out_and_leaves_the_session_as_it_was(
    open_runtime: Opener,
) -> None:
    gate = threading.Event()
    rt = open_runtime(
        [counting_graph("gated", gate=gate), counting_graph("quick", blocking=False)],
        step_timeout=0.3,
    )
    slow = rt.create_session("gated", owner="a")
    other = rt.create_session("quick", owner="a")
    with ThreadPoolExecutor(1) as pool:
        stuck: Future[object] = pool.submit(rt.step, slow, "never")
        wait_until(lambda: rt.inspect(slow)["state"] == "running")
        assert rt.step(other, "unaffected").revision == 1
        with pytest.raises(StepTimeout):
            stuck.result(10)
    assert rt.get_session(slow).revision == 0
    gate.set()  # the late completion must be dropped
    assert rt.step(slow, "after").revision == 1
    assert rt.get_session(slow).context["log"] == ["after"]


def test_a_failing_task_leaves_the_session_unchanged(open_runtime: Opener) -> None:
    rt = open_runtime([counting_graph("counter")])
    sid = rt.create_session("counter", owner="a")
    rt.step(sid, "ok")
    with pytest.raises(TaskFailed) as failed:
        rt.step(sid, "boom")
    assert isinstance(failed.value.cause, ValueError)
    view = rt.get_session(sid)
    assert view.revision == 1
    assert view.context == {"count": 1, "log": ["ok"], "user_input": "ok"}
    assert rt.stats().errors == 1


def test_a_failed_commit_fails_the_steps_after_it_and_the_session_reloads(
    open_runtime: Opener, tmp_path: Path
) -> None:
    store = FlakyStore(tmp_path / "flaky.db")
    rt = open_runtime([counting_graph("counter", blocking=False)], store=store)
    sid = rt.create_session("counter", owner="a")
    rt.step(sid, "committed")
    release = threading.Event()
    store.fail_saves(1, hold=release)
    with ThreadPoolExecutor(3) as pool:
        doomed = pool.submit(rt.step, sid, "doomed")
        wait_until(lambda: store.saves >= 3)
        later = [pool.submit(rt.step, sid, f"later{i}") for i in range(2)]
        wait_until(lambda: store.saves >= 5)  # both ran on top of the doomed snapshot
        release.set()
        with pytest.raises(StoreUnavailable, match="injected"):
            doomed.result(10)
        for future in later:
            with pytest.raises(StoreUnavailable):
                future.result(10)
    assert rt.step(sid, "after").revision == 2
    view = rt.get_session(sid)
    assert view.context["log"] == ["committed", "after"]
    assert store.inner.load(sid).context.get("log") == ["committed", "after"]


def test_a_crashed_actor_restarts_from_its_last_committed_snapshot(open_runtime: Opener) -> None:
    rt = open_runtime()
    sid = rt.create_session("echo", owner="a")
    rt.step(sid, "one")
    assert crash_session(rt, sid)
    wait_until(lambda: rt.stats().restarts == 1)
    assert rt.step(sid, "two").revision == 2
    assert rt.get_session(sid).context["count"] == 2


def test_a_store_that_raises_in_save_crashes_the_actor_which_restarts(
    open_runtime: Opener, tmp_path: Path
) -> None:
    store = FlakyStore(tmp_path / "flaky.db")
    rt = open_runtime(store=store)
    sid = rt.create_session("echo", owner="a")
    rt.step(sid, "one")
    store.raise_on_save(1)
    with pytest.raises(StoreUnavailable, match="crashed"):
        rt.step(sid, "lost")
    assert rt.step(sid, "two").revision == 2
    assert rt.stats().restarts == 1
    users = [m["content"] for m in rt.get_session(sid).chat_history if m["role"] == "user"]
    assert users == ["one", "two"]


def test_too_many_crashes_mark_the_session_error(open_runtime: Opener) -> None:
    rt = open_runtime(max_restarts=2, restart_window=60)
    sid = rt.create_session("echo", owner="a")
    rt.step(sid, "one")
    for n in range(1, 3):
        assert crash_session(rt, sid)
        wait_until(lambda n=n: rt.stats().restarts == n and sid in _live(rt))
    assert crash_session(rt, sid)
    wait_passivated(rt, sid)
    stored = rt.store.load(sid)
    assert stored is not None
    assert stored.status == "error"
    with pytest.raises(TaskFailed, match="crashed 3 times"):
        rt.step(sid, "again")


def test_kill_drops_what_was_not_saved_and_the_next_step_reactivates(open_runtime: Opener) -> None:
    rt = open_runtime(durability="passivate")
    sid = rt.create_session("echo", owner="a")
    rt.step(sid, "unsaved")
    assert rt.kill(sid)
    wait_passivated(rt, sid)
    assert rt.get_session(sid).revision == 0
    assert rt.step(sid, "again").revision == 1
    assert not rt.kill("no-such-session")


def test_passivate_durability_saves_on_passivation_and_snapshot(open_runtime: Opener) -> None:
    rt = open_runtime(durability="passivate")
    sid = rt.create_session("echo", owner="a")
    rt.step(sid, "one")
    assert rt.store.load(sid).revision == 0  # type: ignore[union-attr]
    assert rt.snapshot(sid) > 0
    assert rt.store.load(sid).revision == 1  # type: ignore[union-attr]
    rt.step(sid, "two")
    assert rt.passivate(sid)
    wait_passivated(rt, sid)
    assert rt.store.load(sid).revision == 2  # type: ignore[union-attr]


def test_an_undecodable_snapshot_is_reported_then_gone(open_runtime: Opener) -> None:
    store = MemoryStore()
    rt = open_runtime(store=store)
    sid = rt.create_session("echo", owner="a")
    store.put_raw(sid, b"\xc1 not msgpack")
    with pytest.raises(SnapshotDecodeError):
        rt.step(sid, "x")
    with pytest.raises(SessionNotFound):
        rt.step(sid, "x")
    assert rt.stats().quarantined == 1


def test_steps_racing_passivations_are_never_lost(open_runtime: Opener) -> None:
    rt = open_runtime([counting_graph("counter", blocking=False)])
    sid = rt.create_session("counter", owner="a")
    stop = threading.Event()
    passivations = 0

    def passivator() -> None:
        nonlocal passivations
        while not stop.is_set():
            passivations += rt.passivate(sid)

    churn = threading.Thread(target=passivator)
    churn.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: rt.step(sid, i), range(200)))
    finally:
        stop.set()
        churn.join(30)
    assert sorted(r.revision for r in results) == list(range(1, 201))
    assert sorted(rt.get_session(sid).context["log"]) == list(range(200))
    assert passivations > 0
    assert rt.stats().activations == passivations + (sid in _live(rt))


def test_kill_fails_the_running_step_and_reruns_queued_ones_on_the_next_actor(
    open_runtime: Opener,
) -> None:
    gate = threading.Event()
    rt = open_runtime([counting_graph("gated", gate=gate)])
    sid = rt.create_session("gated", owner="a")
    with ThreadPoolExecutor(3) as pool:
        running = pool.submit(rt.step, sid, "running")
        wait_until(lambda: rt.inspect(sid)["state"] == "running")
        queued = [pool.submit(rt.step, sid, f"queued{i}") for i in range(2)]
        wait_until(lambda: rt.live_sessions()[0].mailbox_depth == 3)
        assert rt.kill(sid)
        with pytest.raises(StoreUnavailable, match="killed"):
            running.result(10)
        gate.set()
        assert sorted(f.result(10).revision for f in queued) == [1, 2]
    assert sorted(rt.get_session(sid).context["log"]) == ["queued0", "queued1"]


def test_an_expired_session_is_not_activated_even_before_a_sweep(
    open_runtime: Opener, clock: ManualClock
) -> None:
    rt = open_runtime(clock=clock, session_ttl=100)
    sid = rt.create_session("echo", owner="a")
    clock.advance(101)
    with pytest.raises(SessionNotFound, match="expired"):
        rt.step(sid, "late")
    assert rt.store.load(sid) is None


def test_the_periodic_sweep_passivates_on_its_own(open_runtime: Opener) -> None:
    rt = open_runtime(idle_timeout=0.05, wait_timeout=0.05, sweep_interval=0.02)
    sid = rt.create_session("echo", owner="a")
    rt.step(sid, "x")
    wait_passivated(rt, sid, timeout=10)
    assert rt.stats().passivations >= 1


def test_a_failed_snapshot_is_reported_and_the_session_reloads_from_the_store(
    open_runtime: Opener, tmp_path: Path
) -> None:
    store = FlakyStore(tmp_path / "flaky.db")
    rt = open_runtime(store=store, durability="passivate")
    sid = rt.create_session("echo", owner="a")
    rt.step(sid, "one")
    assert rt.snapshot(sid) > 0
    rt.step(sid, "unsaved")
    store.fail_saves(1)
    with pytest.raises(StoreUnavailable, match="injected"):
        rt.snapshot(sid)
    wait_until(lambda: rt.get_session(sid).revision == 1)
    assert rt.step(sid, "after").revision == 2
    assert rt.snapshot(sid) > 0
    assert store.inner.load(sid).revision == 2
