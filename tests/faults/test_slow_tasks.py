"""Slow and stuck tasks: a deadline gives 504 without blocking others; shutdown is bounded.

The ``sleepy`` and ``stuck`` graphs come from fault_graphs.py; they mark
themselves started (and ``sleepy`` finished) with files the test waits on.
"""

from __future__ import annotations

import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fault_harness import StartDaemon, assert_problem, create, step, stored_counts, wait_until

STEP_TIMEOUT = 1.5
SLEEP = 5.0
DRAIN_TIMEOUT = 2.0
SHUTDOWN_MARGIN = 10.0  # closing the runtime and the interpreter on a busy 2-core machine
ECHO_STEPS = 10


@pytest.mark.slow
def test_task_past_step_timeout_gives_504_and_other_sessions_keep_stepping(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    started_dir = tmp_path / "started"
    finished_dir = tmp_path / "finished"
    started_dir.mkdir()
    finished_dir.mkdir()
    daemon = start_daemon("--step-timeout", str(STEP_TIMEOUT))
    with daemon.client() as client, ThreadPoolExecutor(1) as pool:
        echo_id = create(client)
        slow_id = create(
            client,
            "sleepy",
            sleep=SLEEP,
            started_dir=str(started_dir),
            finished_dir=str(finished_dir),
        )

        def slow_step() -> httpx.Response:
            with daemon.client() as own:
                return step(own, slow_id, "slow")

        sent = time.monotonic()
        slow = pool.submit(slow_step)
        wait_until((started_dir / slow_id).exists, 10.0, "the sleepy task to start")

        for i in range(ECHO_STEPS):
            response = step(client, echo_id, i)
            assert response.status_code == 200, response.text
            assert response.json()["revision"] == i + 1
        assert not slow.done(), "the echo steps waited for the sleepy session"

        answer = slow.result(timeout=SLEEP + 10.0)
        elapsed = time.monotonic() - sent
        body = assert_problem(answer, 504, "step-timeout")
        assert body["session_id"] == slow_id
        assert STEP_TIMEOUT <= elapsed < SLEEP, f"the 504 came after {elapsed:.2f} s"

        wait_until((finished_dir / slow_id).exists, SLEEP + 10.0, "the sleepy task to finish")
        late = client.get(f"/v1/sessions/{slow_id}")
        assert late.status_code == 200, late.text
        assert late.json()["revision"] == 0, "the late result of a timed-out step was applied"
        assert "count" not in late.json()["context"]
        assert client.get(f"/v1/sessions/{echo_id}").json()["context"]["count"] == ECHO_STEPS


@pytest.mark.slow
def test_stuck_task_does_not_hold_shutdown_past_the_drain_timeout(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    started_dir = tmp_path / "started"
    started_dir.mkdir()
    daemon = start_daemon("--drain-timeout", str(DRAIN_TIMEOUT))
    with daemon.client() as client, ThreadPoolExecutor(1) as pool:
        echo_id = create(client)
        for i in range(3):
            assert step(client, echo_id, i).status_code == 200
        stuck_id = create(client, "stuck", started_dir=str(started_dir))

        def stuck_step() -> int | str:
            with daemon.client(timeout=DRAIN_TIMEOUT + SHUTDOWN_MARGIN + 30.0) as own:
                try:
                    return step(own, stuck_id, "never answered").status_code
                except httpx.TransportError as exc:
                    return type(exc).__name__

        stuck = pool.submit(stuck_step)
        wait_until((started_dir / stuck_id).exists, 10.0, "the stuck task to start")

        assert daemon.process is not None
        signalled = time.monotonic()
        daemon.signal(signal.SIGTERM)
        try:
            status = daemon.process.wait(DRAIN_TIMEOUT + SHUTDOWN_MARGIN)
        except subprocess.TimeoutExpired:
            daemon.kill()
            raise AssertionError(
                f"actorflowd still running {DRAIN_TIMEOUT + SHUTDOWN_MARGIN} s after SIGTERM "
                f"with a stuck task (drain timeout {DRAIN_TIMEOUT} s):\n{daemon.log_tail()}"
            ) from None
        took = time.monotonic() - signalled
        print(f"\nshutdown with a stuck task: exit {status} after {took:.2f} s")
        assert stuck.result(timeout=30.0) != 200
    assert stored_counts(daemon.db_path, [echo_id, stuck_id]) == {echo_id: 3, stuck_id: 0}


@pytest.mark.slow
def test_step_cut_off_by_the_drain_timeout_is_answered_with_a_problem(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    started_dir = tmp_path / "started"
    started_dir.mkdir()
    daemon = start_daemon("--drain-timeout", str(DRAIN_TIMEOUT))
    with daemon.client() as client, ThreadPoolExecutor(1) as pool:
        slow_id = create(client, "sleepy", sleep=SLEEP, started_dir=str(started_dir))

        def slow_step() -> httpx.Response:
            with daemon.client() as own:
                return step(own, slow_id, "cut off")

        slow = pool.submit(slow_step)
        wait_until((started_dir / slow_id).exists, 10.0, "the sleepy task to start")
        daemon.signal(signal.SIGTERM)
        answer = slow.result(timeout=SLEEP + SHUTDOWN_MARGIN)
    assert answer.status_code in (503, 504), answer.text
    assert answer.headers["content-type"].startswith("application/problem+json"), (
        f"a step cut off by the drain got {answer.status_code} "
        f"{answer.headers.get('content-type')}: {answer.text!r}"
    )
