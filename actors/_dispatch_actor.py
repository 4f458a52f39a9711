"""`DispatcherActor`: the pykka actor type that a `Dispatcher`'s workers run.

Its turn logic (``_dispatch_turn``) reuses pykka's own message handling; the
scheduling that feeds it lives in `actors._dispatch_mailbox` and
`actors._dispatch_pool`. See `actors.dispatcher` for the whole picture.
"""

from __future__ import annotations

import itertools
import logging
import sys
import uuid
from typing import TYPE_CHECKING, Any, ClassVar, Self

import msgspec
import pykka
from pykka._envelope import Envelope
from pykka.messages import _ActorStop

from actors._dispatch_flag import StopFlag
from actors._dispatch_mailbox import Mailbox
from actors._ownership import turn_begins, turn_ends
from flow._logging import get_logger

if TYPE_CHECKING:
    from actors._dispatch_pool import Dispatcher

__all__ = ["DispatcherActor"]

_log = get_logger("actorflow.dispatcher")
_pykka_log = logging.getLogger("pykka")  # the log pykka's own actor loop writes to

# Actor URNs: a random prefix drawn once per process, then a counter in the last
# 12 hex digits. Still ``urn:uuid:`` strings and unique within the process (all
# pykka needs), without a uuid4() per actor (urandom + UUID object: ~2.5 us of a
# ~4 us actor construction).
_URN_PREFIX = uuid.uuid4().urn[:-12]
_urn_serials = itertools.count()


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
        ``actor_stopped`` and draws a uuid4 for the URN; here the URN is a
        per-process random prefix plus a counter. Everything else is the same.
        """
        self.actor_urn = f"{_URN_PREFIX}{next(_urn_serials) & 0xFFFFFFFFFFFF:012x}"
        self.actor_inbox = self._create_actor_inbox()
        self.actor_stopped = StopFlag()
        self._actor_ref = pykka.ActorRef(self)

    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> pykka.ActorRef[Self]:
        """Start an actor of this class on `Dispatcher.default` (see `Dispatcher.spawn`).

        Returns:
            The new actor's ref. It is not registered in ``pykka.ActorRegistry``.
        """
        from actors._dispatch_pool import Dispatcher  # here: the pool module imports this one

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
        mailbox's scheduled flag (the run queue only holds mailboxes that did).
        """
        inbox = self.actor_inbox
        stopped = self.actor_stopped
        previous = turn_begins(self)
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
            turn_ends(previous)
            inbox.end_turn()

    def _dispatch_envelope(self, envelope: Envelope[Any]) -> None:
        """Handle one message as ``pykka.Actor._actor_loop_running`` does.

        The one difference is a ``BaseException`` that is not an ``Exception``:
        it stops this actor only (see the class docstring).
        """
        message = envelope.message
        try:
            # an actor's own messages (frozen Structs, ``actors.messages``) are never
            # pykka's proxy or stop messages: skip its four checks for them
            if isinstance(message, msgspec.Struct):
                response = self.on_receive(message)
            else:
                response = self._handle_receive(message)
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
        """After the actor stopped: close its mailbox (queued asks fail with
        ActorDeadError, and nothing refers back to the actor), leave the dispatcher."""
        self.actor_inbox.close()
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
