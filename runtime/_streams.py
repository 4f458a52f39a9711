"""Reading a session's events: ``Runtime.stream``/``tail`` and their asyncio forms.

A stream is a step (same mailbox, ``on_busy``, deadline, ownership and
idempotency key) whose ``Step`` message carries a `Subscriber` of the
runtime's event hub (`actors._event_hub`): the hub buffers the step's events
for it, bounded, and the iterator here takes them from the caller's thread
(`EventStream`) or event loop (`AsyncEventStream`). A tail is a subscriber of
every event of a session, with no step.

An error before the step starts (no such session, busy with
``on_busy="reject"``, a closed runtime...) is raised by the first ``next``; once
the step has started a failure is the stream's last event, ``StepError``.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, ClassVar, Self

from actors._event_hub import EventHub, Subscriber
from actors._live_index import LiveIndex
from flow._events import StepError, StepEvent
from flow._step import StepResult
from runtime._bridge import SyncReply

__all__ = ["AsyncEventStream", "EventStream", "LoopWakes", "StreamReply", "async_waker"]


class StreamReply(SyncReply):
    """A streamed step's reply: it also ends the stream, should the answer never have
    reached the actor (an unknown session, a full mailbox, a closed runtime)."""

    __slots__ = ("_hub", "_sub")

    def __init__(self, index: LiveIndex, hub: EventHub, sub: Subscriber) -> None:
        super().__init__(index, counted=False)  # the index counts a step
        self._hub = hub
        self._sub = sub

    def __call__(self, outcome: StepResult | BaseException) -> None:
        """Deliver ``outcome``; end the stream with it if the hub has not."""
        super().__call__(outcome)
        self._hub.end_stream(self._sub, outcome)


class _Reader:
    """What both iterators share: the events taken, the first-error rule, ``seq``."""

    def __init__(self, sub: Subscriber, *, raise_first_error: bool) -> None:
        self._sub = sub
        self._pending: deque[tuple[int, StepEvent]] = deque()
        self._raise_first = raise_first_error
        #: The sequence number of the last event returned (the SSE ``id:``).
        self.seq = 0

    def _next_taken(self) -> StepEvent:
        seq, event = self._pending.popleft()
        first = self._raise_first
        self._raise_first = False
        self.seq = seq
        if first and isinstance(event, StepError):
            self._sub.close()
            raise event.error
        return event

    def _refill(self) -> bool | None:
        """Take what the hub holds: True if some, False if none yet, None at the end."""
        taken = self._sub.take()
        if taken is None:
            return None
        self._pending.extend(taken)
        return bool(taken)

    def close(self) -> None:
        """Stop reading (a streamed step goes on and commits; read its result later)."""
        self._sub.close()


class EventStream(_Reader):
    """A sync iterator over a stream's (or a tail's) events; use it in a ``with`` or
    ``close()`` it when leaving early."""

    def __init__(self, sub: Subscriber, wake: threading.Event, *, raise_first_error: bool) -> None:
        super().__init__(sub, raise_first_error=raise_first_error)
        self._wake = wake

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> StepEvent:
        event = self.next(None)
        if event is None:
            raise StopIteration
        return event

    def next(self, timeout: float | None) -> StepEvent | None:
        """The next event; None at the end.

        Raises:
            TimeoutError: none within ``timeout`` seconds.
            ActorflowError: the step failed before it started (first event only).
        """
        while not self._pending:
            self._wake.clear()
            refilled = self._refill()
            if refilled is None:
                return None
            if not refilled and not self._wake.wait(timeout):
                raise TimeoutError(f"no event within {timeout} s")
        return self._next_taken()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def async_waker(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> Callable[[], None]:
    """A ``wake`` for the hub that sets ``event`` on ``loop`` from any thread (through
    the loop's `LoopWakes`: one cross-thread call wakes every reader waiting on it)."""
    wakes = LoopWakes.of(loop)

    def wake() -> None:
        wakes.request(event)

    return wake


class LoopWakes:
    """Wakes the readers of one event loop with one cross-thread call per batch.

    A token wakes its reader; 64 streams each receiving a token every millisecond
    would otherwise cost the reading loop 64 ``call_soon_threadsafe`` a
    millisecond: 64 writes to its self-pipe, and as many hand-overs of the GIL
    between the thread emitting and the loop writing (each up to the interpreter's
    switch interval, 5 ms, when both are busy). Instead, the first request of a
    batch schedules one ``_fire`` on the reader's loop, and the requests that come
    before it runs join it. A request made from an event loop's own thread (an
    async task emitting on the runtime's loop) sends the cross-thread call at the
    end of that loop's turn, so that every task woken in the same turn shares it.
    A request made on the reader's own loop (the daemon runs async tasks on its
    server loop) sets the event at once: the reader wakes in the next turn.

    Thread-safe; one per reader loop (`of`), kept only while the loop lives.
    """

    __slots__ = ("__weakref__", "_lock", "_loop", "_pending", "_scheduled")

    _by_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopWakes]] = (
        weakref.WeakKeyDictionary()
    )
    _by_loop_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: list[asyncio.Event] = []
        self._scheduled = False

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> LoopWakes:
        """The one `LoopWakes` of ``loop``."""
        with cls._by_loop_lock:
            wakes = cls._by_loop.get(loop)
            if wakes is None:
                wakes = cls._by_loop[loop] = cls(loop)
            return wakes

    def request(self, event: asyncio.Event) -> None:
        """Set ``event`` on the reader's loop soon (from any thread); at once from that
        loop's own thread (an async task on the daemon's server loop)."""
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is self._loop:
            event.set()  # wakes its reader in the loop's next turn: nothing to batch
            return
        with self._lock:
            self._pending.append(event)
            if self._scheduled:
                return  # the call on its way sets this one too
            self._scheduled = True
        if here is not None:
            try:
                here.call_soon(self._send)  # after this turn of the emitting loop
                return
            except RuntimeError:  # that loop is closing: send now
                pass
        self._send()

    def _send(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._fire)
        except RuntimeError:  # the reader's loop is closed: nobody reads any more
            with self._lock:
                self._pending.clear()
                self._scheduled = False

    def _fire(self) -> None:
        with self._lock:
            pending = self._pending
            self._pending = []
            self._scheduled = False
        for event in pending:
            event.set()


