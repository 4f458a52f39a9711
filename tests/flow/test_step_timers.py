"""Timers in the engine: what a step sets, fires and records (flow._timers)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flow import (
    Context,
    GraphBuilder,
    InvalidInput,
    NextAction,
    TaskFailed,
    TaskResult,
    decode,
    encode,
    new_session,
    step,
    task,
)
from flow._record import encode_record, replay
from flow._timers import MAX_TIMER_PAYLOAD, MAX_TIMERS, WAKE_AFTER


@task("t", blocking=False)
def _t(ctx: Context) -> TaskResult:
    order = ctx.input if ctx.timer is None and isinstance(ctx.input, dict) else {}
    for name, (after, payload) in order.get("schedule", {}).items():
        ctx.schedule(after, input=payload, name=name)
    if order.get("end"):
        return TaskResult("bye", NextAction.End)
    wake = order.get("wake")
    return TaskResult(
        ctx.timer, NextAction.WaitForInput, wake_after=None if wake is None else timedelta(0, wake)
    )


GRAPH = GraphBuilder("g").add_task(_t).build()


def test_wake_after_needs_wait_for_input() -> None:
    with pytest.raises(InvalidInput, match="WaitForInput"):
        TaskResult("x", NextAction.Continue, wake_after=timedelta(seconds=1))


def test_timers_are_replayed_from_the_record_and_kept_by_the_snapshot() -> None:
    session = new_session(GRAPH, owner="o", now=0.0)
    new, _ = step(GRAPH, session, {"schedule": {"a": (5, {"k": [1]})}, "wake": 3}, now=10.0)
    assert [(t.name, t.due) for t in new.timers] == [(WAKE_AFTER, 13.0), ("a", 15.0)]
    assert decode(encode(new)).timers == new.timers
    assert new.record is not None
    replayed = decode(encode(session))
    replay(replayed, [encode_record(new.record)])  # what a load runs
    assert replayed.timers == new.timers


def test_a_timer_step_sees_its_name_and_payload_and_records_what_fired() -> None:
    session = new_session(GRAPH, owner="o", now=0.0)
    session, _ = step(GRAPH, session, {"schedule": {"a": (5, "payload")}}, now=0.0)
    new, result = step(GRAPH, session, "ignored", now=5.0, timer="a")
    assert result.response == "a"
    assert new.timers == ()
    assert new.record is not None
    assert new.record.fired == "a"
    # a timer's payload is not a user's input
    assert new.context.get("user_input") == session.context.get("user_input")
    with pytest.raises(InvalidInput, match="no pending timer"):
        step(GRAPH, new, None, now=6.0, timer="a")


def test_completing_a_session_drops_its_timers() -> None:
    session = new_session(GRAPH, owner="o", now=0.0)
    session, _ = step(GRAPH, session, {"schedule": {"a": (5, None)}}, now=0.0)
    new, _ = step(GRAPH, session, {"end": True}, now=1.0)
    assert new.timers == ()


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"x": (1, "y" * (MAX_TIMER_PAYLOAD + 1))}, "bytes"),
        ({WAKE_AFTER: (1, None)}, "reserved"),
        ({f"n{i}": (1, None) for i in range(MAX_TIMERS + 1)}, "at most"),
    ],
)
def test_a_bad_timer_fails_the_step_and_leaves_the_session(
    schedule: dict[str, tuple[float, object]], message: str
) -> None:
    session = new_session(GRAPH, owner="o", now=0.0)
    with pytest.raises(TaskFailed, match=message):
        step(GRAPH, session, {"schedule": schedule}, now=0.0)
    assert session.timers == ()


def test_scheduling_outside_a_step_is_refused() -> None:
    with pytest.raises(InvalidInput, match="while a step runs"):
        Context().schedule(5)


def test_compaction_on_bytes_keeps_the_pending_timers() -> None:
    from flow._rebase import rebased
    from flow.stores._log import rebuild

    session = new_session(GRAPH, owner="o", now=0.0)
    base = encode(session)
    records = []
    for now, order in enumerate([{"schedule": {"a": (10, "x")}}, {"wake": 5}, "hello"]):
        session, _ = step(GRAPH, session, order, now=float(now))
        assert session.record is not None
        records.append(encode_record(session.record))
    assert rebased(base, records) == encode(rebuild(base, records))
    assert decode(rebased(base, records)).timers == session.timers
