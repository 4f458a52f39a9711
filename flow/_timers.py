"""Durable timers: a session's pending wake-ups, part of its state.

A task sets them during a step: ``TaskResult(..., wake_after=...)`` (with
``WaitForInput``: wake the session if no input arrives first) and
``ctx.schedule(after=..., input=..., name=...)`` (a named timer that fires
whatever happens; ``ctx.cancel_schedule(name)`` drops it). They are a field of
the session (``Session.timers``), so they are saved in the same commit as the
step that set them: the step's record carries the session's whole set of
pending timers whenever the step changed it (at most ``MAX_TIMERS`` of them,
so a record never grows with the session's length), and a snapshot holds them.

A timer fires as a step of its own (``step(..., timer=name)``): the task sees
``ctx.timer == name`` and ``ctx.input`` is the timer's payload, and the timer is
gone from the session that step commits: a timer fires exactly once, in the
commit of the step it causes. The stores keep a due-time index beside the
sessions (``SessionStore.due_timers``) from which the runtime finds what to fire.
"""

from __future__ import annotations

import math
import uuid
from datetime import timedelta
from typing import Any

import msgpack
import msgspec

from flow._context import check_value
from flow._errors import InvalidInput

__all__ = [
    "MAX_AFTER",
    "MAX_TIMERS",
    "MAX_TIMER_PAYLOAD",
    "WAKE_AFTER",
    "PendingTimer",
    "TimerBook",
    "check_after",
    "next_due",
]

MAX_TIMERS = 100
"""Most pending timers one session may hold."""
MAX_TIMER_PAYLOAD = 64 * 1024
"""Largest payload (its msgpack bytes) a timer may carry."""
MAX_AFTER = timedelta(days=366)
"""The furthest ahead a timer may be set."""
WAKE_AFTER = "wake_after"
"""The name of the timer ``TaskResult(wake_after=...)`` sets (``ctx.timer`` when it fires)."""


class PendingTimer(msgspec.Struct, frozen=True):
    """One pending timer of a session.

    Attributes:
        name: unique within the session (``WAKE_AFTER`` for a ``wake_after``).
        due: when it fires, UNIX seconds (the runtime's clock).
        input: the payload the step it causes gets as ``ctx.input``.
        wake: True for a ``wake_after`` (an input arriving first cancels it).
    """

    name: str
    due: float
    input: Any = None
    wake: bool = False

    def encoded(self) -> list[Any]:
        """The msgpack-ready form (snapshots and step records)."""
        return [self.name, self.due, self.input, self.wake]

    @classmethod
    def decoded(cls, value: Any) -> PendingTimer:
        """The timer ``encoded`` made."""
        name, due, payload, wake = value
        if not isinstance(name, str):
            raise TypeError(f"timer name is a {type(name).__name__}, not a str")
        return cls(name, float(due), payload, bool(wake))


def check_after(after: timedelta | float | int, what: str) -> float:
    """``after`` as seconds, checked to be in [0, ``MAX_AFTER``].

    Raises:
        InvalidInput: not a timedelta or a number of seconds, or out of range.
    """
    if isinstance(after, timedelta):
        seconds = after.total_seconds()
    elif isinstance(after, int | float) and not isinstance(after, bool):
        seconds = float(after)
    else:
        raise InvalidInput(f"{what} must be a timedelta or seconds, got {type(after).__name__}")
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_AFTER.total_seconds():
        raise InvalidInput(f"{what} must be between 0 and {MAX_AFTER.days} days, got {after!r}")
    return seconds


def next_due(timers: tuple[PendingTimer, ...]) -> float | None:
    """The earliest due time among ``timers`` (None: there are none)."""
    if len(timers) < 2:  # most sessions hold none or one: no generator for them
        return timers[0].due if timers else None
    return min([t.due for t in timers])


def _due_order(timer: PendingTimer) -> tuple[float, str]:
    return (timer.due, timer.name)


class TimerBook:
    """A step's working set of a session's pending timers (``ctx.schedule`` writes here).

    Args:
        timers: the session's pending timers before the step.
        now: the step's time, UNIX seconds.
    """

    __slots__ = ("changed", "now", "timers")

    def __init__(self, timers: tuple[PendingTimer, ...], now: float) -> None:
        self.timers = {t.name: t for t in timers}
        self.now = now
        self.changed = False

    def schedule(self, after: timedelta | float | int, input: Any, name: str | None) -> str:
        """Set (or replace) the timer ``name``; a fresh name when None. Returns the name.

        Raises:
            InvalidInput: a bad name, delay or payload, or the session would hold
                more than ``MAX_TIMERS`` timers.
        """
        seconds = check_after(after, "schedule(after=...)")
        if name is None:
            name = f"timer-{uuid.uuid4().hex[:12]}"
        elif not isinstance(name, str) or not name or len(name) > 200:
            raise InvalidInput(f"a timer name must be a str of 1 to 200 characters, got {name!r}")
        elif name == WAKE_AFTER:
            raise InvalidInput(f"the timer name {WAKE_AFTER!r} is reserved for wake_after")
        check_value(f"timer {name!r} input", input)
        size = len(msgpack.packb(input, use_bin_type=True))
        if size > MAX_TIMER_PAYLOAD:
            raise InvalidInput(
                f"timer {name!r}: its input is {size} bytes, more than {MAX_TIMER_PAYLOAD}"
            )
        self.set(PendingTimer(name, self.now + seconds, input))
        return name

    def set(self, timer: PendingTimer) -> None:
        """Add or replace ``timer``.

        Raises:
            InvalidInput: the session would hold more than ``MAX_TIMERS`` timers.
        """
        if timer.name not in self.timers and len(self.timers) >= MAX_TIMERS:
            raise InvalidInput(f"a session may hold at most {MAX_TIMERS} pending timers")
        self.timers[timer.name] = timer
        self.changed = True

    def cancel(self, name: str) -> bool:
        """Drop the timer ``name``; False if there was none."""
        if self.timers.pop(name, None) is None:
            return False
        self.changed = True
        return True

    def clear(self) -> None:
        """Drop every timer (the session completed)."""
        if self.timers:
            self.timers.clear()
            self.changed = True

    def pending(self) -> tuple[PendingTimer, ...]:
        """The timers now, soonest first."""
        if len(self.timers) < 2:
            return tuple(self.timers.values())
        return tuple(sorted(self.timers.values(), key=_due_order))
