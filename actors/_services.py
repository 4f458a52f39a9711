"""What every session actor and the supervisor share: settings and resources.

The runtime builds one ``ActorServices`` and hands it to the supervisor, which
hands it to every session actor it starts. ``actors`` cannot import ``runtime``,
so the tunables are copied here from ``RuntimeConfig``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import pykka

from actors._event_hub import EventHub
from actors._live_index import LiveIndex
from actors._timer_stats import TimerStats
from actors._timers import Timers
from flow._graph import Graph
from flow._idempotency import KeyRetention
from flow._logging import get_logger
from flow._versions import GraphRegistry
from flow.stores._protocol import SessionStore

if TYPE_CHECKING:
    from actors.dispatcher import Dispatcher

__all__ = ["ActorServices", "Counters", "Settings"]


@dataclass(frozen=True, slots=True)
class Settings:
    """The tunables session actors and the supervisor use (see ``RuntimeConfig``)."""

    idle_timeout: float = 300.0
    wait_timeout: float = 120.0
    max_live: int = 100_000
    session_ttl: float = 7 * 24 * 3600.0
    max_pending: int = 64
    step_timeout: float = 300.0
    max_restarts: int = 3
    restart_window: float = 60.0
    durability: Literal["fsync", "commit", "passivate"] = "fsync"
    max_chain: int = 1000
    sweep_batch: int = 1000
    max_session_bytes: int = 8 * 1024 * 1024
    hibernate_after: float = 30.0
    key_retention: KeyRetention = field(default_factory=KeyRetention)


class Counters:
    """Event counters since the runtime opened (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.activations = 0
        self.passivations = 0
        self.evictions = 0
        self.restarts = 0
        self.expirations = 0
        self.hibernations = 0
        self.wakes = 0

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name``."""
        with self._lock:
            setattr(self, name, getattr(self, name) + n)


@dataclass(slots=True, eq=False)
class ActorServices:
    """Shared resources of one runtime's actors.

    Attributes:
        settings: the tunables.
        store: where snapshots go.
        graphs: the graphs served, by id and version (replaced whole on a reload).
        index: the live index (the supervisor writes membership).
        dispatcher: runs every actor.
        task_pool: runs blocking sync tasks.
        loop: the runtime's event loop (on its own thread) for async tasks.
        timers: step deadlines and the sweep.
        clock: wall clock (epoch seconds), replaceable in tests.
        counters: activation/passivation/... counts.
        supervisor: the supervisor's ref (set once it has started).
        store_pool: the supervisor's own small pool for store I/O (reads,
            expiry scans and deletes, mark-error saves), so that it never waits
            on the store; never the user task pool.
        log: the logger every actor logs with (bound when the runtime opens, so
            that a level filter configured by the entry point makes filtered
            calls nearly free).
        events: who watches which session (streams and tails), thread-safe.
        timer_stats: durable timers set, fired, late and cancelled.
        timer_alarm: told (any thread) the due time of a session's earliest
            timer when a step changed its timers, so that the runtime's timer
            firing wakes early for a nearer one (None: nobody listens).
        grant_of: in a cluster, the epoch of the lease this node holds on a
            session now (None: no lease); None outside a cluster. Any thread.
    """

    settings: Settings
    store: SessionStore
    graphs: GraphRegistry
    index: LiveIndex
    dispatcher: Dispatcher
    task_pool: Executor
    loop: asyncio.AbstractEventLoop
    timers: Timers
    clock: Callable[[], float]
    store_pool: Executor
    counters: Counters = field(default_factory=Counters)
    supervisor: pykka.ActorRef[Any] | None = None
    log: Any = field(default_factory=lambda: get_logger("actorflow"))
    events: EventHub = field(default_factory=lambda: EventHub(1000))
    timer_stats: TimerStats = field(default_factory=TimerStats)
    timer_alarm: Callable[[float], None] | None = None
    grant_of: Callable[[str], int | None] | None = None
    _inline: dict[tuple[str, str], tuple[Graph, bool]] = field(default_factory=dict)

    def runs_inline(self, graph: Graph) -> bool:
        """Whether ``graph``'s steps may run on a dispatcher thread (cached per version).

        A reload may bring a new graph object for a version already served: the
        cache holds the object it was computed for.
        """
        key = (graph.id, graph.version)
        cached = self._inline.get(key)
        if cached is None or cached[0] is not graph:
            cached = self._inline[key] = (graph, graph.nonblocking)
        return cached[1]

    def run_async(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` on the runtime's loop and wait for it (from a task-pool thread).

        Raises:
            RuntimeError: called on that loop's own thread (it would wait forever).
        """
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is self.loop:
            coro.close()
            raise RuntimeError("an async task cannot be waited for on the loop that runs it")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def tell_supervisor(self, message: Any) -> bool:
        """Send ``message`` to the supervisor; False if it has stopped (the runtime closed)."""
        supervisor = self.supervisor
        if supervisor is None:
            return False
        try:
            supervisor.tell(message)
        except pykka.ActorDeadError:
            return False
        return True