class AsyncEventStream(_Reader):
    """An async iterator over a stream's (or a tail's) events; use it in an
    ``async with`` or ``close()`` it when leaving early."""

    def __init__(self, sub: Subscriber, wake: asyncio.Event, *, raise_first_error: bool) -> None:
        super().__init__(sub, raise_first_error=raise_first_error)
        self._wake = wake
        self._patience: asyncio.TimerHandle | None = None
        self._patience_over = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> StepEvent:
        while not self._pending:
            self._wake.clear()
            refilled = self._refill()
            if refilled is None:
                raise StopAsyncIteration
            if not refilled:
                await self._wake.wait()
        return self._next_taken()

    def interrupt_on(self, future: asyncio.Future[Any]) -> None:
        """Make a waiting `batch` return (``[]``) once ``future`` is done (the reader's
        connection closing), without a task per batch to watch both."""
        future.add_done_callback(lambda _: self._wake.set())

    async def batch(self, patience: float) -> list[tuple[int, StepEvent]] | None:
        """Every event that has arrived, numbered, waiting for one: [] if none came within
        ``patience`` seconds of the previous [] (or `interrupt_on`'s future completed),
        None at the end (no first-error rule: the caller decides).

        One timer per ``patience`` period, not per call: a stream answered a batch per
        token would otherwise arm and cancel a timeout for each.
        """
        self._raise_first = False
        waited = False
        while True:
            if self._pending:
                taken = list(self._pending)
                self._pending.clear()
                self.seq = taken[-1][0]
                if self._patience_over:  # something was sent: the next wait starts afresh
                    self._patience_over = False
                    self._patience = None
                return taken
            self._wake.clear()
            refilled = self._refill()
            if refilled is None:
                return None
            if refilled:
                continue
            if self._patience_over:  # its timer has fired: a heartbeat is due
                self._patience_over = False
                self._patience = None
                return []
            if waited:  # woken with nothing to read: interrupted
                return []
            waited = True
            if self._patience is None:
                self._patience = asyncio.get_running_loop().call_later(patience, self._end_patience)
            await self._wake.wait()

    def _end_patience(self) -> None:
        self._patience_over = True
        self._wake.set()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

    async def aclose(self) -> None:
        """``close()``, awaitable: how ``AsyncClient``'s tail is closed too."""
        self.close()

    def close(self) -> None:
        """Stop reading (see `_Reader.close`), and drop the heartbeat timer."""
        if self._patience is not None:
            self._patience.cancel()
            self._patience = None
        super().close()
