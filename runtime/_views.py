"""Frozen views the Runtime hands out: sessions, live actors, statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from actors._timer_stats import TimerFigures
from flow.stores._protocol import QuarantinedRow, SessionPage

__all__ = [
    "LiveSessionInfo",
    "RuntimeStats",
    "SessionMetadataView",
    "SessionView",
    "StoredPage",
    "TimerView",
]


@dataclass(frozen=True, slots=True)
class StoredPage:
    """What the store holds: how many sessions, one page of them, the latest quarantined rows."""

    count: int
    page: SessionPage
    quarantined: list[QuarantinedRow]


@dataclass(frozen=True, slots=True)
class SessionMetadataView:
    """A session's metadata (times are UNIX epoch seconds)."""

    owner: str
    created_at: float
    last_accessed: float
    request_count: int
    client_addr: str | None
    expires_at: float | None
    members: dict[str, str] = field(default_factory=dict)
    """Users the owner shared the session with, and their access (``read``/``write``)."""


@dataclass(frozen=True, slots=True)
class TimerView:
    """A pending timer of a session: its name, when it is due (UNIX seconds), and
    whether it is a ``wake_after`` (which an input arriving first cancels)."""

    name: str
    due: float
    wake: bool = False


@dataclass(frozen=True, slots=True)
class SessionView:
    """A read-only copy of a session as of one revision."""

    session_id: str
    graph: str
    current_task: str
    status: str
    context: dict[str, Any]
    chat_history: list[dict[str, str]]
    metadata: SessionMetadataView
    revision: int
    status_message: str | None = None
    timers: tuple[TimerView, ...] = ()
    graph_version: str = ""


@dataclass(frozen=True, slots=True)
class LiveSessionInfo:
    """One live session actor, as the admin shell shows it.

    ``state`` is the actor's state: ``idle`` (nothing to do), ``running`` (a step
    is in progress), ``stopping``, ``hibernated`` (no actor: the session kept as
    bytes until its next request). ``reason`` says why it is live (``activated by
    step``...), as ``inspect``'s ``live_reason``.
    """

    session_id: str
    graph: str
    owner: str
    state: str
    status: str
    current_task: str
    mailbox_depth: int
    idle_seconds: float
    request_count: int
    snapshot_bytes: int
    revision: int
    graph_version: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RuntimeStats:
    """Counters since the runtime opened, and the store's counts.

    ``mailbox_total`` and ``mailbox_max`` are the requests waiting on (or being run
    by) the live session actors, in all and in the busiest one. ``hibernated`` counts
    the live sessions kept as encoded bytes without an actor (within ``live``);
    ``hibernations`` and ``wakes`` how often one was put to sleep and woken.
    """

    live: int
    activations: int
    passivations: int
    evictions: int
    restarts: int
    expirations: int
    steps: int
    errors: int
    stored: int
    quarantined: int
    mailbox_total: int = 0
    mailbox_max: int = 0
    timers: TimerFigures | None = None
    hibernated: int = 0
    hibernations: int = 0
    wakes: int = 0
