"""A pykka actor type whose actors share a fixed pool of worker threads.

``pykka.ThreadingActor`` gives every actor its own thread. In CPython that does
not scale to a session runtime's numbers: with 20,000 live thread actors a hot
ask to one of them falls from 25,000/s to 3,000/s, each costs 22 KiB, and
starting one takes ~0.3 ms. A `DispatcherActor` has no thread: its
`Dispatcher`'s workers take runnable actors from one run queue and run a turn
of each.

- An actor is put on the run queue when its mailbox goes from empty to
  non-empty (see `actors._dispatch_mailbox` for the flag that makes this
  race-free), never twice, and is run by one worker at a time.
- A turn handles at most `DispatcherActor.throughput` messages, then the actor
  goes to the back of the run queue if it has more: a chatty actor cannot
  starve the others.
- Message handling is pykka's own (``_handle_receive``, ``_handle_failure``,
  ``_stop``, ``_actor_loop_setup``, ``_actor_loop_teardown``), so ``on_start``,
  ``on_stop``, ``on_failure``, ``ask``/``tell``, proxies and futures behave as
  with ``ThreadingActor``.

Actors are not put in pykka's global ``ActorRegistry`` (a list with O(n)
removal: ``stop_all`` of 100,000 actors took 183 s). Each `Dispatcher` keeps its
own set of the actors it runs, and whoever starts actors (the supervisor) keeps
its own index of them.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from queue import Empty, SimpleQueue
from typing import Any, ClassVar, Self, TypeVar

import pykka
import structlog
from pykka._envelope import Envelope
from pykka.messages import _ActorStop

from actors._dispatch_flag import StopFlag
from actors._dispatch_mailbox import Mailbox

__all__ = ["Dispatcher", "DispatcherActor", "mailbox_depth"]

_log = structlog.get_logger(__name__)
_pykka_log = logging.getLogger("pykka")  # the log pykka's own actor loop writes to

A = TypeVar("A", bound="DispatcherActor")


class DispatcherActor(pykka.Actor):
    """A pykka actor run by a `Dispatcher`'s worker threads instead of its own thread.

    Use it as you would ``pykka.ThreadingActor``: subclass it, implement
    ``on_receive`` and/or methods for proxies, and start it with
    ``MyActor.start(...)`` (on `Dispatcher.default`) or
    ``dispatcher.spawn(MyActor, ...)``. ``on_start``, ``on_stop``,
    ``on_failure`` and ``on_receive`` run on a worker thread, one at a time.

    Differences from ``ThreadingActor``, all deliberate:

    - The actor is not registered in ``pykka.ActorRegistry`` (its removal is
      O(n) in the number of actors); keep your own index and stop your actors
      yourself, or let `Dispatcher.shutdown` stop them.
    - A message put after the actor stopped, racing with its stop, is answered
      with ``ActorDeadError`` (a ``ThreadingActor`` would never answer it).
    - A ``BaseException`` that is not an ``Exception`` (e.g. ``SystemExit``)
      raised while handling a message stops this actor only, not every actor
      in the registry, and an ``ask`` that caused it gets the exception.

    Code in an actor must not block for long: while it runs, it holds one of
    the dispatcher's few threads. Hand slow work to another thread and have its
    result come back as a message.

    For implementors of the type (pykka's extension points): the inbox is a
    `Mailbox` (``_create_actor_inbox``), futures are ``pykka.ThreadingFuture``
    (``_create_future``; ``get(timeout)`` works from any thread), and
    ``_start_actor_loop`` binds the mailbox to the dispatcher, which schedules
    the first turn (``on_start``). A worker runs one turn with
    ``_dispatch_turn``. ``__init__`` sets the same fields as pykka's, but
    ``actor_stopped`` is a `StopFlag` (an Event that is cheap until waited on).
    """

    throughput: ClassVar[int] = 16
    """Messages handled per turn before the actor yields its worker to the next one."""

    actor_inbox: Mailbox

    _dispatcher: Dispatcher | None = None
    _dispatch_started: bool = False
    _dispatch_halt: bool = False  # set by Dispatcher.shutdown: stop before the next message

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        """Set up the actor's URN, mailbox, stopped flag and ref, as ``pykka.Actor`` does.

        Subclasses must call ``super().__init__()``. pykka's own ``__init__`` is
        not called because it builds a full ``threading.Event`` (~1.3 KiB) for
        ``actor_stopped``; everything else is the same.
        """
        self.actor_urn = uuid.uuid4().urn
        self.actor_inbox = self._create_actor_inbox()
        self.actor_stopped = StopFlag()
        self._actor_ref = pykka.ActorRef(self)

    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> pykka.ActorRef[Self]:
        """Start an actor of this class on `Dispatcher.default` (see `Dispatcher.spawn`).

        Returns:
            The new actor's ref. It is not registered in ``pykka.ActorRegistry``.
        """
        return Dispatcher.default().spawn(cls, *args, **kwargs)

    @staticmethod
    def _create_actor_inbox() -> Mailbox:
        return Mailbox()

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return pykka.ThreadingFuture()

    def _start_actor_loop(self) -> None:
        if self._dispatcher is None:
            raise RuntimeError(
                f"{self} has no dispatcher: start it with {type(self).__name__}.start() "
                "or Dispatcher.spawn()"
            )
        # Without an on_start there is nothing to run before the first message:
        # not waking a worker for it makes a start ~2x cheaper.
        has_on_start = type(self).on_start is not pykka.Actor.on_start
        self._dispatch_started = not has_on_start
        self.actor_inbox.bind(self, self._dispatcher, first_turn=has_on_start)

    def _dispatch_turn(self) -> None:
        """Run one turn on the calling worker thread: ``on_start`` first, then messages.

        Internal method for the dispatcher: the caller must have taken the
        mailbox's scheduled flag (the run queue only holds actors that did).
        """
        inbox = self.actor_inbox
        stopped = self.actor_stopped
        try:
            if not self._dispatch_started:
                self._dispatch_started = True
                self._actor_loop_setup()
            for _ in range(self.throughput):
                if stopped.is_set():
                    break
                if self._dispatch_halt:
                    self._stop()
                    break
                envelope = inbox.take()
                if envelope is None:
                    break
                self._dispatch_envelope(envelope)
            if stopped.is_set():
                self._dispatch_close()
        except BaseException:  # a worker thread must survive anything actor code raises
            _log.exception("dispatcher_actor_turn_failed", actor=str(self))
            stopped.set()
            self._dispatch_close()
        finally:
            inbox.end_turn()

    def _dispatch_envelope(self, envelope: Envelope[Any]) -> None:
        """Handle one message as ``pykka.Actor._actor_loop_running`` does.

        The one difference is a ``BaseException`` that is not an ``Exception``:
        it stops this actor only (see the class docstring).
        """
        try:
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:
            if envelope.reply_to is not None:
                _pykka_log.info("Exception returned from %s to caller:", self, exc_info=True)
                envelope.reply_to.set_exception()
            else:
                self._handle_failure(*sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:  # pykka's semantics: log it, the actor is stopping anyway
                    self._handle_failure(*sys.exc_info())
        except BaseException:
            exc_info = sys.exc_info()
            _log.exception("dispatcher_actor_stopped_by_base_exception", actor=str(self))
            try:
                if not self.actor_stopped.is_set():
                    self._stop()
            finally:
                if envelope.reply_to is not None:
                    envelope.reply_to.set_exception(exc_info)

    def _dispatch_close(self) -> None:
        """After the actor stopped: fail queued asks with ActorDeadError, leave the dispatcher."""
        self._actor_loop_teardown()
        if self._dispatcher is not None:
            self._dispatcher._forget(self)  # the dispatcher and its actor type are one unit

    def _dispatch_stop_now(self) -> pykka.Future[Any]:
        """Ask the actor to stop before it handles anything already queued.

        The halt flag makes the next turn stop the actor before its next
        message; the stop envelope schedules that turn, and the teardown that
        follows answers it (with None) after ``on_stop`` has run.

        Returns:
            A future set once the actor has stopped.
        """
        future = self._create_future()
        self._dispatch_halt = True
        self.actor_inbox.put(Envelope(_ActorStop(), reply_to=future))
        return future


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
        self._run_queue: SimpleQueue[DispatcherActor | None] = SimpleQueue()
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

    def _schedule(self, actor: DispatcherActor) -> None:
        self._run_queue.put(actor)
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
                actor = self._run_queue.get_nowait()
            except Empty:
                return
            if actor is not None:
                actor._dispatch_turn()

    def _work(self) -> None:
        """A worker thread: run turns until a None comes off the run queue."""
        get = self._run_queue.get
        while (actor := get()) is not None:
            try:
                actor._dispatch_turn()
            except BaseException:  # the pool must outlive any actor's failure
                _log.exception("dispatcher_worker_caught", actor=str(actor))


def _remaining(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (never negative), or None for no deadline."""
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


def mailbox_depth(ref: pykka.ActorRef[Any]) -> int:
    """The number of messages waiting in an actor's mailbox (for the admin shell).

    Works for `DispatcherActor` refs and for pykka's ``ThreadingActor`` refs.

    Raises:
        TypeError: if the actor's inbox reports no size.
    """
    inbox: Any = ref.actor_inbox
    if isinstance(inbox, Mailbox):
        return len(inbox)
    qsize = getattr(inbox, "qsize", None)
    if qsize is None:
        raise TypeError(f"cannot tell the mailbox depth of {ref}: its inbox has no size")
    return int(qsize())
