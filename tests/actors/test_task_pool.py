"""TaskPool: a finished piece of work is not kept alive by the thread that ran it."""

from __future__ import annotations

import gc
import time
import weakref

from actors._task_pool import TaskPool

WAIT = 10.0  # seconds: an upper bound for things that take milliseconds


class Payload:
    """Stands for what a task is handed and returns (a session, a loaded batch)."""


def test_the_argument_and_result_of_finished_work_are_not_held_by_its_thread() -> None:
    pool = TaskPool(1, name="test-pool")
    try:
        given = Payload()
        future = pool.submit(lambda _: Payload(), given)
        made = future.result(timeout=WAIT)
        assert isinstance(made, Payload)
        refs = [weakref.ref(given), weakref.ref(made)]
        del given, made, future
        deadline = time.monotonic() + WAIT
        while any(r() is not None for r in refs) and time.monotonic() < deadline:
            gc.collect()
            time.sleep(0.01)  # the thread clears its locals just after settling the future
        assert [r() for r in refs] == [None, None]
    finally:
        pool.shutdown(wait=True)
