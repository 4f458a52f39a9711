"""RuntimeConfig: every tunable of a runtime, with its documented default.

Each field is a setting (runtime/_settings.py): ``actorflowd`` takes every one of
them as a flag, an environment variable and a TOML key, with the help line
written here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal

import msgspec

from flow._errors import InvalidInput
from flow.stores._log import LogPolicy
from runtime._settings import setting

__all__ = ["Durability", "RuntimeConfig"]

Durability = Literal["fsync", "commit", "passivate"]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
Count = Annotated[int, msgspec.Meta(ge=1)]


def _retention(text: str) -> str:
    try:
        LogPolicy.parse(text)
    except InvalidInput as exc:
        raise ValueError(str(exc)) from None
    return text.strip().lower()


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
            (``sqlite:///path``, ``memory://``, ``redis://host:port/db``,
            ``postgresql://user@host:port/db``).
        lease_ttl: Redis or PostgreSQL lease lifetime; a dead daemon's sessions move after it (10).
        node_id: this process's id in a cluster (generated when empty).
        advertise: the base URL other daemons forward requests to ("").
        history_retention: how far back time travel reaches: revisions (``"1000"``),
            an age (``"90s"``, ``"30m"``, ``"12h"``, ``"7d"``) or ``"all"`` (``"1000"``).
        max_session_bytes: most bytes a session's encoded state (context and chat
            window) may take; a step past it fails with ``SessionTooLarge`` (8 MiB).
        max_sessions_per_user: most sessions one owner may hold; past it creating
            or forking one fails with ``SessionQuotaExceeded`` (0: no limit) (10,000).
        stream_buffer: most events one stream or tail reader may have waiting; a
            reader further behind gets ``overflow`` and is dropped (1,000).
        max_tails_per_session: most tails (``tail``, ``/events``) open on one
            session; one more raises ``TooManyWatchers`` (HTTP 429) (16).
        max_tails: most tails open in all (10,000).
        timer_fire_rate: most durable timers fired per second (and in flight);
            late timers after a restart fire in due order at this rate (10,000).
        timer_poll_interval: longest wait between two reads of the store's
            timer index: timers set by another daemon fire at most this late (1).
        clock: the wall clock, replaceable in tests (``time.time``).
    """

    idle_timeout: Seconds = setting(300.0, "passivate a live session idle this long")
    wait_timeout: Seconds = setting(120.0, "passivate a session waiting for input this long")
    max_live: Count = setting(
        100_000, "most live session actors; the least recently used are passivated beyond it"
    )
    session_ttl: Seconds = setting(
        7 * 24 * 3600.0, "a session expires this long after its last use", shown="604800 (7 days)"
    )
    max_pending: Count = setting(64, "per-session mailbox bound; beyond it 429 (SessionBusy)")
    step_timeout: Seconds = setting(
        300.0, "a step's deadline; past it 504 (StepTimeout), the session unchanged"
    )
    max_restarts: Annotated[int, msgspec.Meta(ge=0)] = setting(
        3, "restarts of a crashed session actor within --restart-window before it is marked error"
    )
    restart_window: Seconds = setting(60.0, "the window for --max-restarts")
    dispatcher_threads: Count = setting(4, "worker threads shared by all session actors")
    task_threads: Count = setting(32, "threads that run blocking (sync) tasks")
    durability: Durability = setting(
        "fsync",
        "fsync, commit or passivate: a step is acknowledged after an fsynced commit, "
        "after a commit, or writes wait for passivation",
        metavar="MODE",
    )
    max_chain: Count = setting(1000, "most tasks one step may run (ContinueAndExecute, run mode)")
    sweep_interval: Seconds = setting(1.0, "how often idle, waiting and expired sessions are swept")
    sweep_batch: Count = setting(1000, "most expired sessions removed per sweep")
    drain_timeout: Seconds = setting(30.0, "on shutdown, how long running steps may take to finish")
    store: str | None = setting(
        None,
        "store URL: sqlite:///path, memory://, redis://host:port/db or "
        "postgresql://user@host:port/db",
        metavar="URL",
        shown="SQLite at DATA_DIR/sessions.db",
    )
    lease_ttl: Seconds = setting(
        10.0,
        "Redis or PostgreSQL session lease lifetime: a dead daemon's sessions move after at "
        "most this long",
    )
    node_id: str = setting(
        "", "this process's id in a cluster", metavar="ID", shown="generated at start"
    )
    advertise: str = setting(
        "",
        "the base URL other daemons forward requests to (Redis clusters)",
        metavar="URL",
        shown="http://HOST:PORT",
    )
    history_retention: str = setting(
        "1000",
        "how far back time travel reaches: revisions (1000), an age (90s, 30m, 12h, 7d) or all; "
        "compaction drops older records (their chat messages are kept)",
        metavar="RETENTION",
        parse=_retention,
    )
    max_session_bytes: Count = setting(
        8 * 1024 * 1024,
        "most bytes (8388608: 8 MiB) a session's encoded state may take; "
        "a step past it is 413 (SessionTooLarge) and changes nothing",
        shown="8388608 (8 MiB)",
    )
    max_sessions_per_user: Annotated[int, msgspec.Meta(ge=0)] = setting(
        10_000,
        "most sessions one user may hold (0: no limit); "
        "creating or forking past it is 403 (SessionQuotaExceeded)",
    )
    stream_buffer: Count = setting(
        1000,
        "most events a stream or /events reader may have waiting; "
        "one further behind gets an overflow event and is disconnected",
    )
    max_tails_per_session: Count = setting(
        16, "most live tails (/events, shell tail) on one session; one more is 429"
    )
    max_tails: Count = setting(10_000, "most live tails in all; one more is 429")
    timer_fire_rate: Count = setting(
        10_000, "most durable timers fired per second; late ones fire in due order at this rate"
    )
    timer_poll_interval: Seconds = setting(
        1.0, "longest wait between reads of the store's timer index (timers set by other daemons)"
    )
    clock: Callable[[], float] = field(default=time.time, compare=False)
