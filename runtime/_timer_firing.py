"""TimerFiring: finds due timers in the store's index and steps their sessions.

Threads: one thread of its own ("actorflow-timers") reads the store's due-time
index (``SessionStore.due_timers``) and sends each due session a timer step
through the runtime's normal path (``RuntimeCore.submit_step``: the live
index, or an activation by the supervisor, which loads a passivated session on
its store pool). It never touches an actor and the supervisor never waits on
it. The steps' answers come back on whatever thread answers a step (an actor's
turn, the store writer): they only update this object's own fields under its
lock. ``alarm`` (any thread: a session actor whose step set a timer) wakes the
thread early for a nearer due time.

Exactly once: the session, not this object, says which timer is due; the timer
step removes the timer in the same commit as the step it causes, so a firing
that is repeated (after a crash, by a second daemon) finds nothing due and does
nothing. A failed timer step leaves the timer pending; it is retried with
exponential backoff (1 s doubling to 5 minutes, on the runtime's clock). In a
Redis cluster a session live on another daemon is refused here
(``LeaseHeldElsewhere``) and fired there; a passivated one is fired by
whichever daemon takes its lease first.

Late timers (after a restart, or a burst) fire at once in due order, at most
``rate`` per second and ``rate`` in flight.

Reads: each round reads at most ``BATCH`` index entries, and no more than the
rate limit's tokens and free slots let it start (and a few), in due order, after a
cursor (the due time up to which every entry read was started or is in flight),
so that a burst does not re-read its thousands of in-flight entries each time an
answer comes back. The cursor is dropped (the next read starts from the
earliest entry) when a retry comes due, when an alarm names a due time at or
before it (a session whose fired timer left another one due, a timer set already
due) and, when other daemons share the store (a cluster), at least once per
poll interval for the timers they set.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from flow._errors import ActorflowError, SessionNotFound
from flow._logging import get_logger
from flow.stores._lease import LeaseHeldElsewhere
from flow.stores._protocol import SessionStore

__all__ = ["TimerFiring"]

_log = get_logger("actorflow.timers")

MAX_BACKOFF = 300.0
"""Longest wait (seconds) before retrying a timer whose step failed."""
BATCH = 1000
"""Most index entries read per round."""

TICK = 0.005
"""Shortest sleep (seconds) before a timer due later: the most it adds to lateness."""

FORGET_RETRY_AFTER = 3600.0
"""Seconds after its retry time a retry entry whose timer is gone is forgotten."""


class _Round(NamedTuple):
    """What one read of the index started: steps, sessions skipped as in flight,
    whether the rate limit stopped it, and whether the read was a full batch."""

    started: int
    skipped: int
    limited: bool
    full: bool


#: ``submit(session_id, reply)``: send a timer step to the session (never blocks).
Submit = Callable[[str, Callable[[Any], None]], None]


class TimerFiring:
    """The runtime's timer firing (see the module docstring).

    Args:
        store: the store whose due-time index is read.
        submit: sends a timer step to a session.
        clock: the runtime's clock (epoch seconds).
        rate: most timer steps started per second, and most in flight.
        poll_interval: longest sleep between two reads of the index (timers
            set by another daemon are found within it).
        shared: other daemons write the index too (a cluster): each poll interval
            a round reads from the earliest entry again, for timers they set before
            the cursor. Alone, the runtime hears of each such timer (an alarm) or
            retry itself, and a burst's in-flight entries are read once, not once
            per poll interval as well (up to ``rate`` rows a second again).
    """

    def __init__(
        self,
        store: SessionStore,
        submit: Submit,
        clock: Callable[[], float],
        *,
        rate: int,
        poll_interval: float,
        shared: bool = False,
    ) -> None:
        self._store = store
        self._submit = submit
        self._clock = clock
        self._rate = rate
        self._poll_interval = poll_interval
        self._shared = shared
        self._cond = threading.Condition()
        self._in_flight: dict[str, float] = {}  # session id -> the due time it fires for
        self._retry: dict[str, tuple[int, float]] = {}  # session id -> (failures, not before)
        self._alarm: float | None = None  # the nearest due time alarmed and not yet reached
        self._wake_at = 0.0  # when (runtime clock) the thread means to look again
        self._woken = False
        self._awaiting = False  # the thread waits for answers of due sessions in flight
        self._tokens = float(rate)
        self._room = max(1, min(BATCH, rate) // 4)  # free slots that wake a full window
        self._cursor: float | None = None  # every entry due up to it started or in flight
        self._scanned = -math.inf  # time.monotonic() of the last read from the earliest entry
        self._scanned_at = -math.inf  # the runtime's clock at that read
        self._resets = 0  # alarms that dropped the cursor (a round started before keeps off it)
        self._refilled = time.monotonic()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="actorflow-timers", daemon=True)

    def start(self) -> None:
        """Start the firing thread."""
        self._thread.start()

    def close(self) -> None:
        """Stop the thread (timer steps in flight are answered by the runtime's close)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)

    def alarm(self, due: float) -> None:
        """A session's earliest timer is now due at ``due``: wake early if that is nearer."""
        with self._cond:
            if self._alarm is None or due < self._alarm:
                self._alarm = due
            if self._cursor is not None and due <= self._cursor:
                self._cursor = None  # read from the earliest entry again
                self._resets += 1
            if due < self._wake_at:
                self._woken = True
                self._cond.notify_all()

    def fire_now(self, timeout: float = 10.0) -> int:
        """Fire every timer due now and wait for their steps; how many steps it started.

        For tests and ``Runtime.fire_due_timers``: with a ``ManualClock``, advance
        the clock, then call this instead of waiting for the thread. It goes on
        until a round finds nothing more to fire (a session with several due
        timers fires them one step each, soonest first).
        """
        started = 0
        deadline = time.monotonic() + timeout
        while True:
            count = self._round(ignore_rate=True).started
            started += count
            with self._cond:
                while self._in_flight and not self._stopped:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"timer steps still running after {timeout:g} s")
                    self._cond.wait(left)
            if count == 0:
                return started

    def in_flight(self) -> int:
        """Timer steps started and not yet answered."""
        with self._cond:
            return len(self._in_flight)

    # --- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            awaiting = False
            try:
                done = self._round(ignore_rate=False)
                if done.limited:
                    wait = 0.01  # the rate limit's next token, or a slot in flight
                elif done.full and done.started:
                    wait = 0.0  # more are due than one read returns
                else:
                    wait = self._sleep_for()
                # due sessions still in flight: their answers move the index on
                awaiting = done.limited or done.skipped > 0
            except ActorflowError as exc:  # the store is unreachable: try again later
                _log.warning("timer_poll_failed", error=type(exc).__name__, detail=str(exc))
                wait = self._poll_interval
            except Exception:
                _log.exception("timer_poll_crashed")
                wait = self._poll_interval
            with self._cond:
                if self._stopped:
                    return
                self._wake_at = self._clock() + wait
                if wait > 0 and not self._woken:
                    self._awaiting = awaiting
                    self._cond.wait(wait)
                    self._awaiting = False
                self._woken = False
                self._wake_at = 0.0

    def _sleep_for(self) -> float:
        """Seconds until the next timer comes due (or a retry), at most the poll interval."""
        now = self._clock()
        upcoming = self._store.due_timers(math.inf, limit=1, since=now)
        candidates = [upcoming[0].due] if upcoming else []
        with self._cond:
            for sid, (_, not_before) in list(self._retry.items()):
                if not_before > now:
                    candidates.append(not_before)
                elif not_before < now - FORGET_RETRY_AFTER:
                    del self._retry[sid]  # its timer went away (cancelled, deleted)
            alarm = self._alarm
            if alarm is not None and alarm <= now:
                self._alarm = alarm = None  # reached: the index holds it by now
            if alarm is not None:
                candidates.append(alarm)
        if not candidates:
            return self._poll_interval
        # at least TICK: timers due close together fire together, not one wake-up each
        return min(self._poll_interval, max(TICK, min(candidates) - now))

    def _since(self, now: float, *, full: bool) -> tuple[float | None, int]:
        """Where this round reads the index from (None: the earliest entry), and the
        alarms' resets so far."""
        tick = time.monotonic()
        with self._cond:
            recent = not self._shared or tick - self._scanned < self._poll_interval
            if not full and self._cursor is not None and recent:
                last = self._scanned_at  # a retry that came due since the last full read
                if not any(last < nb <= now for _, nb in self._retry.values()):
                    return self._cursor, self._resets
            self._cursor = None
            self._scanned = tick
            self._scanned_at = now
            return None, self._resets

    def _round(self, *, ignore_rate: bool) -> _Round:
        """Start a timer step for each session due now that is not in flight or backing off."""
        now = self._clock()
        since, resets = self._since(now, full=ignore_rate)
        limit = BATCH
        if not ignore_rate:
            with self._cond:  # read no more than the window and the tokens allow (and a few)
                self._refill()
                room = min(self._rate - len(self._in_flight), int(self._tokens))
                limit = min(BATCH, max(0, room) + 16)
        due = self._store.due_timers(now, limit=limit, since=since)
        skipped = 0
        limited = False
        handled = since  # every entry read up to this due time started or is in flight
        starting: list[str] = []
        with self._cond:  # one hold for the whole read; the steps are sent after it
            in_flight = self._in_flight
            retries = self._retry
            for entry in due:
                if self._stopped:
                    break
                sid = entry.session_id
                if sid in in_flight:
                    skipped += 1
                    handled = entry.due
                    continue
                retry = retries.get(sid)
                if retry is not None and retry[1] > now:
                    continue  # not handled: a full read finds it when it is due
                if not ignore_rate and not self._take_token():
                    limited = True
                    break
                in_flight[sid] = entry.due
                handled = entry.due
                starting.append(sid)
        for sid in starting:
            self._submit(sid, self._answer_for(sid))
        started = len(starting)
        if handled is not None:
            with self._cond:
                if self._resets == resets and (self._cursor is None or handled > self._cursor):
                    self._cursor = math.nextafter(handled, -math.inf)  # ties are read again
        return _Round(started, skipped, limited, len(due) == limit)

    def _take_token(self) -> bool:
        """Under the lock: one token of the rate limit, and a slot in flight."""
        if len(self._in_flight) >= self._rate:
            return False
        self._refill()
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _refill(self) -> None:
        """Under the lock: add the tokens earned since the last refill (at most ``rate``)."""
        tick = time.monotonic()
        self._tokens = min(float(self._rate), self._tokens + (tick - self._refilled) * self._rate)
        self._refilled = tick

    def _answer_for(self, session_id: str) -> Callable[[Any], None]:
        def answered(outcome: Any) -> None:  # any thread: the step's answer
            self._answered(session_id, outcome)

        return answered

    def _answered(self, session_id: str, outcome: Any) -> None:
        with self._cond:
            self._in_flight.pop(session_id, None)
            if not isinstance(outcome, BaseException) or isinstance(outcome, SessionNotFound):
                self._retry.pop(session_id, None)
            elif isinstance(outcome, LeaseHeldElsewhere):
                # live on another daemon, which fires it: look again after a poll
                self._retry[session_id] = (0, self._clock() + self._poll_interval)
            else:
                failures = self._retry.get(session_id, (0, 0.0))[0] + 1
                backoff = min(MAX_BACKOFF, 2.0 ** (failures - 1))
                self._retry[session_id] = (failures, self._clock() + backoff)
            if self._awaiting and len(self._in_flight) <= self._rate - self._room:
                self._woken = True  # (a full window waits for room for a batch)
                self._cond.notify_all()
            elif not self._in_flight:
                self._cond.notify_all()  # fire_now waits for the last answer
        if isinstance(outcome, BaseException) and not isinstance(
            outcome, SessionNotFound | LeaseHeldElsewhere
        ):
            _log.warning(
                "timer_step_failed",
                session_id=session_id,
                error=type(outcome).__name__,
                detail=str(outcome),
            )
