"""The index of live session actors, read by callers and written by the supervisor.

Callers find a live session's actor here without going through the supervisor
(the hot path). The supervisor alone adds and removes entries; both happen under
one lock, and a caller sends its message to an actor while holding that lock,
so once the supervisor has removed an entry no new request can reach that
actor: the supervisor then tells it to passivate, and every request sent before
the removal is ahead of that message in the actor's FIFO mailbox.

A hibernated entry (`hibernate`) has no actor: its ``frozen`` bytes are the
session's encoded snapshot, and a request to it finds no ref and goes through
the supervisor, which wakes it (`wake`). The awake entries and the hibernated
ones are kept apart: the awake ones in a use-ordered map that a step touches
and the hibernation sweep walks, the hibernated ones (`HibernatedEntry`) in a
plain dict of their own, in the order they hibernated, which neither touches.
A hibernated entry is of a type the garbage collector does not know, so that
dict holds nothing it tracks and is itself untracked: 100,000 hibernated
sessions add nothing to a collection's walk, nor to a step's.
"""

from __future__ import annotations

import heapq
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from itertools import islice
from operator import attrgetter
from typing import Any

import msgspec
import pykka

from flow._errors import SessionBusy, SessionNotFound
from flow._session import Access
from flow._sharing import allows

__all__ = ["HibernatedEntry", "LiveEntry", "LiveIndex"]


class LiveEntry(msgspec.Struct, eq=False):
    """One live session actor and what the runtime tracks about it.

    Threads: ``pending``, ``requests`` and ``last_used`` are written only under
    the index lock. ``status`` through ``snapshot_bytes`` and
    ``current_step_task`` are written only by the session's actor, in its turn;
    other threads read them as plain values (a possibly stale one is fine
    there) or under the lock after the actor's answer (see ``finish``).

    Attributes:
        session_id: the session.
        ref: the actor (set once it is spawned, before the entry is added).
        incarnation: increases with every activation of any session (tells a
            restarted actor from its predecessor).
        owner: the session's owner (fixed for a session's life).
        graph_id: the session's graph.
        graph_version: the graph version the actor runs (fixed for its life).
        pending: requests sent and not yet answered (queued, stashed, running,
            or waiting for their commit).
        last_used: clock time of the last request.
        status, current_task, revision, request_count, expires_at: as of the
            last adopted step (written by the actor).
        snapshot_bytes: size of the last snapshot the actor encoded (0: none yet).
        members: the users the session is shared with (``SessionMetadata.members``),
            as of the last adopted revision (written by the actor).
        current_step_task: the task a running step started at, else None.
        activated_at: clock time of the activation.
        reason: why the session is live (``activated by step``...).
        frozen: the encoded session while it is hibernated (``ref`` is then
            None), else None; set by the actor and cleared by the supervisor,
            both under the index lock.
    """

    session_id: str
    incarnation: int
    owner: str
    graph_id: str
    last_used: float
    status: str
    current_task: str
    revision: int
    request_count: int
    expires_at: float | None
    activated_at: float
    reason: str
    ref: pykka.ActorRef[Any] | None = None
    graph_version: str = ""
    pending: int = 0
    snapshot_bytes: int = 0
    members: tuple[tuple[str, Access], ...] = ()
    current_step_task: str | None = None
    requests: int = 0
    frozen: bytes | None = None


class HibernatedEntry(LiveEntry, gc=False):
    """The entry of a hibernated session: ``ref`` is None and ``frozen`` holds its bytes.

    Unknown to the garbage collector (``gc=False``: the type has no GC support),
    which is safe because such an entry holds only strings, numbers, bytes and
    tuples of them, never an actor; and a dict holding only these is untracked
    by the collector (see the module docstring). Waking makes a `LiveEntry` of it.
    """


_LAST_USED = attrgetter("last_used")


