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
- What sits on the run queue is the actor's mailbox, which lets go of its
  actor when the actor stops: a stopped actor is in no reference cycle and
  is freed at once, not at the garbage collector's next full collection.
- Message handling is pykka's own (``_handle_receive``, ``_handle_failure``,
  ``_stop``, ``_actor_loop_setup``; the mailbox fails what is left queued at the
  stop as ``_actor_loop_teardown`` would), so ``on_start``,
  ``on_stop``, ``on_failure``, ``ask``/``tell``, proxies and futures behave as
  with ``ThreadingActor``; a message that is a ``msgspec.Struct`` (never one of
  pykka's own) goes straight to ``on_receive``.

Actors are not put in pykka's global ``ActorRegistry`` (a list with O(n)
removal: ``stop_all`` of 100,000 actors took 183 s). Each `Dispatcher` keeps its
own set of the actors it runs, and whoever starts actors (the supervisor) keeps
its own index of them.
"""

from __future__ import annotations

from typing import Any

import pykka

from actors._dispatch_actor import DispatcherActor
from actors._dispatch_mailbox import Mailbox
from actors._dispatch_pool import Dispatcher

__all__ = ["Dispatcher", "DispatcherActor", "mailbox_depth"]


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
