"""The mailbox of a dispatcher actor: its envelopes plus its "scheduled" flag.

The flag is what keeps an actor on one thread at a time. It is a
``threading.Lock`` used only through ``acquire(blocking=False)``, which is an
atomic test-and-set: whoever wins it (a sender whose message made the mailbox
non-empty, or the worker ending a turn and finding messages left) puts the
actor on the run queue, and the worker that runs the turn holds it until the
turn ends. An actor therefore sits at most once on the run queue and is run by
at most one worker.

What the run queue holds is the mailbox, not the actor: the mailbox refers to
its actor only until the actor has stopped (`Mailbox.close`), so a stopped
actor, which refers to its mailbox, is freed by its reference count alone,
not by a full collection of the garbage collector. A message that arrives
after that (from a sender that saw the actor alive an instant before) is
answered by the mailbox itself with ``ActorDeadError``.

The race between "a worker ends its turn and sees an empty mailbox" and "a
sender appends" is closed by the order in `Mailbox.end_turn`: release the flag
first, then look at the mailbox again. A sender that appended before the
release failed to take the flag (the worker held it), but its envelope is then
visible to the re-check, which schedules the actor; a sender that appends after
the re-check finds the flag free and schedules the actor itself.
"""

from __future__ import annotations

import threading
from queue import SimpleQueue
from typing import Any, Protocol

from pykka import ActorDeadError
from pykka._envelope import Envelope
from pykka.messages import _ActorStop

__all__ = ["Mailbox", "Scheduler"]


class Scheduler(Protocol):
    """What a mailbox needs from its dispatcher: a way onto the run queue."""

    def _schedule(self, mailbox: Mailbox, /) -> None:
        """Put ``mailbox`` on the run queue (it holds the scheduled flag).

        A worker then runs its turn: ``mailbox.actor._dispatch_turn()``, or
        ``mailbox.answer_late()`` once the actor is None (closed).
        """


class Mailbox:
    """A FIFO of pykka envelopes that schedules its actor when it becomes non-empty.

    It implements pykka's ``ActorInbox`` protocol (``put``, ``get``,
    ``empty``) so that pykka's ``ActorRef`` works on it unchanged. ``get``
    never blocks: only the worker running the actor's turn takes envelopes,
    and only when it knows there is one.

    The FIFO is a ``queue.SimpleQueue`` (C, thread-safe ``put``, ~130 bytes
    empty) rather than a ``collections.deque`` (~760 bytes empty): an idle
    actor is mostly its mailbox.
    """

    __slots__ = ("_envelopes", "_scheduled", "_scheduler", "_stopped_name", "actor")

    def __init__(self) -> None:
        """Create an empty mailbox, not yet bound to an actor (see `bind`)."""
        self._envelopes: SimpleQueue[Envelope[Any]] = SimpleQueue()
        self._scheduled = threading.Lock()
        self.actor: Any = None
        """The actor whose turns this mailbox schedules; None before `bind` and after `close`."""
        self._scheduler: Scheduler | None = None
        self._stopped_name = ""

    def bind(self, actor: Any, scheduler: Scheduler, *, first_turn: bool) -> None:
        """Start scheduling ``actor`` on ``scheduler`` whenever a message arrives.

        Args:
            actor: the actor whose turns this mailbox schedules.
            scheduler: its dispatcher.
            first_turn: schedule a turn at once even if the mailbox is empty
                (to run ``on_start``). Without it, a turn is scheduled only for
                messages that arrived before the bind, or by the next ``put``.
        """
        self.actor = actor
        self._scheduler = scheduler
        if (first_turn or not self._envelopes.empty()) and self._scheduled.acquire(blocking=False):
            scheduler._schedule(self)

    def close(self) -> None:
        """The actor stopped: answer what waits (`_fail_waiting`) and forget the actor.

        Called by the actor's last turn. From then on nothing here refers to the
        actor, and a later message is answered by `answer_late`.
        """
        if self.actor is not None:
            self._stopped_name = str(self.actor)
            self.actor = None
        self._fail_waiting()

    def answer_late(self) -> None:
        """The turn of a closed mailbox: answer what waits, then give the worker back."""
        try:
            self._fail_waiting()
        finally:
            self.end_turn()

    def _fail_waiting(self) -> None:
        """Answer each waiting envelope as pykka's ``Actor._actor_loop_teardown`` does:
        ``ActorDeadError``, or None for a stop request."""
        while (envelope := self.take()) is not None:
            if envelope.reply_to is None:
                continue
            if isinstance(envelope.message, _ActorStop):
                envelope.reply_to.set(None)
            else:
                error = ActorDeadError(f"{self._stopped_name} stopped before handling the message")
                envelope.reply_to.set_exception(exc_info=(ActorDeadError, error, None))

    def put(self, envelope: Envelope[Any], /) -> None:
        """Append an envelope; schedule the actor if it was not already scheduled."""
        self._envelopes.put(envelope)
        scheduler = self._scheduler
        if scheduler is not None and self._scheduled.acquire(blocking=False):
            scheduler._schedule(self)

    def get(self) -> Envelope[Any]:
        """Take the oldest envelope.

        Raises:
            queue.Empty: if the mailbox is empty (pykka only calls ``get`` after
                ``empty()`` said no).
        """
        return self._envelopes.get_nowait()

    def take(self) -> Envelope[Any] | None:
        """Take the oldest envelope, or None when the mailbox is empty."""
        if self._envelopes.empty():
            return None
        return self._envelopes.get_nowait()

    def empty(self) -> bool:
        """Whether no envelope is waiting."""
        return self._envelopes.empty()

    def __len__(self) -> int:
        """The number of envelopes waiting."""
        return self._envelopes.qsize()

    def end_turn(self) -> None:
        """Give up the worker: release the flag, then reschedule if messages are left.

        Called by the worker that ran the turn, exactly once per turn, and
        always last: after it returns, another worker may already be running
        the actor.
        """
        self._scheduled.release()
        if not self._envelopes.empty() and self._scheduled.acquire(blocking=False):
            scheduler = self._scheduler
            assert scheduler is not None, "a turn ran on an unbound mailbox"
            scheduler._schedule(self)
