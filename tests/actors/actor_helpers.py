"""Helpers for the actor tests: a harness running session actors and a supervisor.

A module of its own (not conftest.py) so that tests/actors and tests/runtime,
whose directories are both on sys.path, can each import their own helpers.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from actors import ActorServices, Dispatcher, LiveIndex, Settings, SupervisorActor, Timers
from actors.messages import Activate, Shutdown, Step
from flow import Context, FunctionTask, Graph, GraphBuilder, NextAction, TaskResult, new_session
from flow._versions import GraphRegistry
from flow.stores import SessionStore


class Waiter:
    """A reply callable backed by a future."""

    def __init__(self) -> None:
        self.future: Future[Any] = Future()

    def __call__(self, outcome: Any) -> None:
        if self.future.done():
            return
        if isinstance(outcome, BaseException):
            self.future.set_exception(outcome)
        else:
            self.future.set_result(outcome)

    def wait(self, timeout: float = 10.0) -> Any:
        return self.future.result(timeout)


HARNESSES: list[Harness] = []
"""Every harness not yet closed (the autouse fixture closes them)."""


class Harness:
    """A supervisor, a dispatcher and the shared services, on a real SQLite store."""

    def __init__(self, store: SessionStore, graphs: list[Graph], settings: Settings) -> None:
        self.store = store
        self.clock_now = time.time()
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._loop_thread.start()
        self.dispatcher = Dispatcher(2, name="test-actors")
        self.pool = ThreadPoolExecutor(8)
        self.store_pool = ThreadPoolExecutor(2)
        self.timers = Timers()
        self.services = ActorServices(
            settings=settings,
            store=store,
            graphs=GraphRegistry(graphs),
            index=LiveIndex(),
            dispatcher=self.dispatcher,
            task_pool=self.pool,
            loop=self.loop,
            timers=self.timers,
            clock=lambda: self.clock_now,
            store_pool=self.store_pool,
        )
        self.supervisor = self.dispatcher.spawn(SupervisorActor, self.services)
        self.services.supervisor = self.supervisor
        self.closed = False

    @property
    def index(self) -> LiveIndex:
        return self.services.index

    def create(self, graph_id: str = "echo") -> str:
        graph = self.services.graphs.get(graph_id)
        session = new_session(graph, owner="owner", now=self.clock_now)
        self.store.save(session, expected_revision=None).result(10)
        return session.session_id

    def send_step(self, session_id: str, input: Any = None) -> Waiter:
        waiter = Waiter()
        message = Step(session_id, input, "step", waiter)
        entry = self.index.send(
            session_id,
            message,
            now=self.clock_now,
            step=True,
            max_pending=self.services.settings.max_pending,
        )
        if entry is None:
            self.supervisor.tell(Activate(session_id, None, message))
        return waiter

    def step(self, session_id: str, input: Any = None) -> Any:
        return self.send_step(session_id, input).wait()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        done = Waiter()
        self.supervisor.tell(Shutdown(done))
        done.wait()
        self.dispatcher.shutdown(timeout=10)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.store_pool.shutdown(wait=False, cancel_futures=True)
        self.timers.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._loop_thread.join(5)
        self.loop.close()
        self.store.close()


def gated_graph(
    graph_id: str,
    gate: threading.Event,
    *,
    is_async: bool = False,
    started: threading.Event | None = None,
) -> Graph:
    """One blocking task that waits for ``gate`` (or an async one), records inputs and waits;
    ``started`` is set when a step's task begins (before it waits)."""

    def apply(ctx: Context) -> TaskResult:
        log = list(ctx.get("log", []))
        log.append(ctx.input)
        ctx.set("log", log)
        return TaskResult(f"ok {ctx.input}", NextAction.WaitForInput)

    if is_async:

        async def run_async(ctx: Context) -> TaskResult:
            if started is not None:
                started.set()
            await asyncio.to_thread(gate.wait, 30)
            return apply(ctx)

        return GraphBuilder(graph_id).add_task(FunctionTask("gated", run_async)).build()

    def run(ctx: Context) -> TaskResult:
        if started is not None:
            started.set()
        gate.wait(30)
        return apply(ctx)

    return GraphBuilder(graph_id).add_task(FunctionTask("gated", run)).build()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true (for actor state with no event to wait on)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.005)  # polling a condition with a deadline: no event exposes it
