"""RuntimeConfig: every tunable of a runtime, with its documented default."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Durability", "RuntimeConfig"]

Durability = Literal["fsync", "commit", "passivate"]


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """How a runtime behaves. Times are seconds.

    Attributes:
        idle_timeout: passivate a live session idle this long (300).
        wait_timeout: passivate a session waiting for input this long (120).
        max_live: most live session actors; least recently used are evicted (100,000).
        session_ttl: a session expires this long after its last use (7 days).
        max_pending: per-session mailbox bound; beyond it ``SessionBusy`` (64).
        step_timeout: a step's deadline; past it ``StepTimeout`` (300).
        max_restarts: restarts allowed within ``restart_window`` before a session
            is marked ``error`` (3).
        restart_window: the window for ``max_restarts`` (60).
        dispatcher_threads: worker threads shared by all actors (4).
        task_threads: threads that run blocking sync tasks (32).
        durability: ``fsync`` (acknowledge after an fsynced commit), ``commit``
            (after a commit, no fsync) or ``passivate`` (write only on
            passivation and shutdown) (``fsync``).
        max_chain: most tasks one step may run through ContinueAndExecute or
            run mode before it fails with a clear error (1,000).
        sweep_interval: how often idle, waiting and expired sessions are swept (1).
        sweep_batch: most expired sessions removed per sweep (1,000).
        drain_timeout: how long close() waits for running steps (30).
        store: ``None`` for SQLite at ``<data_dir>/sessions.db``, or a URL
            (``sqlite:///path``, ``memory://``, ``redis://host:port/db``).
        lease_ttl: Redis lease lifetime; a dead daemon's sessions move after it (10).
        node_id: this process's id in a cluster (generated when empty).
        advertise: the base URL other daemons forward requests to ("").
        history_retention: how far back time travel reaches: revisions (``"1000"``),
            an age (``"90s"``, ``"30m"``, ``"12h"``, ``"7d"``) or ``"all"`` (``"1000"``).
        clock: the wall clock, replaceable in tests (``time.time``).
    """

    idle_timeout: float = 300.0
    wait_timeout: float = 120.0
    max_live: int = 100_000
    session_ttl: float = 7 * 24 * 3600.0
    max_pending: int = 64
    step_timeout: float = 300.0
    max_restarts: int = 3
    restart_window: float = 60.0
    dispatcher_threads: int = 4
    task_threads: int = 32
    durability: Durability = "fsync"
    max_chain: int = 1000
    sweep_interval: float = 1.0
    sweep_batch: int = 1000
    drain_timeout: float = 30.0
    store: str | None = None
    lease_ttl: float = 10.0
    node_id: str = ""
    advertise: str = ""
    history_retention: str = "1000"
    clock: Callable[[], float] = field(default=time.time, compare=False)
