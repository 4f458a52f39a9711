"""StepRunner: where a session actor's step runs, and its deadline.

Threads: `StepRunner.run` is called in the owning actor's turn. An inline step
(a non-blocking graph) runs right there; otherwise a sync step runs on the user
task pool and an async one on the runtime's event loop. The completion and the
deadline reach the actor only as messages (``TaskDone``, ``StepDeadline``) sent
by free callbacks over the actor's ref; the runner keeps no state of its own
(the actor holds the returned `RunningStep`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pykka

from actors._event_hub import StepSink
from actors._services import ActorServices
from actors._timers import Timer
from actors.messages import Step, StepDeadline, TaskDone
from flow._graph import Graph
from flow._session import Session
from flow._step import StepResult, astep, step
from flow._task import is_async_task

__all__ = ["RunningStep", "StepRunner", "tell"]


@dataclass(slots=True)
class RunningStep:
    """A step running off the actor (task pool or event loop)."""

    seq: int
    step: Step
    lineage: int
    future: Future[tuple[Session, StepResult]]
    timer: Timer | None
    started: float
    events: StepSink | None

    def ended(self) -> None:
        """The step is over for the actor: its tasks' later emits go nowhere."""
        if self.timer is not None:
            self.timer.cancel()
        if self.events is not None:
            self.events.close()

    def abandon(self) -> None:
        """Cancel its deadline and its future (a thread already running it finishes)."""
        self.ended()
        self.future.cancel()


def tell(ref: pykka.ActorRef[Any], message: Any) -> None:
    """Send ``message`` to ``ref``; a stopped actor's late message is dropped (any thread)."""
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        return


class StepRunner:
    """Runs one session's steps inline, on the task pool or on the event loop.

    Args:
        services: the runtime's shared resources.
        graph: the session's graph.
        ref: the owning actor's ref (completions and deadlines go there).
    """

    __slots__ = ("_graph", "_inline", "_ref", "_services")

    def __init__(self, services: ActorServices, graph: Graph, ref: pykka.ActorRef[Any]) -> None:
        self._services = services
        self._graph = graph
        self._inline = services.runs_inline(graph)
        self._ref = ref

    @property
    def graph(self) -> Graph:
        """The graph (version) the steps run on."""
        return self._graph

    def run(
        self,
        session: Session,
        message: Step,
        now: float,
        seq: int,
        lineage: int,
        timer: str | None = None,
    ) -> tuple[Session, StepResult] | RunningStep:
        """Run ``message`` on ``session``: its outcome if inline, else the running step.

        ``timer`` names the pending timer the step fires (``step(timer=...)``).

        Raises:
            BaseException: an inline step's failure, as the step raised it.
        """
        services = self._services
        graph = self._graph
        settings = services.settings
        task = graph.tasks.get(session.current_task)
        events = services.events.sink(session.session_id, message.stream)
        call = functools.partial(
            step,
            graph,
            session,
            message.input,
            mode=message.mode,
            now=now,
            max_chain=settings.max_chain,
            run_async=services.run_async,
            events=events,
            timer=timer,
            ttl=settings.session_ttl,
        )
        if self._inline or task is None:
            try:
                return call()
            finally:
                if events is not None:
                    events.close()
        future: Future[tuple[Session, StepResult]]
        if is_async_task(task):
            future = asyncio.run_coroutine_threadsafe(
                astep(
                    graph,
                    session,
                    message.input,
                    mode=message.mode,
                    now=now,
                    max_chain=settings.max_chain,
                    run_blocking=functools.partial(_run_blocking, services.task_pool),
                    events=events,
                    timer=timer,
                    ttl=settings.session_ttl,
                ),
                services.loop,
            )
        else:
            future = services.task_pool.submit(call)
        ref = self._ref
        deadline = services.timers.call_later(
            settings.step_timeout, functools.partial(tell, ref, StepDeadline(seq))
        )
        future.add_done_callback(lambda f: tell(ref, TaskDone(seq, f)))
        return RunningStep(seq, message, lineage, future, deadline, time.monotonic(), events)


async def _run_blocking(pool: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """On the event loop: run a blocking call of an async task on the task pool."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(pool, functools.partial(fn, *args))
