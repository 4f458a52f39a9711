"""Regression tests of issue 12's two defects: the supervisor waited, and expiry raced a step.

1. With one task thread held by a stuck task, a sweep that expires a session
   used to wait on that thread (the deletes borrowed the user task pool), and
   every activation queued behind the sweep.
2. The TTL sweep read a live session's expiry outside the index lock and then
   removed it unconditionally, so a step acknowledged in between was deleted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from flow import Context, FunctionTask, Graph, GraphBuilder, NextAction, TaskResult
from flow._errors import SessionNotFound, StepTimeout
from runtime import Runtime
from runtime.testing import ManualClock

OWNER = "owner"
TTL = 100.0


def _stuck_graph(gate: threading.Event, started: threading.Event) -> Graph:
    """One blocking task that holds its task thread until ``gate`` is set."""

    def apply(ctx: Context) -> TaskResult:
        started.set()
        gate.wait(60)
        return TaskResult("released", NextAction.WaitForInput)

    return GraphBuilder("stuck").add_task(FunctionTask("hold", apply)).build()


def _cold_activation_seconds(runtime: Runtime, session_id: str) -> float:
    """How long the first step of a session that is not live takes."""
    sent = time.monotonic()
    runtime.step(session_id, "hello", owner=OWNER)
    return time.monotonic() - sent


def test_a_stuck_task_delays_neither_a_sweep_nor_another_sessions_activation(
    open_runtime: Callable[..., Runtime], clock: ManualClock
) -> None:
    gate = threading.Event()
    started = threading.Event()
    runtime = open_runtime(
        [_stuck_graph(gate, started)],
        task_threads=1,
        step_timeout=0.2,
        session_ttl=TTL,
        clock=clock,
    )
    try:
        doomed = runtime.create_session("echo", owner=OWNER)
        clock.advance(TTL + 1)  # ``doomed`` (never stepped) has expired
        stuck = runtime.create_session("stuck", owner=OWNER)
        cold = [runtime.create_session("echo", owner=OWNER) for _ in range(6)]
        baseline = min(_cold_activation_seconds(runtime, sid) for sid in cold[:3])

        with pytest.raises(StepTimeout):
            runtime.step(stuck, "x", owner=OWNER)
        assert started.is_set()  # the only task thread is now held by the stuck task

        with ThreadPoolExecutor(1) as pool:
            sweep = pool.submit(runtime.sweep_now)
            delayed = min(_cold_activation_seconds(runtime, sid) for sid in cold[3:])
            sweep.result(timeout=10)
        assert delayed - baseline < 0.1, (baseline, delayed)
        with pytest.raises(SessionNotFound):
            runtime.get_session(doomed, owner=OWNER)
    finally:
        gate.set()


ROUNDS = 1000


@pytest.mark.slow
def test_expiring_while_a_step_lands_loses_no_acknowledged_step(
    open_runtime: Callable[..., Runtime], clock: ManualClock
) -> None:
    runtime = open_runtime(session_ttl=TTL, clock=clock, durability="commit")
    barrier = threading.Barrier(2)

    def step(session_id: str) -> bool:
        barrier.wait(5)
        try:
            runtime.step(session_id, "landing", owner=OWNER)
        except SessionNotFound:
            return False
        return True

    def sweep() -> None:
        barrier.wait(5)
        runtime.sweep_now()

    lost: list[str] = []
    acknowledged = 0
    with ThreadPoolExecutor(2) as pool:
        for _ in range(ROUNDS):
            sid = runtime.create_session("echo", owner=OWNER)
            runtime.step(sid, "first", owner=OWNER)  # live, expiring at now + TTL
            clock.advance(TTL + 1)
            landed = pool.submit(step, sid)
            swept = pool.submit(sweep)
            swept.result(10)
            if not landed.result(10):
                continue  # expired before the step: refused, not lost
            acknowledged += 1
            try:
                runtime.get_session(sid, owner=OWNER)
            except SessionNotFound:
                lost.append(sid)
    assert not lost, f"{len(lost)} of {acknowledged} acknowledged steps were deleted"
    assert acknowledged > 0
