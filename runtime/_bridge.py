"""How answers from actors reach callers: sync waiters, asyncio futures, the loop thread.

Actors answer through a ``reply(outcome)`` callable (``outcome`` is the answer
or the exception to raise). For a sync caller it completes a
``concurrent.futures.Future`` the caller waits on; for an asyncio caller it
completes an asyncio future through ``loop.call_soon_threadsafe``, so the event
loop never blocks and no thread-pool hop is needed. Answers to one loop go
through its ``_Inbox``: a store commit answering 64 steps wakes the loop once
(one ``call_soon_threadsafe`` and one handle per batch, not per answer).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from actors._live_index import LiveIndex

__all__ = ["AsyncReply", "HostLoop", "LoopThread", "SyncReply"]


class SyncReply:
    """A reply callable for a sync caller: first call wins; ``wait()`` returns or raises.

    A plain lock, held from creation until the answer arrives, is what the
    caller blocks on: cheaper than a ``concurrent.futures.Future`` on the hot path.

    With ``counted`` (the default) the request counts in the index's
    ``in_flight`` until answered. A step's reply is not counted: the index
    counts a step when it sends it to a live actor and when its actor answers
    it (one lock each); only a step that must first be activated is counted by
    its reply (`hold`).
    """

    __slots__ = ("_calls", "_counted", "_index", "_lock", "_outcome")

    def __init__(self, index: LiveIndex, *, counted: bool = True) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._calls = itertools.count()
        self._outcome: Any = None
        self._index = index
        self._counted = counted
        if counted:
            index.begin()

    def hold(self) -> None:
        """Count this request in ``in_flight`` from now until it is answered."""
        self._index.begin()
        self._counted = True

    def __call__(self, outcome: Any) -> None:
        """Deliver ``outcome`` (an exception is raised by ``wait``)."""
        if next(self._calls):  # atomic under the GIL: only the first answer counts
            return
        self._outcome = outcome
        if self._counted:
            self._index.end()
        self._lock.release()

    def wait(self, timeout: float | None = None) -> Any:
        """Wait for the answer and return it, or raise the error it carries.

        Raises:
            TimeoutError: no answer within ``timeout`` seconds.
        """
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError(f"no answer within {timeout} s")
        self._lock.release()
        outcome = self._outcome
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class AsyncReply:
    """A reply callable for an asyncio caller (thread-safe; first call wins).

    ``counted`` and `hold` as for `SyncReply`.
    """

    __slots__ = ("_calls", "_counted", "_future", "_inbox", "_index")

    def __init__(self, index: LiveIndex, *, counted: bool = True) -> None:
        self._inbox = _inbox(asyncio.get_running_loop())
        self._future: asyncio.Future[Any] = self._inbox.loop.create_future()
        self._index = index
        self._calls = itertools.count()
        self._counted = counted
        if counted:
            index.begin()

    def hold(self) -> None:
        """Count this request in ``in_flight`` from now until it is answered."""
        self._index.begin()
        self._counted = True

    def __call__(self, outcome: Any) -> None:
        """Deliver ``outcome`` to the awaiting task, from any thread."""
        if next(self._calls):  # atomic under the GIL: only the first answer counts
            return
        if self._counted:
            self._index.end()
        self._inbox.put(self._future, outcome)

    async def wait(self) -> Any:
        """Await the answer and return it, or raise the error it carries."""
        return await self._future


class _Inbox:
    """Answers on their way to one event loop's futures, settled in one loop callback.

    ``put`` runs on any thread: the answer goes on a deque (an append under the
    GIL), and only the first answer since the last drain schedules ``_drain``.
    The drain clears the flag before it takes answers, so an answer put while it
    runs is either taken by it or schedules the next drain.
    """

    __slots__ = ("_answers", "_armed", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._answers: deque[tuple[asyncio.Future[Any], Any]] = deque()
        self._armed = False

    def put(self, future: asyncio.Future[Any], outcome: Any) -> None:
        self._answers.append((future, outcome))
        if self._armed:
            return
        self._armed = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
            return

    def _drain(self) -> None:
        self._armed = False
        answers = self._answers
        while answers:
            _settle(*answers.popleft())


# The inbox of the loop that last made an AsyncReply: a daemon has one loop, so this
# is nearly always a hit; another loop gets a fresh inbox (and a closed loop's goes).
_last_inbox: _Inbox | None = None


def _inbox(loop: asyncio.AbstractEventLoop) -> _Inbox:
    """The inbox for ``loop`` (called on that loop's thread)."""
    global _last_inbox
    inbox = _last_inbox
    if inbox is None or inbox.loop is not loop:
        inbox = _last_inbox = _Inbox(loop)
    return inbox


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():  # the awaiting task was cancelled
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class HostLoop:
    """Async tasks on an event loop the runtime did not start: the loop that opened an
    ``AsyncRuntime`` with ``task_loop="caller"`` (the daemon's server loop).

    A token a task emits then reaches a reader on the same loop without a hand-over
    between threads. The loop is its owner's: ``close`` leaves it running; a step
    still running at close is cancelled by its actor, as on `LoopThread`.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def call(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the loop's thread soon."""
        self.loop.call_soon_threadsafe(fn)

    def close(self, timeout: float = 5.0) -> None:
        """Nothing to stop: the loop belongs to whoever runs it."""


class LoopThread:
    """A private asyncio event loop on its own daemon thread (for async tasks)."""

    def __init__(self, name: str = "actorflow-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def call(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the loop thread soon."""
        self.loop.call_soon_threadsafe(fn)

    def close(self, timeout: float = 5.0) -> None:
        """Cancel what still runs on the loop, stop it and join the thread."""
        if self.loop.is_closed():
            return

        def stop() -> None:
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            self.loop.call_soon(self.loop.stop)

        self.loop.call_soon_threadsafe(stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
