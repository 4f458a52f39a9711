"""EventHub: who watches which session, and the bounded buffers their events wait in.

Threads: everything here is thread-safe by construction and is no actor's
field. Tasks publish from wherever they run (a dispatcher worker, the task
pool, the event loop, fan-out threads); the store writer publishes
``committed``; readers take from their own thread or event loop. One lock
guards the channels and the buffers, held only to append or take: nobody ever
waits on a reader. A reader's buffer is bounded (events and bytes); a reader
that falls behind is sent ``overflow``, dropped, and counted.

Two kinds of subscriber:

- a **stream** (``Runtime.stream``, SSE on the step route) is attached to its
  own ``Step`` message: it gets that step's events only, and ends with its
  ``committed`` or ``error``;
- a **tail** (``GET /v1/sessions/{id}/events``, the shell's ``tail``) gets
  every event of the session from the next one on, until it is closed.

A step nobody watches costs one dict lookup (`EventHub.sink` returns None when
the runtime has no subscriber at all): no event is built.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from flow._errors import TooManyWatchers
from flow._events import Committed, Overflow, StepError, StepEvent
from flow._step import StepResult

__all__ = ["DEFAULT_BUFFER_BYTES", "EventHub", "StepSink", "StreamStats", "Subscriber"]

#: How many bytes of payload (token text, packed event data) one reader may hold.
DEFAULT_BUFFER_BYTES: Final = 4 * 1024 * 1024

Numbered = tuple[int, StepEvent]


@dataclass(frozen=True, slots=True)
class StreamStats:
    """The hub's counters (for /metrics).

    Attributes:
        subscribers: readers attached now (streams and tails).
        streams: streamed steps since the runtime opened.
        tails: tails opened since the runtime opened.
        events: events handed to readers (one per reader).
        overflows: readers dropped for falling behind.
        refused: tails refused for passing a cap (``TooManyWatchers``).
    """

    subscribers: int
    streams: int
    tails: int
    events: int
    overflows: int
    refused: int = 0


class Subscriber:
    """One reader's bounded buffer. Filled under the hub's lock; read with `take`.

    ``wake`` is called (from the publishing thread, outside any wait) when an
    event arrives while the reader said it would wait (`take` found nothing).
    """

    __slots__ = (
        "_armed",
        "_buffer",
        "_bytes",
        "_ended",
        "_hub",
        "_wake",
        "session_id",
        "tail",
    )

    def __init__(
        self, hub: EventHub, session_id: str, *, tail: bool, wake: Callable[[], None]
    ) -> None:
        self._hub = hub
        self.session_id = session_id
        self.tail = tail
        self._wake = wake
        self._buffer: deque[Numbered] = deque()
        self._bytes = 0
        self._ended = False
        self._armed = False

    @property
    def ended(self) -> bool:
        """True once its last event (committed, error, overflow) is buffered or it closed."""
        return self._ended

    def take(self) -> list[Numbered] | None:
        """Everything buffered, oldest first; [] if nothing yet (then ``wake`` is called
        on the next event); None once it has ended and all was taken."""
        with self._hub._lock:
            if self._buffer:
                taken = list(self._buffer)
                self._buffer.clear()
                self._bytes = 0
                return taken
            if self._ended:
                return None
            self._armed = True
            return []

    def close(self) -> None:
        """Stop reading: leave the hub (the step, if any, goes on)."""
        self._hub.unsubscribe(self)

    # --- under the hub's lock -------------------------------------------------------

    def _offer(self, seq: int, event: StepEvent, size: int) -> bool:
        """Buffer ``event``; False (nothing buffered) if it would pass a bound."""
        hub = self._hub
        if len(self._buffer) >= hub.max_events or self._bytes + size > hub.max_bytes:
            return False
        self._buffer.append((seq, event))
        self._bytes += size
        return True

    def _end(self, seq: int, event: StepEvent) -> None:
        """Buffer the last event (past the bounds: it is one more) and end."""
        self._buffer.append((seq, event))
        self._ended = True

    def _woken(self) -> Callable[[], None] | None:
        """The waker to call once the lock is released, if the reader waits."""
        if not self._armed:
            return None
        self._armed = False
        return self._wake


class _Channel:
    """One watched session: its readers and the sequence numbers of its events."""

    __slots__ = ("seq", "subs")

    def __init__(self) -> None:
        self.seq = 0
        self.subs: list[Subscriber] = []


class StepSink:
    """What one step publishes through (``flow._events.StepEvents``); thread-safe.

    ``own`` is the step's stream, if it has one; closed when the step ends, so
    that a task still running after its step timed out sends nothing more.
    """

    __slots__ = ("_closed", "_hub", "_own", "_session_id")

    def __init__(self, hub: EventHub, session_id: str, own: Subscriber | None) -> None:
        self._hub = hub
        self._session_id = session_id
        self._own = own
        self._closed = False

    def wanted(self) -> bool:
        """Whether anyone watches this session now."""
        return not self._closed and self._session_id in self._hub._channels

    def publish(self, event: StepEvent, size: int) -> None:
        """Hand ``event`` to the session's tails and the step's own stream."""
        hub = self._hub
        with hub._lock:
            if self._closed:
                return
            wakes = hub._deliver(self._session_id, self._own, event, size, final=False)
        _call(wakes)

    def close(self) -> None:
        """The step is over: drop whatever its tasks still emit."""
        with self._hub._lock:
            self._closed = True


class EventHub:
    """The runtime's subscribers, by session (one per runtime; see the module docstring).

    Args:
        max_events: most events one reader may have waiting.
        max_bytes: most payload bytes one reader may have waiting.
        max_tails_per_session: most tails open on one session at a time.
        max_tails: most tails open in all at a time.
    """

    def __init__(
        self,
        max_events: int,
        max_bytes: int = DEFAULT_BUFFER_BYTES,
        *,
        max_tails_per_session: int = 16,
        max_tails: int = 10_000,
    ) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_tails_per_session = max_tails_per_session
        self.max_tails = max_tails
        self._lock = threading.Lock()
        self._channels: dict[str, _Channel] = {}
        self._streams = 0
        self._tails = 0
        self._open_tails = 0
        self._refused = 0
        self._events = 0
        self._overflows = 0

    def subscribe(self, session_id: str, *, tail: bool, wake: Callable[[], None]) -> Subscriber:
        """A new reader of ``session_id``: a tail, or (``tail=False``) the stream of one
        step, to attach to that step's ``Step`` message. The caller checks ownership.

        Raises:
            TooManyWatchers: a tail past ``max_tails_per_session`` or ``max_tails``
                (a stream is a step's own reader: bounded by the mailbox, never refused).
        """
        sub = Subscriber(self, session_id, tail=tail, wake=wake)
        with self._lock:
            channel = self._channels.get(session_id)
            if tail:
                self._check_tail_caps(session_id, channel)
                self._tails += 1
                self._open_tails += 1
            else:
                self._streams += 1
            if channel is None:
                channel = self._channels[session_id] = _Channel()
            channel.subs.append(sub)
        return sub

    def _check_tail_caps(self, session_id: str, channel: _Channel | None) -> None:
        """Under the lock: refuse one more tail past a cap."""
        detail = None
        if self._open_tails >= self.max_tails:
            detail = (
                f"the runtime has {self._open_tails} tails open (the limit is {self.max_tails})"
            )
        elif channel is not None:
            here = sum(1 for s in channel.subs if s.tail)
            if here >= self.max_tails_per_session:
                detail = (
                    f"session {session_id!r} has {here} tails open "
                    f"(the limit is {self.max_tails_per_session})"
                )
        if detail is not None:
            self._refused += 1
            raise TooManyWatchers(session_id, detail + "; close one or retry later")

    def unsubscribe(self, sub: Subscriber) -> None:
        """Detach ``sub`` (idempotent); it reads what it holds, then ends."""
        with self._lock:
            sub._ended = True
            self._detach(sub)
            wake = sub._woken()
        if wake is not None:
            wake()

    def close_tails(self) -> None:
        """End every tail (the runtime is draining); streams end with their steps."""
        with self._lock:
            tails = [s for c in self._channels.values() for s in c.subs if s.tail]
        for sub in tails:
            self.unsubscribe(sub)

    def sink(self, session_id: str, own: Subscriber | None) -> StepSink | None:
        """The sink a step of ``session_id`` publishes through; None when nobody at all
        subscribes (then the step builds no event)."""
        if own is None and not self._channels:
            return None
        return StepSink(self, session_id, own)

    def step_ended(
        self, session_id: str, own: Subscriber | None, outcome: StepResult | BaseException
    ) -> None:
        """Send a step's last event, ``committed`` or ``error``, to the session's tails and
        to its stream (which ends with it). Called as the step is answered (any thread)."""
        if own is None and session_id not in self._channels:
            return
        event: StepEvent = (
            StepError(outcome) if isinstance(outcome, BaseException) else committed(outcome)
        )
        with self._lock:
            if own is not None and own._ended:
                own = None
            wakes = self._deliver(session_id, own, event, 0, final=True)
        _call(wakes)

    def end_stream(self, own: Subscriber, outcome: StepResult | BaseException) -> None:
        """End a stream with its step's outcome unless it has ended already: for an
        answer that never reached the actor (an unknown session, a closed runtime)."""
        if own._ended:
            return
        event: StepEvent = (
            StepError(outcome) if isinstance(outcome, BaseException) else committed(outcome)
        )
        with self._lock:
            if own._ended:
                return
            wakes = self._deliver(own.session_id, own, event, 0, final=True, tails=False)
        _call(wakes)

    def stats(self) -> StreamStats:
        """The counters, as of now."""
        with self._lock:
            subscribers = sum(len(c.subs) for c in self._channels.values())
            return StreamStats(
                subscribers,
                self._streams,
                self._tails,
                self._events,
                self._overflows,
                self._refused,
            )

    # --- under the lock -------------------------------------------------------------------

    def _deliver(
        self,
        session_id: str,
        own: Subscriber | None,
        event: StepEvent,
        size: int,
        *,
        final: bool,
        tails: bool = True,
    ) -> list[Callable[[], None]]:
        channel = self._channels.get(session_id)
        if channel is None:
            return []
        channel.seq += 1
        seq = channel.seq
        wakes: list[Callable[[], None]] = []
        dropped: list[Subscriber] = []
        for sub in channel.subs:
            if not ((tails and sub.tail) or sub is own):
                continue
            if final and sub is own:
                sub._end(seq, event)
                dropped.append(sub)
            elif not sub._offer(seq, event, size):
                sub._end(seq, Overflow(len(sub._buffer)))
                self._overflows += 1
                dropped.append(sub)
            self._events += 1
            wake = sub._woken()
            if wake is not None:
                wakes.append(wake)
        for sub in dropped:
            self._detach(sub)
        return wakes

    def _detach(self, sub: Subscriber) -> None:
        channel = self._channels.get(sub.session_id)
        if channel is None or sub not in channel.subs:
            return
        channel.subs.remove(sub)
        if sub.tail:
            self._open_tails -= 1
        if not channel.subs:
            del self._channels[sub.session_id]


def committed(result: StepResult) -> Committed:
    """The ``committed`` event of a step's result."""
    return Committed(
        session_id=result.session_id,
        revision=result.revision,
        response=result.response,
        responses=list(result.responses),
        status=str(result.status),
        next_task=result.next_task,
        status_message=result.status_message,
        replayed=result.replayed,
    )


def _call(wakes: list[Callable[[], None]]) -> None:
    for wake in wakes:
        wake()
