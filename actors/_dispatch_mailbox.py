"""The mailbox of a dispatcher actor: its envelopes plus its "scheduled" flag.

The flag is what keeps an actor on one thread at a time. It is a
``threading.Lock`` used only through ``acquire(blocking=False)``, which is an
atomic test-and-set: whoever wins it (a sender whose message made the mailbox
non-empty, or the worker ending a turn and finding messages left) puts the
actor on the run queue, and the worker that runs the turn holds it until the
turn ends. An actor therefore sits at most once on the run queue and is run by
at most one worker.

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

from pykka._envelope import Envelope

__all__ = ["Mailbox", "Scheduler"]


class Scheduler(Protocol):
    """What a mailbox needs from its dispatcher: a way onto the run queue."""

    def _schedule(self, actor: Any, /) -> None:
        """Put ``actor`` on the run queue (its mailbox holds the scheduled flag)."""


class Mailbox:
    """A FIFO of pykka envelopes that schedules its actor when it becomes non-empty.

    It implements pykka's ``ActorInbox`` protocol (``put``, ``get``,
    ``empty``) so that pykka's ``ActorRef`` and ``Actor._actor_loop_teardown``
    work on it unchanged. ``get`` never blocks: only the worker running the
    actor's turn takes envelopes, and only when it knows there is one.

    The FIFO is a ``queue.SimpleQueue`` (C, thread-safe ``put``, ~130 bytes
    empty) rather than a ``collections.deque`` (~760 bytes empty): an idle
    actor is mostly its mailbox.
    """

    __slots__ = ("_actor", "_envelopes", "_scheduled", "_scheduler")

    def __init__(self) -> None:
        """Create an empty mailbox, not yet bound to an actor (see `bind`)."""
        self._envelopes: SimpleQueue[Envelope[Any]] = SimpleQueue()
        self._scheduled = threading.Lock()
        self._actor: Any = None
        self._scheduler: Scheduler | None = None

    def bind(self, actor: Any, scheduler: Scheduler, *, first_turn: bool) -> None:
        """Start scheduling ``actor`` on ``scheduler`` whenever a message arrives.

        Args:
            actor: the actor whose turns this mailbox schedules.
            scheduler: its dispatcher.
            first_turn: schedule a turn at once even if the mailbox is empty
                (to run ``on_start``). Without it, a turn is scheduled only for
                messages that arrived before the bind, or by the next ``put``.
        """
        self._actor = actor
        self._scheduler = scheduler
        if (first_turn or not self._envelopes.empty()) and self._scheduled.acquire(blocking=False):
            scheduler._schedule(actor)

    def put(self, envelope: Envelope[Any], /) -> None:
        """Append an envelope; schedule the actor if it was not already scheduled."""
        self._envelopes.put(envelope)
        scheduler = self._scheduler
        if scheduler is not None and self._scheduled.acquire(blocking=False):
            scheduler._schedule(self._actor)

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
            scheduler._schedule(self._actor)
