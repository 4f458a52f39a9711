"""SupervisorActor: activation once, the LRU cap, stopping before reloading, restarts."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from actor_helpers import Harness, Waiter, gated_graph, wait_until

from actors import Timers
from actors.messages import Activate, Crash, PassivateRequest, Step, Sweep, ViewSession
from flow import SessionNotFound, StoreUnavailable

MakeHarness = Callable[..., Harness]


def test_concurrent_activations_of_one_id_start_one_actor(make_harness: MakeHarness) -> None:
    harness = make_harness()
    sid = harness.create()
    waiters = [Waiter() for _ in range(50)]
    for waiter in waiters:
        harness.supervisor.tell(Activate(sid, None, reply=waiter))
    assert all(w.wait() is True for w in waiters)
    assert harness.services.counters.activations == 1
    assert len(harness.index) == 1


def test_activating_a_missing_session_is_session_not_found(make_harness: MakeHarness) -> None:
    harness = make_harness()
    waiter = Waiter()
    harness.supervisor.tell(Activate("missing", None, reply=waiter))
    with pytest.raises(SessionNotFound, match="missing"):
        waiter.wait()


def test_max_live_evicts_the_least_recently_used_idle_session(make_harness: MakeHarness) -> None:
    harness = make_harness(max_live=3)
    sids = [harness.create() for _ in range(5)]
    for sid in sids:
        harness.step(sid, "x")
        assert len(harness.index) <= 3
    wait_until(lambda: harness.index.stopping_count() == 0)
    assert {e.session_id for e in harness.index.entries()} == set(sids[2:])
    assert harness.services.counters.evictions == 2
    assert harness.step(sids[0], "back").revision == 2


def test_a_session_is_reloaded_only_after_its_stopping_actor_saved(
    make_harness: MakeHarness,
) -> None:
    harness = make_harness(durability="passivate")
    sid = harness.create()
    for n in range(1, 21):
        harness.step(sid, n)
        done = Waiter()
        harness.supervisor.tell(PassivateRequest(sid, "requested", done))
        assert done.wait() is True
    assert harness.step(sid, "last").revision == 21


def test_a_sweep_passivates_sessions_idle_too_long(make_harness: MakeHarness) -> None:
    harness = make_harness(idle_timeout=10, wait_timeout=10)
    sid = harness.create()
    harness.step(sid, "x")
    harness.clock_now += 11
    done = Waiter()
    harness.supervisor.tell(Sweep(done))
    done.wait()
    assert harness.index.wait_gone(sid, 10)
    assert harness.services.counters.passivations == 1


def test_a_crash_while_steps_are_queued_reruns_them_on_the_restarted_actor(
    make_harness: MakeHarness,
) -> None:
    gate = threading.Event()
    started = threading.Event()
    harness = make_harness([gated_graph("gated", gate, started=started)])
    sid = harness.create("gated")
    running = harness.send_step(sid, "running")
    assert started.wait(10), "the first step's task never started"  # it is the one running
    entry = harness.index.get(sid)
    assert entry is not None
    assert entry.ref is not None
    queued = [harness.send_step(sid, f"queued{i}") for i in range(3)]
    entry.ref.tell(Crash())
    with pytest.raises(StoreUnavailable, match="crashed"):
        running.wait()
    gate.set()
    assert [w.wait().revision for w in queued] == [1, 2, 3]
    assert harness.services.counters.restarts == 1


def test_timers_run_in_deadline_order_and_cancelled_ones_never_run() -> None:
    timers = Timers()
    try:
        ran: list[str] = []
        done = threading.Event()
        timers.call_later(0.05, lambda: ran.append("late"))
        cancelled = timers.call_later(0.01, lambda: ran.append("cancelled"))
        timers.call_later(0.02, lambda: ran.append("early"))
        timers.call_later(0.08, done.set)
        cancelled.cancel()
        handles = [timers.call_later(60, lambda: None) for _ in range(1000)]
        for handle in handles:
            handle.cancel()
        assert done.wait(5)
        assert ran == ["early", "late"]
        assert len(timers._heap) < 200, "cancelled timers are compacted away"
    finally:
        timers.close()


def test_a_preloaded_snapshot_read_before_an_actor_stopped_is_not_used(
    make_harness: MakeHarness,
) -> None:
    harness = make_harness()
    sid = harness.create()
    stale_epoch = harness.index.epoch
    stale = harness.store.load(sid)
    for n in range(3):
        harness.step(sid, n)
    done = Waiter()
    harness.supervisor.tell(PassivateRequest(sid, "requested", done))
    assert done.wait() is True
    assert harness.index.wait_gone(sid, 10)
    waiter = Waiter()
    harness.supervisor.tell(
        Activate(
            sid,
            None,
            Step(sid, "after", "step", waiter),
            preloaded=stale,
            epoch=stale_epoch,
        )
    )
    assert waiter.wait().revision == 4, "the supervisor read the store again"


def test_a_preloaded_snapshot_is_used_when_nothing_stopped_since(
    make_harness: MakeHarness,
) -> None:
    harness = make_harness()
    sid = harness.create()
    preloaded = harness.store.load(sid)
    assert preloaded is not None
    preloaded.context.set("from", "preload")
    waiter = Waiter()
    harness.supervisor.tell(
        Activate(
            sid,
            None,
            Step(sid, "x", "step", waiter),
            preloaded=preloaded,
            epoch=harness.index.epoch,
        )
    )
    assert waiter.wait().revision == 1
    view = Waiter()
    entry = harness.index.get(sid)
    assert entry is not None
    assert entry.ref is not None
    entry.ref.tell(ViewSession(view))
    assert view.wait().context.get("from") == "preload"
