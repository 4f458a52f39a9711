"""Durable timers in a runtime: wake_after, named timers, cancel, restarts, deletes,
expiry, retries, exactly once. ManualClock-driven: the test advances the clock and
fires what is due (``Runtime.fire_due_timers``), nothing sleeps."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from runtime_helpers import FlakyStore, wait_until
from timer_graph import FAILURES, GRAPH

from runtime import Runtime, StoreUnavailable
from runtime.testing import ManualClock, crash_session, open_test_runtime, wait_passivated


def _fired(rt: Runtime, sid: str) -> list[str]:
    fired: list[str] = rt.get_session(sid).context.get("fired", [])
    return fired


def _waiting(rt: Runtime, order: dict[str, object]) -> str:
    """A session that got ``order`` as its first input, then passivated."""
    sid = rt.create_session("timers", owner="u")
    rt.step(sid, order)
    assert rt.passivate(sid)
    wait_passivated(rt, sid)
    return sid


def test_wake_after_wakes_a_passivated_session_when_no_input_came(tmp_path: Path) -> None:
    clock = ManualClock()
    with open_test_runtime(tmp_path, graphs=[GRAPH], clock=clock) as rt:
        sid = _waiting(rt, {"wake": 60})
        clock.advance(59)
        rt.fire_due_timers()
        assert _fired(rt, sid) == []

        clock.advance(1)
        rt.fire_due_timers()
        view = rt.get_session(sid)
        assert view.context["fired"] == ["wake_after"]
        assert view.context["payloads"] == [None]
        assert view.timers == ()
        assert rt.due_timers() == []


def test_an_input_arriving_first_cancels_wake_after(tmp_path: Path) -> None:
    clock = ManualClock()
    with open_test_runtime(tmp_path, graphs=[GRAPH], clock=clock) as rt:
        sid = _waiting(rt, {"wake": 60})
        clock.advance(30)
        rt.step(sid, "a reply")
        clock.advance(600)
        rt.fire_due_timers()
        assert _fired(rt, sid) == []
        assert rt.get_session(sid).timers == ()
        assert rt.stats().timers is not None
        assert rt.stats().timers.cancelled == 1


def test_named_timers_fire_whatever_happens_soonest_first_with_their_payload(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    with open_test_runtime(tmp_path, graphs=[GRAPH], clock=clock) as rt:
        sid = _waiting(rt, {"schedule": {"late": 20, "soon": 10}})
        rt.step(sid, "an input does not cancel named timers")
        clock.advance(25)
        rt.fire_due_timers()
        view = rt.get_session(sid)
        assert view.context["fired"] == ["soon", "late"]
        assert view.context["payloads"] == ["soon", "late"]
        figures = rt.stats().timers
        assert figures is not None
        assert (figures.set, figures.fired, figures.late) == (2, 2, 2)


def test_cancel_schedule_drops_only_that_timer(tmp_path: Path) -> None:
    clock = ManualClock()
    with open_test_runtime(tmp_path, graphs=[GRAPH], clock=clock) as rt:
        sid = _waiting(rt, {"schedule": {"a": 10, "b": 10}})
        rt.step(sid, {"cancel": "a"})
        assert [t.name for t in rt.get_session(sid).timers] == ["b"]
        clock.advance(10)
        rt.fire_due_timers()
        assert _fired(rt, sid) == ["b"]


def test_timers_survive_a_restart_and_late_ones_fire_at_once(tmp_path: Path) -> None:
    clock = ManualClock()
    with open_test_runtime(tmp_path, graphs=[GRAPH], clock=clock) as rt:
        sids = [_waiting(rt, {"schedule": {"t": 10 + i}}) for i in range(3)]
    clock.advance(3600)  # the runtime was down past every due time
    with open_test_runtime(tmp_path, graphs=[GRAPH], clock=clock) as rt:
        assert [d.session_id for d in rt.due_timers()] == sids  # due order
        rt.fire_due_timers()
        assert [_fired(rt, sid) for sid in sids] == [["t"]] * 3
        figures = rt.stats().timers
        assert figures is not None
        assert figures.late == 3
        assert figures.lateness[-1] == (float("inf"), 3)


def test_deleting_a_session_cancels_its_timers(tmp_path: Path) -> None:
    clock = ManualClock()
    with open_test_runtime(tmp_path, graphs=[GRAPH], clock=clock) as rt:
        sid = _waiting(rt, {"wake": 10})
        rt.delete_session(sid)
        assert rt.due_timers() == []
        clock.advance(20)
        assert rt.fire_due_timers() == 0


def test_an_expired_session_never_fires_and_its_expiry_drops_its_timers(tmp_path: Path) -> None:
    clock = ManualClock()
    with open_test_runtime(tmp_path, graphs=[GRAPH], clock=clock, session_ttl=60.0) as rt:
        sid = _waiting(rt, {"wake": 120})
        clock.advance(130)
        rt.fire_due_timers()  # due, but the session expired first: nothing runs
        assert rt.stats().timers.fired == 0  # type: ignore[union-attr]
        rt.sweep_now()
        assert rt.due_timers() == []
        assert rt.list_sessions(owner="u").items == []
        del sid


def test_a_failed_timer_step_keeps_its_timer_and_is_retried_after_a_backoff(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    with open_test_runtime(tmp_path, graphs=[GRAPH], clock=clock) as rt:
        sid = _waiting(rt, {"schedule": {"t": 10}, "fail": 1})
        clock.advance(10)
        rt.fire_due_timers()  # it fails: the session stays as it was
        assert [t.name for t in rt.get_session(sid).timers] == ["t"]
        assert FAILURES[sid] == 0
        assert rt.fire_due_timers() == 0  # backing off, on the runtime's clock
        assert _fired(rt, sid) == []
        clock.advance(1)
        rt.fire_due_timers()
        assert _fired(rt, sid) == ["t"]
        assert rt.get_session(sid).timers == ()


def test_a_timer_fired_twice_at_once_runs_once(tmp_path: Path) -> None:
    clock = ManualClock()
    with open_test_runtime(tmp_path, graphs=[GRAPH], clock=clock) as rt:
        sid = _waiting(rt, {"schedule": {"t": 10}})
        clock.advance(10)
        answers: list[object] = []
        done = threading.Event()

        def answered(outcome: object) -> None:
            answers.append(outcome)
            if len(answers) == 2:
                done.set()

        core = rt._core
        core._fire_timer(sid, answered)  # as two daemons' firings racing would
        core._fire_timer(sid, answered)
        assert done.wait(10)
        assert _fired(rt, sid) == ["t"]
        assert sum(a is None for a in answers) == 1


def test_inspect_lists_pending_timers_live_and_passivated(tmp_path: Path) -> None:
    clock = ManualClock()
    with open_test_runtime(tmp_path, graphs=[GRAPH], clock=clock) as rt:
        sid = _waiting(rt, {"schedule": {"t": 10}, "wake": 5})
        expected = [
            {"name": "wake_after", "due": clock() + 5, "wake": True},
            {"name": "t", "due": clock() + 10, "wake": False},
        ]
        assert rt.inspect(sid)["timers"] == expected
        rt.step(sid, "hello")  # live again; the input cancels the wake_after
        assert rt.inspect(sid)["timers"] == expected[1:]


@pytest.mark.parametrize("order", [{"schedule": {"t": -1}}, {"wake": 400 * 86400}])
def test_a_timer_out_of_range_fails_the_step_and_changes_nothing(
    tmp_path: Path, order: dict[str, object]
) -> None:
    from runtime import TaskFailed

    with open_test_runtime(tmp_path, graphs=[GRAPH], clock=ManualClock()) as rt:
        sid = rt.create_session("timers", owner="u")
        with pytest.raises(TaskFailed, match="between 0 and 366 days"):
            rt.step(sid, order)
        assert rt.get_session(sid).revision == 0
        assert rt.due_timers() == []


def test_timer_counters_count_only_steps_that_committed(
    open_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    store = FlakyStore(tmp_path / "flaky.db")
    rt = open_runtime([GRAPH], store=store, clock=ManualClock())
    sid = rt.create_session("timers", owner="u")
    store.fail_saves(1)
    with pytest.raises(StoreUnavailable):
        rt.step(sid, {"schedule": {"a": 60}})
    figures = rt.stats().timers
    assert figures is not None
    assert figures.set == 0  # the step that set it was never committed
    rt.step(sid, {"schedule": {"a": 60}})
    figures = rt.stats().timers
    assert figures is not None
    assert figures.set == 1
    store.inner.close()


def test_a_session_marked_error_drops_its_timers_and_a_rollback_restores_them(
    open_runtime: Callable[..., Runtime],
) -> None:
    clock = ManualClock()
    rt = open_runtime([GRAPH], clock=clock, max_restarts=2, restart_window=60)
    sid = rt.create_session("timers", owner="u")
    set_at = rt.step(sid, {"schedule": {"remind": 60}}).revision
    for n in range(1, 3):
        assert crash_session(rt, sid)
        wait_until(
            lambda n=n: (
                rt.stats().restarts == n and sid in {i.session_id for i in rt.live_sessions()}
            ),
            timeout=30,
        )
    assert crash_session(rt, sid)
    wait_passivated(rt, sid)
    view = rt.get_session(sid)
    assert view.status == "error"
    # no step of an error session runs: its timers would be retried forever
    assert view.timers == ()
    assert rt.due_timers() == []
    clock.advance(120)
    assert rt.fire_due_timers() == 0
    figures = rt.stats().timers
    assert figures is not None
    assert figures.cancelled == 1

    rt.rollback(sid, revision=set_at)  # the operator revives it: its timers come back
    assert [t.name for t in rt.get_session(sid).timers] == ["remind"]
    assert rt.fire_due_timers() == 1
    assert _fired(rt, sid) == ["remind"]


def test_passivate_durability_commits_the_steps_that_change_timers(
    open_runtime: Callable[..., Runtime],
) -> None:
    clock = ManualClock()
    rt = open_runtime([GRAPH], clock=clock, durability="passivate")
    sid = rt.create_session("timers", owner="u")
    rt.step(sid, "no timer: kept in memory until passivation")
    rt.step(sid, {"schedule": {"remind": 60}})
    # the index entry is durable at once, with the session that holds the timer
    assert [d.session_id for d in rt.due_timers()] == [sid]
    rt.step(sid, "no timer again")
    before = rt.get_session(sid).revision
    assert crash_session(rt, sid)  # the actor restarts from what was committed
    wait_until(lambda: rt.stats().restarts == 1 and rt.inspect(sid) is not None)
    view = rt.get_session(sid)
    assert view.revision == before - 1  # the last step was not written (the mode's deal)
    assert [t.name for t in view.timers] == ["remind"]  # the timer's step was
    clock.advance(60)
    assert rt.fire_due_timers() == 1
    assert _fired(rt, sid) == ["remind"]
    assert rt.due_timers() == []  # the firing step moved the index entry at once too
    figures = rt.stats().timers
    assert figures is not None
    assert (figures.set, figures.fired) == (1, 1)


def test_a_timer_step_is_counted_before_its_caller_is_answered(tmp_path: Path) -> None:
    """Whoever the answer wakes (``fire_due_timers``, a test, a metrics scrape after a
    GET) sees the timer counted: the count runs on the commit, before the answer."""
    clock = ManualClock()
    with open_test_runtime(tmp_path, graphs=[GRAPH], clock=clock) as rt:
        sid = _waiting(rt, {"schedule": {"soon": 10}})
        clock.advance(15)
        counted_when_answered: list[int] = []
        answered = threading.Event()

        def reply(outcome: object) -> None:  # on the store writer's thread
            counted_when_answered.append(rt._core.services.timer_stats.snapshot().fired)
            answered.set()

        rt._core.submit_step(sid, None, "step", "enqueue", None, reply, fire_timer=True)
        assert answered.wait(10)
        assert counted_when_answered == [1]
        assert _fired(rt, sid) == ["soon"]
