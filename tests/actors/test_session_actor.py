"""SessionActor: the stash, deadlines, lineages and passivation, driven by messages."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pykka
import pytest
from actor_helpers import Harness, Waiter, gated_graph, wait_until

from actors.messages import CommitFailed, Inspect, PassivateRequest, ViewSession
from flow import StepTimeout, StoreUnavailable

MakeHarness = Callable[..., Harness]


def _actor(harness: Harness, sid: str) -> pykka.ActorRef[Any]:
    entry = harness.index.get(sid)
    assert entry is not None
    assert entry.ref is not None
    return entry.ref


def test_steps_that_arrive_while_a_task_runs_wait_in_the_stash_in_order(
    make_harness: MakeHarness,
) -> None:
    gate = threading.Event()
    harness = make_harness([gated_graph("gated", gate)])
    sid = harness.create("gated")
    first = harness.send_step(sid, 0)
    wait_until(lambda: harness.index.get(sid) is not None)
    later = [harness.send_step(sid, i) for i in range(1, 6)]
    info = Waiter()
    _actor(harness, sid).tell(Inspect(info))
    described = info.wait()
    assert described["state"] == "running"
    assert described["stashed"] == 5
    gate.set()
    assert first.wait().revision == 1
    assert [w.wait().revision for w in later] == [2, 3, 4, 5, 6]
    view = Waiter()
    _actor(harness, sid).tell(ViewSession(view))
    assert view.wait().context.get("log") == [0, 1, 2, 3, 4, 5]


def test_an_async_task_runs_on_the_loop_and_its_completion_comes_back_as_a_message(
    make_harness: MakeHarness,
) -> None:
    gate = threading.Event()
    gate.set()
    harness = make_harness([gated_graph("agated", gate, is_async=True)])
    sid = harness.create("agated")
    assert [harness.send_step(sid, i) for i in range(3)][-1].wait().revision == 3


def test_a_blocking_task_never_holds_a_dispatcher_thread(make_harness: MakeHarness) -> None:
    gate = threading.Event()
    harness = make_harness([gated_graph("gated", gate)])
    stuck = [harness.create("gated") for _ in range(4)]
    waiters = [harness.send_step(sid, "stuck") for sid in stuck]
    echo = harness.create("echo")
    assert harness.step(echo, "free").response == "echo: free"  # 2 dispatcher threads, 4 stuck
    gate.set()
    assert all(w.wait().revision == 1 for w in waiters)


def test_a_timed_out_step_is_answered_and_its_late_completion_dropped(
    make_harness: MakeHarness,
) -> None:
    gate = threading.Event()
    harness = make_harness([gated_graph("gated", gate)], step_timeout=0.2)
    sid = harness.create("gated")
    with pytest.raises(StepTimeout):
        harness.step(sid, "late")
    gate.set()
    assert harness.step(sid, "next").revision == 1
    view = Waiter()
    _actor(harness, sid).tell(ViewSession(view))
    assert view.wait().context.get("log") == ["next"]


def test_a_commit_failure_of_an_abandoned_lineage_is_ignored(make_harness: MakeHarness) -> None:
    harness = make_harness()
    sid = harness.create()
    harness.step(sid, "one")
    ref = _actor(harness, sid)
    ref.tell(CommitFailed(lineage=7, revision=1, error=StoreUnavailable("old")))
    assert harness.step(sid, "two").revision == 2


def test_a_commit_failure_reloads_the_last_committed_snapshot(make_harness: MakeHarness) -> None:
    harness = make_harness(durability="passivate")
    sid = harness.create()
    harness.step(sid, "unsaved")
    ref = _actor(harness, sid)
    ref.tell(CommitFailed(lineage=0, revision=1, error=StoreUnavailable("lost")))
    assert harness.step(sid, "again").revision == 1


def test_passivation_saves_a_dirty_session_before_the_actor_stops(
    make_harness: MakeHarness,
) -> None:
    harness = make_harness(durability="passivate")
    sid = harness.create()
    harness.step(sid, "one")
    assert harness.store.load(sid).revision == 0
    done = Waiter()
    harness.supervisor.tell(PassivateRequest(sid, "requested", done))
    assert done.wait() is True
    assert harness.index.wait_gone(sid, 10)
    assert harness.store.load(sid).revision == 1


def test_an_async_step_past_its_deadline_is_cancelled_and_rolled_back(
    make_harness: MakeHarness,
) -> None:
    gate = threading.Event()
    harness = make_harness([gated_graph("agated", gate, is_async=True)], step_timeout=0.2)
    sid = harness.create("agated")
    with pytest.raises(StepTimeout):
        harness.step(sid, "late")
    gate.set()
    assert harness.step(sid, "next").revision == 1
