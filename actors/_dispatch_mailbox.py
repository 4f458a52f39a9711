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
from collections import deque
from collections.abc import Callable
from typing import Any

from pykka._envelope import Envelope

__all__ = ["Mailbox"]


class Mailbox:
    """A FIFO of pykka envelopes that schedules its actor when it becomes non-empty.

    It implements pykka's ``ActorInbox`` protocol (``put``, ``get``,
    ``empty``) so that pykka's ``ActorRef`` and ``Actor._actor_loop_teardown``
    work on it unchanged. ``get`` never blocks: only the worker running the
    actor's turn takes envelopes, and only when it knows there is one.
    """

    __slots__ = ("_envelopes", "_schedule", "_scheduled")

    def __init__(self) -> None:
        """Create an empty mailbox, not yet bound to an actor (see `bind`)."""
        self._envelopes: deque[Envelope[Any]] = deque()
        self._scheduled = threading.Lock()
        self._schedule: Callable[[], None] | None = None

    def bind(self, schedule: Callable[[], None]) -> None:
        """Start scheduling: ``schedule()`` puts the actor on its dispatcher's run queue.

        Schedules the actor's first turn at once (it runs ``on_start``), even if
        the mailbox is still empty.
        """
        self._schedule = schedule
        if self._scheduled.acquire(blocking=False):
            schedule()

    def put(self, envelope: Envelope[Any], /) -> None:
        """Append an envelope; schedule the actor if it was not already scheduled."""
        self._envelopes.append(envelope)
        schedule = self._schedule
        if schedule is not None and self._scheduled.acquire(blocking=False):
            schedule()

    def put_first(self, envelope: Envelope[Any]) -> None:
        """Put an envelope ahead of every queued one (used to stop an actor at once)."""
        self._envelopes.appendleft(envelope)
        schedule = self._schedule
        if schedule is not None and self._scheduled.acquire(blocking=False):
            schedule()

    def get(self) -> Envelope[Any]:
        """Take the oldest envelope.

        Raises:
            IndexError: if the mailbox is empty (pykka only calls ``get`` after
                ``empty()`` said no).
        """
        return self._envelopes.popleft()

    def take(self) -> Envelope[Any] | None:
        """Take the oldest envelope, or None when the mailbox is empty."""
        try:
            return self._envelopes.popleft()
        except IndexError:
            return None

    def empty(self) -> bool:
        """Whether no envelope is waiting."""
        return not self._envelopes

    def __len__(self) -> int:
        """The number of envelopes waiting."""
        return len(self._envelopes)

    def end_turn(self) -> None:
        """Give up the worker: release the flag, then reschedule if messages are left.

        Called by the worker that ran the turn, exactly once per turn, and
        always last: after it returns, another worker may already be running
        the actor.
        """
        self._scheduled.release()
        if self._envelopes and self._scheduled.acquire(blocking=False):
            schedule = self._schedule
            assert schedule is not None, "a turn ran on an unbound mailbox"
            schedule()
