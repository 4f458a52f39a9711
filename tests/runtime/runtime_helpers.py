"""Helpers for the runtime tests: test graphs, a flaky store, waiting on a condition.

A module of its own (not conftest.py) so that tests/actors and tests/runtime,
whose directories are both on sys.path, can each import their own helpers.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from flow import Context, FunctionTask, Graph, GraphBuilder, NextAction, Session, TaskResult
from flow.stores import SqliteStore
from runtime import StoreUnavailable


def counting_graph(
    graph_id: str,
    *,
    blocking: bool = True,
    sleep: float = 0.0,
    is_async: bool = False,
    gate: threading.Event | None = None,
) -> Graph:
    """One task that counts inputs in ``count``, records them in ``log`` and waits.

    ``sleep`` makes it slow (``asyncio.sleep`` when ``is_async``); ``gate`` makes it
    wait until the event is set; an input of ``"boom"`` makes it raise ValueError.
    """

    def apply(ctx: Context) -> TaskResult:
        if ctx.input == "boom":
            ctx.set("count", -1000)  # must never be seen: the step is rolled back
            raise ValueError("boom requested")
        ctx.set("count", int(ctx.get("count", 0)) + 1)
        log = list(ctx.get("log", []))
        log.append(ctx.input)
        ctx.set("log", log)
        return TaskResult(f"ok {ctx.input}", NextAction.WaitForInput)

    if is_async:

        async def run_async(ctx: Context) -> TaskResult:
            if sleep:
                await asyncio.sleep(sleep)
            return apply(ctx)

        task = FunctionTask("count", run_async)
    else:

        def run_sync(ctx: Context) -> TaskResult:
            if gate is not None:
                gate.wait(30)
            if sleep:
                time.sleep(sleep)
            return apply(ctx)

        task = FunctionTask("count", run_sync, blocking=blocking)
    return GraphBuilder(graph_id).add_task(task).build()


def ending_graph(graph_id: str = "ender") -> Graph:
    """Two tasks: ``ask`` waits for input once, then ``end`` completes the session."""

    def ask(ctx: Context) -> TaskResult:
        if ctx.input is None:
            return TaskResult("say something", NextAction.WaitForInput)
        return TaskResult("bye", NextAction.ContinueAndExecute)

    def end(ctx: Context) -> TaskResult:
        return TaskResult("done", NextAction.End)

    return (
        GraphBuilder(graph_id)
        .add_task(FunctionTask("ask", ask, blocking=False))
        .add_task(FunctionTask("end", end, blocking=False))
        .add_edge("ask", "end")
        .build()
    )


class FlakyStore:
    """A SQLite store whose saves can fail on demand.

    ``fail_saves(n, hold=event)``: the next ``n`` saves fail with ``StoreUnavailable``
    without reaching SQLite; with ``hold``, every save from now on waits until the
    event is set and is then delivered in order (the failures first, the others
    passed to SQLite), so the actor can run later steps on top of a snapshot whose
    commit will fail. ``raise_on_save(n)``: the next ``n`` calls of ``save`` raise
    RuntimeError (a store bug: an unexpected exception inside the actor).
    """

    def __init__(self, path: Path) -> None:
        self.inner = SqliteStore(path)
        self._lock = threading.Lock()
        self._fail = 0
        self._raise = 0
        self._held: list[tuple[Session, int | None, Future[None], bool]] | None = None
        self.saves = 0

    def fail_saves(self, n: int, hold: threading.Event | None = None) -> None:
        with self._lock:
            self._fail = n
            if hold is not None:
                held: list[tuple[Session, int | None, Future[None], bool]] = []
                self._held = held
                threading.Thread(target=self._deliver, args=(hold, held), daemon=True).start()

    def raise_on_save(self, n: int) -> None:
        with self._lock:
            self._raise = n

    def _deliver(self, hold: threading.Event, held: list[Any]) -> None:
        hold.wait(30)
        with self._lock:
            self._held = None
            queued = list(held)
        for session, expected, future, failing in queued:
            if failing:
                future.set_exception(
                    StoreUnavailable(f"injected commit failure of revision {session.revision}")
                )
                continue
            inner = self.inner.save(session, expected)
            inner.add_done_callback(lambda f, out=future: _copy_outcome(f, out))

    def save(self, session: Session, expected_revision: int | None) -> Future[None]:
        with self._lock:
            self.saves += 1
            if self._raise:
                self._raise -= 1
                raise RuntimeError("store bug: save raised")
            failing = self._fail > 0
            if failing:
                self._fail -= 1
            if self._held is not None:
                future: Future[None] = Future()
                self._held.append((session, expected_revision, future, failing))
                return future
        if not failing:
            return self.inner.save(session, expected_revision)
        future = Future()
        future.set_exception(
            StoreUnavailable(f"injected commit failure of revision {session.revision}")
        )
        return future

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _copy_outcome(source: Future[None], target: Future[None]) -> None:
    error = source.exception()
    if error is None:
        target.set_result(None)
    else:
        target.set_exception(error)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true (for state with no event to wait on)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.005)  # polling a condition with a deadline: no event exposes it
