"""`Dispatcher`: the fixed pool of worker threads and the run queue of runnable actors' mailboxes.

See `actors.dispatcher` for the whole picture.
"""

from __future__ import annotations

import threading
import time
from queue import Empty, SimpleQueue
from typing import Any, ClassVar, TypeVar

import pykka

from actors._dispatch_actor import DispatcherActor
from actors._dispatch_mailbox import Mailbox
from flow._logging import get_logger

__all__ = ["Dispatcher"]

_log = get_logger("actorflow.dispatcher")

A = TypeVar("A", bound=DispatcherActor)


class Dispatcher:
    """A fixed pool of daemon worker threads running `DispatcherActor`s.

    Args:
        threads: the number of worker threads (at least 1). Actor code that
            blocks holds one of them, so keep blocking work off the actors.
        name: prefix of the worker threads' names (``<name>-worker-<i>``).

    Raises:
        ValueError: if ``threads`` is less than 1.
    """

    _default: ClassVar[Dispatcher | None] = None
    _default_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, threads: int = 4, name: str = "actorflow") -> None:
        if threads < 1:
            raise ValueError(f"a dispatcher needs at least 1 worker thread, got threads={threads}")
        self.name = name
        self._run_queue: SimpleQueue[Mailbox | None] = SimpleQueue()
        self._lock = threading.Lock()
        self._actors: set[DispatcherActor] = set()
        self._closing = False
        self._closed = False
        self._workers = [
            threading.Thread(target=self._work, name=f"{name}-worker-{i}", daemon=True)
            for i in range(threads)
        ]
        for worker in self._workers:
            worker.start()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "closing" if self._closing else "running"
        return (
            f"<Dispatcher {self.name!r} threads={len(self._workers)} "
            f"actors={len(self._actors)} {state}>"
        )

    @classmethod
    def default(cls) -> Dispatcher:
        """The process-wide dispatcher used by `DispatcherActor.start`.

        Created on first use with the default settings, and created anew if the
        previous one was shut down.
        """
        dispatcher = cls._default
        if dispatcher is not None and not dispatcher._closing:
            return dispatcher
        with cls._default_lock:
            if cls._default is None or cls._default._closing:
                cls._default = cls()
            return cls._default

    @property
    def threads(self) -> int:
        """The number of worker threads."""
        return len(self._workers)

    @property
    def closed(self) -> bool:
        """Whether `shutdown` has been called (new actors are refused)."""
        return self._closing

    def spawn(self, actor_cls: type[A], /, *args: Any, **kwargs: Any) -> pykka.ActorRef[A]:
        """Create an actor of ``actor_cls`` and start it on this dispatcher.

        ``actor_cls(*args, **kwargs)`` runs in the calling thread; ``on_start``
        runs later on a worker, before any message.

        Returns:
            The actor's ref (not registered in ``pykka.ActorRegistry``).

        Raises:
            TypeError: if ``actor_cls`` is not a `DispatcherActor` subclass, or
                its ``__init__`` did not call ``super().__init__()``.
            RuntimeError: if the dispatcher has been shut down.
        """
        if not (isinstance(actor_cls, type) and issubclass(actor_cls, DispatcherActor)):
            raise TypeError(f"spawn needs a DispatcherActor subclass, got {actor_cls!r}")
        if self._closing:
            raise RuntimeError(f"dispatcher {self.name!r} is shut down: cannot spawn")
        actor = actor_cls(*args, **kwargs)
        if not hasattr(actor, "_actor_ref"):
            raise TypeError(
                f"{actor_cls.__qualname__}.__init__ did not call super().__init__(): "
                "the actor has no ref or mailbox"
            )
        actor._dispatcher = self
        with self._lock:
            if self._closing:
                raise RuntimeError(f"dispatcher {self.name!r} is shut down: cannot spawn")
            self._actors.add(actor)
        actor._start_actor_loop()
        return actor.actor_ref

    def live_actors(self) -> int:
        """The number of actors started here that have not stopped yet."""
        return len(self._actors)

    def current_load(self) -> int:
        """The number of actors with messages waiting for a worker (the run queue's length)."""
        return self._run_queue.qsize()

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop every actor still running here, then stop and join the workers.

        Each actor stops before handling what it has queued: ``on_stop`` runs,
        and every queued ``ask`` fails with ``pykka.ActorDeadError``. Calling it
        again is harmless.

        Args:
            timeout: seconds to wait in all, or None to wait until done.

        Returns:
            True if every actor stopped and every worker exited in time.

        Raises:
            RuntimeError: if called from one of this dispatcher's workers (that
                is, from an actor it runs: it would wait for itself).
        """
        if threading.current_thread() in self._workers:
            raise RuntimeError(
                f"dispatcher {self.name!r} cannot be shut down from its own worker thread "
                "(an actor it runs): it would wait for itself"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._closing = True
            actors = list(self._actors)
        stopping = [actor._dispatch_stop_now() for actor in actors]
        clean = True
        for future in stopping:
            try:
                future.get(timeout=_remaining(deadline))
            except pykka.Timeout:
                clean = False
                break
        for _ in self._workers:
            self._run_queue.put(None)
        for worker in self._workers:
            worker.join(_remaining(deadline))
            clean = clean and not worker.is_alive()
        self._closed = True
        self._run_inline()
        return clean

    def _schedule(self, mailbox: Mailbox) -> None:
        self._run_queue.put(mailbox)
        if self._closed:
            self._run_inline()

    def _forget(self, actor: DispatcherActor) -> None:
        with self._lock:
            self._actors.discard(actor)

    def _run_inline(self) -> None:
        """After shutdown no worker is left: run what was scheduled on the calling thread.

        After a clean shutdown every actor has stopped, so such a turn only
        answers late asks with ``ActorDeadError``.
        """
        while True:
            try:
                mailbox = self._run_queue.get_nowait()
            except Empty:
                return
            if mailbox is not None:
                _run_turn(mailbox)

    def _work(self) -> None:
        """A worker thread: run turns until a None comes off the run queue."""
        get = self._run_queue.get
        while (mailbox := get()) is not None:
            actor = mailbox.actor  # `_run_turn`, inline: a function call less per turn
            try:
                if actor is None:
                    mailbox.answer_late()
                else:
                    actor._dispatch_turn()
            except BaseException:  # the pool must outlive any actor's failure
                _log.exception("dispatcher_worker_caught", actor=str(actor))
            # not held while the worker waits: a stopped actor (a passivated session
            # and all it held) would stay in memory until this worker's next turn
            actor = mailbox = None


def _run_turn(mailbox: Mailbox) -> None:
    """Run one turn of a mailbox the run queue gave: its actor's, or the late answers."""
    actor = mailbox.actor
    if actor is None:
        mailbox.answer_late()
    else:
        actor._dispatch_turn()


def _remaining(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (never negative), or None for no deadline."""
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())