class LiveIndex:
    """Thread-safe map of session id to ``LiveEntry``, in least-recently-used order.

    ``in_flight`` counts every request any caller is waiting on (steps and
    others), so that closing the runtime can wait for them to drain: a step
    from `send` to `finish` (or its reply, while it is being activated), any
    other request from `begin` to `end`.
    """

    def __init__(self) -> None:
        # Re-entrant: a send to an actor of a dispatcher that has just shut down
        # runs the actor's turn inline, on the sender's thread, under this lock.
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        # the entries with an actor, least recently used first
        self._awake: OrderedDict[str, LiveEntry] = OrderedDict()
        # the hibernated entries, in the order they hibernated (about their use order)
        self._hibernated: dict[str, HibernatedEntry] = {}
        self._stopping: dict[str, int] = {}
        self.in_flight = 0
        #: Bumped whenever an actor stops or a stored session is deleted: a
        #: snapshot read while it kept its value is still the latest one.
        self.epoch = 0
        self.steps = 0
        self.errors = 0

    # --- callers -------------------------------------------------------------

    def send(
        self,
        session_id: str,
        message: Any,
        *,
        now: float | None = None,
        owner: str | None = None,
        step: bool = False,
        reject_if_busy: bool = False,
        max_pending: int = 0,
    ) -> LiveEntry | None:
        """Send ``message`` to the live actor of ``session_id``; None if it is not live.

        For a step (``step=True``) the entry's ``pending`` count is raised and
        checked against ``max_pending`` and ``reject_if_busy`` first, its
        ``last_used`` set to ``now``, and the step counted in ``in_flight``
        until `finish` (or `release`): one lock per step each way.

        Raises:
            SessionNotFound: ``owner`` (the caller) is given and may not: a step
                needs the owner or a member with write access, anything else
                the owner or any member.
            SessionBusy: the mailbox is full, or a step is running or queued and
                ``reject_if_busy`` is set.
        """
        with self.lock:
            entry = self._awake.get(session_id)
            if entry is None or entry.ref is None:
                return None
            if owner is not None and not allows(
                entry.owner, entry.members, owner, "write" if step else "read"
            ):
                raise SessionNotFound(session_id)
            if step:
                if entry.pending >= max_pending:
                    raise SessionBusy(session_id, mailbox_full=True)
                if reject_if_busy and entry.pending > 0:
                    raise SessionBusy(session_id)
                entry.pending += 1
                entry.requests += 1
                if now is not None:
                    entry.last_used = now
                self._awake.move_to_end(session_id)
            try:
                entry.ref.tell(message)
            except pykka.ActorDeadError:
                # The actor died without the supervisor removing it (it failed to
                # start): let the caller go through the supervisor, which replaces it.
                if step:
                    entry.pending -= 1
                return None
            if step:
                self.in_flight += 1
            return entry

    def finish(self, entry: LiveEntry, *, failed: bool) -> None:
        """Account for one answered step of ``entry`` (it leaves ``in_flight``)."""
        with self.lock:
            entry.pending -= 1
            if failed:
                self.errors += 1
            else:
                self.steps += 1
            self._ended(1)

    def release(self, entry: LiveEntry, n: int) -> None:
        """Take ``n`` steps off ``entry``'s pending count without answering them.

        Used when a stopping actor hands its unrun steps back to the supervisor,
        which sends them to the next incarnation.
        """
        with self.lock:
            entry.pending -= n
            self._ended(n)

    def begin(self) -> None:
        """Count one more request a caller waits on (steps are counted by `send`)."""
        with self.lock:
            self.in_flight += 1

    def end(self) -> None:
        """A request counted by ``begin`` was answered."""
        with self.lock:
            self._ended(1)

    def _ended(self, n: int) -> None:
        """Under the lock: ``n`` requests left ``in_flight``."""
        self.in_flight -= n
        if self.in_flight == 0:
            self.changed.notify_all()

    def wait_drained(self, timeout: float) -> bool:
        """Wait until no request is in flight; False if ``timeout`` passed first."""
        with self.changed:
            return self.changed.wait_for(lambda: self.in_flight == 0, timeout)

    def get(self, session_id: str) -> LiveEntry | None:
        """The entry of ``session_id`` (awake or hibernated), or None."""
        with self.lock:
            return self._entry(session_id)

    def _entry(self, session_id: str) -> LiveEntry | None:
        """Under the lock: the entry of ``session_id`` in either map, or None."""
        entry = self._awake.get(session_id)
        return self._hibernated.get(session_id) if entry is None else entry

    def _has(self, session_id: str) -> bool:
        return session_id in self._awake or session_id in self._hibernated

    def is_live(self, session_id: str) -> bool:
        """Whether ``session_id`` has a live or stopping actor."""
        with self.lock:
            return self._has(session_id) or session_id in self._stopping

    def wait_gone(self, session_id: str, timeout: float) -> bool:
        """Wait until ``session_id`` has no live or stopping actor; False on timeout."""
        with self.changed:
            return self.changed.wait_for(
                lambda: not self._has(session_id) and session_id not in self._stopping,
                timeout,
            )

    def wait_gone_of_stopping(self, session_id: str, timeout: float) -> bool:
        """Wait until no actor of ``session_id`` is stopping (its last save is done)."""
        with self.changed:
            return self.changed.wait_for(lambda: session_id not in self._stopping, timeout)

    def entries(self) -> list[LiveEntry]:
        """A snapshot of the live entries: the hibernated ones, then the awake ones, each
        in about use order (see `_by_use`; sort them outside the lock if it matters:
        sorting 100,000 under it would hold up every step)."""
        with self.lock:
            return [*self._hibernated.values(), *self._awake.values()]

    def _by_use(self) -> Iterator[LiveEntry]:
        """Under the lock: every entry, about least recently used first, lazily (a caller
        that stops early reads few).

        The awake map is in use order; the hibernated one in the order its entries
        hibernated, which is their use order but for a session whose actor put
        off hibernating (a save still in flight): it comes after entries used
        later, so a sweep that stops at the first recent entry finds it late, by
        at most the time between their uses.
        """
        hibernated: Iterator[LiveEntry] = iter(self._hibernated.values())
        return heapq.merge(hibernated, self._awake.values(), key=_LAST_USED)

    def __len__(self) -> int:
        with self.lock:
            return len(self._awake) + len(self._hibernated)

    def hibernated_count(self) -> int:
        """How many live sessions are hibernated now (kept as bytes, no actor)."""
        with self.lock:
            return len(self._hibernated)

    # --- the supervisor --------------------------------------------------------

    def add(self, entry: LiveEntry) -> None:
        """Make ``entry`` live (supervisor only)."""
        with self.lock:
            self._awake[entry.session_id] = entry
            self.changed.notify_all()

    def remove(
        self, session_id: str, *, incarnation: int | None = None, when: Callable[[LiveEntry], bool]
    ) -> LiveEntry | None:
        """Remove the entry if ``when(entry)`` holds; it is then ``stopping`` (supervisor only).

        With ``incarnation``, only that incarnation is removed.
        """
        with self.lock:
            entry = self._entry(session_id)
            if entry is None or (incarnation is not None and entry.incarnation != incarnation):
                return None
            if not when(entry):
                return None
            if self._awake.pop(session_id, None) is None:
                del self._hibernated[session_id]
            self._stopping[session_id] = entry.incarnation
            return entry

    # --- hibernation ----------------------------------------------------------------

    def hibernate(
        self, entry: LiveEntry, ref: pykka.ActorRef[Any], frozen: bytes, last_used: float
    ) -> bool:
        """Drop ``entry``'s actor and keep ``frozen`` instead, if it is still live with
        that actor, unused since ``last_used`` and nothing is queued for it (its actor,
        in its turn). Callers send under this lock, so after it no request reaches
        the actor; False leaves everything as it was.
        """
        with self.lock:
            if (
                self._awake.get(entry.session_id) is not entry
                or entry.ref is not ref
                or entry.pending != 0
                or entry.last_used != last_used
                or not ref.actor_inbox.empty()
            ):
                return False
            # the actor, the entry's only other holder, stops after this
            del self._awake[entry.session_id]
            self._hibernated[entry.session_id] = HibernatedEntry(
                **{**msgspec.structs.asdict(entry), "ref": None, "frozen": frozen}
            )
            self.changed.notify_all()
            return True

    def hibernated(self, session_id: str) -> HibernatedEntry | None:
        """The entry of ``session_id`` if it is hibernated, else None."""
        with self.lock:
            return self._hibernated.get(session_id)

    @staticmethod
    def waking(entry: HibernatedEntry) -> LiveEntry:
        """The awake entry a hibernated one becomes (given to its new actor, then `wake`)."""
        return LiveEntry(**{**msgspec.structs.asdict(entry), "frozen": None})

    def wake(self, entry: LiveEntry, ref: pykka.ActorRef[Any], incarnation: int) -> None:
        """Put ``entry`` (from `waking`) in place of its hibernated one, with its new actor
        (supervisor only)."""
        with self.lock:
            entry.ref = ref
            entry.incarnation = incarnation
            del self._hibernated[entry.session_id]
            self._awake[entry.session_id] = entry

    def awake_since(self, used_before: float) -> list[LiveEntry]:
        """Awake entries last used before ``used_before``, least recently used first."""
        found: list[LiveEntry] = []
        with self.lock:
            for entry in self._awake.values():
                if entry.last_used >= used_before:
                    break
                found.append(entry)
        return found

    def stopped(self, session_id: str, incarnation: int) -> None:
        """The stopping actor of ``session_id`` has stopped (supervisor only)."""
        with self.lock:
            if self._stopping.get(session_id) == incarnation:
                del self._stopping[session_id]
            self.epoch += 1
            self.changed.notify_all()

    def bump(self) -> None:
        """A stored session was deleted: snapshots read before now may be stale."""
        with self.lock:
            self.epoch += 1

    def stopping(self, session_id: str) -> bool:
        """Whether an actor of ``session_id`` is stopping."""
        with self.lock:
            return session_id in self._stopping

    def stopping_count(self) -> int:
        """How many actors are stopping."""
        with self.lock:
            return len(self._stopping)

    def least_recent(self, used_before: float) -> list[LiveEntry]:
        """Entries last used before ``used_before``, about least recently used first.

        Entries are kept in about use order (see `_by_use`), so this stops at the
        first recent one instead of scanning every live session.
        """
        found: list[LiveEntry] = []
        with self.lock:
            for entry in self._by_use():
                if entry.last_used >= used_before:
                    break
                found.append(entry)
        return found

    def eviction_candidates(self, limit: int) -> list[LiveEntry]:
        """Up to ``limit`` entries, least recently used first, idle ones before busy ones."""
        with self.lock:
            idle = list(islice((e for e in self._by_use() if e.pending == 0), limit))
            if len(idle) < limit:
                busy = (e for e in self._awake.values() if e.pending > 0)
                idle.extend(islice(busy, limit - len(idle)))
        return idle
