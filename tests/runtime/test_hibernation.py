"""Hibernation: an idle live session keeps its session as bytes and no actor."""

from __future__ import annotations

import gc
import random
import threading
import types
import weakref
from collections.abc import Callable

import pytest
from runtime_helpers import counting_graph

from actors import SessionActor
from runtime import Runtime, SessionNotFound
from runtime.testing import ManualClock, wait_hibernated, wait_passivated

Opener = Callable[..., Runtime]


def _open(open_runtime: Opener, clock: ManualClock, **config: object) -> Runtime:
    return open_runtime(
        [counting_graph("counter", blocking=False)],
        clock=clock,
        hibernate_after=10,
        **config,
    )


def _session_actors() -> int:
    gc.collect()
    return sum(isinstance(o, SessionActor) for o in gc.get_objects())


def test_an_idle_session_hibernates_without_an_actor_and_wakes_on_its_next_step(
    open_runtime: Opener, clock: ManualClock
) -> None:
    rt = _open(open_runtime, clock, dispatcher_threads=1)
    others = [rt.create_session("counter", owner="a") for _ in range(4)]
    sid = rt.create_session("counter", owner="a")
    for each in [*others, sid]:
        rt.step(each, "one")
    clock.advance(9)
    rt.sweep_now()
    assert rt._core.index.hibernated(sid) is None, "not idle long enough yet"
    clock.advance(2)
    rt.sweep_now()
    for each in [*others, sid]:
        wait_hibernated(rt, each)
    entry = rt._core.index.get(sid)
    assert entry is not None
    assert entry.ref is None
    assert entry.frozen
    # (the one dispatcher worker may still hold the last actor it ran in a local)
    assert _session_actors() <= 1, "a hibernated session keeps no actor"
    # nothing of it is walked by the garbage collector: not the bytes, not the entry,
    # nor (after a collection untracks it) the index's map of hibernated entries
    assert not gc.is_tracked(entry.frozen)
    assert not gc.is_tracked(entry)
    gc.collect()
    holders = [r for r in gc.get_referrers(entry) if not isinstance(r, types.FrameType)]
    assert holders == [], "a collection walks nothing that holds a hibernated entry"
    [info] = [info for info in rt.live_sessions() if info.session_id == sid]
    assert info.state == "hibernated", "still live for ls, and shown hibernated"
    assert info.snapshot_bytes == len(entry.frozen)

    result = rt.step(sid, "two")
    assert result.revision == 2
    assert rt.get_session(sid).context["log"] == ["one", "two"]
    woken = rt._core.index.get(sid)
    assert woken is not None
    assert woken.ref is not None
    assert woken.frozen is None
    assert gc.is_tracked(woken), "an entry with an actor is tracked again"
    counters = rt._core.services.counters
    assert (counters.hibernations, counters.wakes, counters.activations) == (5, 1, 5)
    stats = rt.stats()  # what /metrics reads
    assert (stats.hibernated, stats.hibernations, stats.wakes) == (4, 5, 1)


def test_hibernating_and_passivating_free_the_actor_without_the_garbage_collector(
    open_runtime: Opener, clock: ManualClock
) -> None:
    # Under actorflowd's collector thresholds a full collection is rare: a session
    # actor left in a reference cycle kept its whole decoded session until then.
    rt = _open(open_runtime, clock)
    sleeper, leaver = (rt.create_session("counter", owner="a") for _ in range(2))
    freed = {sid: threading.Event() for sid in (sleeper, leaver)}
    for sid, event in freed.items():
        rt.step(sid, "one")
        entry = rt._core.index.get(sid)
        assert entry is not None
        assert entry.ref is not None
        weakref.finalize(entry.ref._actor_weakref(), event.set)
        del entry
    gc.collect()
    gc.disable()
    try:
        assert rt.passivate(leaver)
        clock.advance(11)
        rt.sweep_now()
        wait_hibernated(rt, sleeper)
        for sid, event in freed.items():
            assert event.wait(5), f"{sid}'s stopped actor waits for a collection"
    finally:
        gc.enable()
    assert rt.step(sleeper, "two").revision == 2
    assert rt.step(leaver, "two").revision == 2


def test_inspect_and_get_session_of_a_hibernated_session_answer_it_live(
    open_runtime: Opener, clock: ManualClock
) -> None:
    rt = _open(open_runtime, clock)
    sid = rt.create_session("counter", owner="a")
    rt.step(sid, "one")
    clock.advance(11)
    rt.sweep_now()
    wait_hibernated(rt, sid)
    info = rt.inspect(sid)
    assert info["live"] is True
    assert info["state"] == "idle"
    assert info["context"]["log"] == ["one"]
    clock.advance(11)
    rt.sweep_now()
    wait_hibernated(rt, sid)
    assert rt.get_session(sid, owner="a").context["count"] == 1
    with pytest.raises(SessionNotFound):
        rt.get_session(sid, owner="mallory")


def test_a_hibernated_session_is_passivated_deleted_and_closed_like_a_live_one(
    open_runtime: Opener, clock: ManualClock
) -> None:
    rt = _open(open_runtime, clock, idle_timeout=60, wait_timeout=60)
    a, b, c = (rt.create_session("counter", owner="a") for _ in range(3))
    for sid in (a, b, c):
        rt.step(sid, "x")
    clock.advance(11)
    rt.sweep_now()
    for sid in (a, b, c):
        wait_hibernated(rt, sid)
    rt.delete_session(a)
    with pytest.raises(SessionNotFound):
        rt.step(a, "y")
    clock.advance(60)
    rt.sweep_now()
    wait_passivated(rt, b)
    wait_passivated(rt, c)
    assert rt.live_sessions() == []
    assert rt.step(b, "y").revision == 2, "passivated from its bytes, nothing lost"


def test_the_durability_passivate_session_with_unsaved_steps_stays_awake(
    open_runtime: Opener, clock: ManualClock
) -> None:
    rt = _open(open_runtime, clock, durability="passivate")
    sid = rt.create_session("counter", owner="a")
    rt.step(sid, "one")
    clock.advance(11)
    rt.sweep_now()
    rt.sweep_now()  # the actor's Hibernate answer comes before the second sweep's reply
    assert rt._core.index.hibernated(sid) is None, "its only copy of the step is the actor's"


def test_steps_racing_with_hibernation_and_wakes_lose_nothing(
    open_runtime: Opener, clock: ManualClock
) -> None:
    forever = 1e9  # the sweeps advance the clock: no passivation or expiry meanwhile
    rt = _open(open_runtime, clock, idle_timeout=forever, wait_timeout=forever, session_ttl=forever)
    sessions = [rt.create_session("counter", owner="a") for _ in range(12)]
    per_thread = 40
    stop = threading.Event()

    def sweeper() -> None:
        while not stop.is_set():
            clock.advance(11)
            rt.sweep_now()

    def stepper(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(per_thread):
            rt.step(rng.choice(sessions), "x")

    sweeping = threading.Thread(target=sweeper)
    sweeping.start()
    threads = [threading.Thread(target=stepper, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    sweeping.join()
    total = sum(int(rt.get_session(sid).context.get("count", 0)) for sid in sessions)
    assert total == 4 * per_thread
    counters = rt._core.services.counters
    assert counters.hibernations > 0, "the race was not exercised"
    assert counters.wakes > 0, "the race was not exercised"
    assert rt._core.services.counters.activations == len(sessions)
