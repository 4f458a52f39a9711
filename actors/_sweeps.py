"""What a sweep decides, as pure functions from live-index entries to decisions.

The supervisor applies the decisions in its turn; each removal re-checks its
condition under the index lock (`still_idle`, `expired_and_unused`), so a
request that lands between the decision and the removal keeps its session.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from actors._live_index import LiveEntry
from actors._services import Settings
from flow._session import SessionStatus

__all__ = [
    "IdlePassivation",
    "expired_and_unused",
    "idle_horizon",
    "idle_passivations",
    "still_idle",
]

_WAITING = SessionStatus.WAITING_FOR_INPUT.value
_COMPLETED = SessionStatus.COMPLETED.value


@dataclass(frozen=True, slots=True)
class IdlePassivation:
    """Passivate ``session_id`` for ``reason`` if it is still unused since ``last_used``."""

    session_id: str
    last_used: float
    reason: str

    def condition(self) -> Callable[[LiveEntry], bool]:
        """The removal predicate, evaluated under the index lock."""
        return functools.partial(still_idle, self.last_used)


def idle_horizon(now: float, settings: Settings) -> float:
    """Entries used at or after this time cannot be idle long enough yet."""
    return now - min(settings.wait_timeout, settings.idle_timeout)


def idle_passivations(
    entries: Iterable[LiveEntry], now: float, settings: Settings
) -> list[IdlePassivation]:
    """Which of ``entries`` (least recently used first) to passivate, and why."""
    decisions: list[IdlePassivation] = []
    for entry in entries:
        idle = now - entry.last_used
        if entry.status == _COMPLETED:
            reason = "completed"
        elif entry.status == _WAITING and idle > settings.wait_timeout:
            reason = "waiting for input"
        elif idle > settings.idle_timeout:
            reason = "idle"
        else:
            continue
        decisions.append(IdlePassivation(entry.session_id, entry.last_used, reason))
    return decisions


def still_idle(last_used: float, entry: LiveEntry) -> bool:
    """Whether ``entry`` has no request in hand and none since ``last_used`` (under the lock)."""
    return entry.pending == 0 and entry.last_used == last_used


def expired_and_unused(now: float, entry: LiveEntry) -> bool:
    """Whether ``entry`` expired before ``now`` with no request in hand (under the lock).

    A step in hand (``pending``) refreshes the expiry when it is adopted, and
    its answer (which lowers ``pending`` under the same lock) comes after the
    actor wrote the new expiry, so a step acknowledged before the removal is
    never followed by the delete.
    """
    return entry.pending == 0 and entry.expires_at is not None and entry.expires_at < now
