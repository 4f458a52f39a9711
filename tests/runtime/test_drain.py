"""Draining: the drain clock starts at begin_drain, and a stuck task never blocks exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from runtime_helpers import counting_graph, wait_until

from actors._task_pool import TaskPool
from runtime import Runtime, RuntimeClosed

Opener = Callable[..., Runtime]


def test_steps_still_running_drain_timeout_after_begin_drain_are_cut_off(
    open_runtime: Opener,
) -> None:
    gate = threading.Event()
    rt = open_runtime([counting_graph("gated", gate=gate)], drain_timeout=0.2)
    sid = rt.create_session("gated", owner="a")
    with ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(rt.step, sid, "stuck")
        wait_until(lambda: rt.inspect(sid)["state"] == "running")
        rt.begin_drain()
        with pytest.raises(RuntimeClosed, match="drain timeout"):
            stuck.result(10)  # answered without close() being called
        gate.set()


def test_a_process_with_a_stuck_task_exits_after_close() -> None:
    child = textwrap.dedent(
        """
        import sys, tempfile, threading
        from flow import FunctionTask, GraphBuilder
        from runtime import Runtime, RuntimeConfig

        started = threading.Event()
        def stuck(ctx):
            started.set()
            threading.Event().wait()  # never returns
        graph = GraphBuilder("stuck").add_task(FunctionTask("stuck", stuck)).build()
        rt = Runtime.open(tempfile.mkdtemp(), [graph], RuntimeConfig(drain_timeout=0.2))
        sid = rt.create_session("stuck", owner="a")
        threading.Thread(target=lambda: rt.step(sid), daemon=True).start()
        started.wait(10)
        rt.close()
        print("closed", flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "closed" in done.stdout


def test_the_task_pool_runs_work_and_cancels_what_has_not_started() -> None:
    pool = TaskPool(1)
    gate = threading.Event()
    first = pool.submit(gate.wait, 10)
    queued = pool.submit(lambda: "never")
    pool.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    gate.set()
    assert first.result(10) is True
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(lambda: None)
