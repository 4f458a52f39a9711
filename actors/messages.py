"""The messages session and supervisor actors exchange: frozen ``msgspec.Struct`` types
(one is built per message; a frozen dataclass, which sets each field through
``object.__setattr__``, was 10-20 times slower to build).

Requests carry a ``reply`` callable instead of relying on pykka's ask futures:
the actor (or the store writer, after the commit that holds a step) calls
``reply(outcome)`` exactly once, where ``outcome`` is the answer or the
``BaseException`` to raise in the caller. The sync facade completes a
``concurrent.futures.Future`` with it; the async facade completes an asyncio
future through ``loop.call_soon_threadsafe``. Nobody blocks on a pykka future.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Literal

import msgspec

if TYPE_CHECKING:
    from actors._event_hub import Subscriber
    from flow._session import Access, Session
    from flow._step import StepResult

__all__ = [
    "Activate",
    "ActorCrashed",
    "ActorStopped",
    "CommitFailed",
    "Crash",
    "Edit",
    "ExpiredFound",
    "Forget",
    "Hibernate",
    "Inspect",
    "Kill",
    "Loaded",
    "LoadedMany",
    "Passivate",
    "PassivateRequest",
    "Reply",
    "Retire",
    "Shutdown",
    "Snapshot",
    "Step",
    "StepDeadline",
    "Sweep",
    "TaskDone",
    "ViewSession",
]

Reply = Callable[[Any], None]
"""Called once with the answer, or with the exception the caller should raise."""

StepMode = Literal["step", "run"]
OnBusy = Literal["enqueue", "reject"]


# --- to a SessionActor -------------------------------------------------------


class Edit(msgspec.Struct, frozen=True):
    """A repair from outside, carried by a ``Step`` (see ``flow._edit.edit``).

    With ``migrate_to``, the edit moves the session to that graph version through
    the registered migrations instead (``actorflow sessions migrate``).
    """

    set: dict[str, Any]
    unset: tuple[str, ...]
    goto: str | None
    by: str
    migrate_to: str | None = None
    share: tuple[str, Access | None] | None = None
    """``(user, access)``: give ``user`` that access (None: take it away) instead
    (``Runtime.share``; ``flow._sharing.shared``)."""


class Step(msgspec.Struct, frozen=True):
    """Run one step (``mode="step"``) or run until waiting/completed (``mode="run"``).

    ``reply`` receives the ``StepResult`` after the snapshot holding it is
    committed (or at once in ``passivate`` durability), or an ``ActorflowError``.
    A step with an idempotency ``key`` (and ``digest``, of its mode and input,
    ``flow._idempotency``) whose key the session remembers is answered from its
    key table instead of running. With ``edit``, the step applies that edit
    instead of running a task: it queues in the mailbox and commits like any step.
    """

    session_id: str
    input: Any
    mode: StepMode
    reply: Reply
    caller_context: contextvars.Context | None = None
    """The caller's context variables (structlog's ``request_id``...), for the step's
    failure log; copying them is O(1), reading them happens only when a step fails."""
    key: str | None = None
    digest: bytes | None = None
    fire_timer: bool = False
    edit: Edit | None = None
    stream: Subscriber | None = None
    """The step's own stream (``Runtime.stream``): it gets this step's events."""
    epoch: int | None = None
    """In a cluster, the lease epoch the step was accepted under: the one it was forwarded
    under, or (set by the actor when the step reaches it) the one this node held then. The
    actor runs it only while this node holds that grant, else ``Misdirected``."""
    deadline: float | None = None
    """UNIX time after which the step must not start (a forwarded step: when its forwarder
    gives up); past it the actor answers ``Misdirected``."""


class TaskDone(msgspec.Struct, frozen=True):
    """A step that ran off the actor (task pool or event loop) has finished.

    ``seq`` tags the step; a ``TaskDone`` whose step already timed out is dropped.
    """

    seq: int
    future: Future[tuple[Session, StepResult]]


class StepDeadline(msgspec.Struct, frozen=True):
    """The step tagged ``seq`` has reached ``step_timeout``."""

    seq: int


class CommitFailed(msgspec.Struct, frozen=True):
    """The store failed to commit a snapshot of lineage ``lineage``: reload."""

    lineage: int
    revision: int
    error: BaseException


class Inspect(msgspec.Struct, frozen=True):
    """Answer a dict describing the live session (``Runtime.inspect``)."""

    reply: Reply
    history_tail: int = 10


class ViewSession(msgspec.Struct, frozen=True):
    """Answer a deep copy of the session (``Runtime.get_session`` of a live session)."""

    reply: Reply


class Snapshot(msgspec.Struct, frozen=True):
    """Save the session now; answer the number of bytes written after the commit."""

    reply: Reply


class Passivate(msgspec.Struct, frozen=True):
    """Finish what is queued, save if dirty, then stop (sent after index removal).

    With ``force`` the running step and every queued step are answered with
    ``error`` instead of being run (used when a drain timed out).
    """

    reason: str
    force: bool = False
    error: BaseException | None = None


class Hibernate(msgspec.Struct, frozen=True):
    """Keep the session as encoded bytes in the live index and stop, if still idle
    and unused since ``last_used`` with every save committed (else: ignored)."""

    last_used: float


class Kill(msgspec.Struct, frozen=True):
    """Stop at once without saving what is not yet committed.

    Steps waiting in the stash are handed back to the supervisor to run on the
    next incarnation (``reroute``) or answered with ``error``.
    """

    reroute: bool
    error: BaseException


class Retire(msgspec.Struct, frozen=True):
    """Sent by the supervisor to a crashed actor once it left the index: stop now."""


class Crash(msgspec.Struct, frozen=True):
    """Fault injection for tests: the actor raises ``RuntimeError`` while handling it.

    It exercises the same path as any unexpected exception inside the actor
    (not a task failure): the supervisor restarts the session from its last
    committed snapshot.
    """

    reply: Reply | None = None


# --- to the SupervisorActor --------------------------------------------------


class Activate(msgspec.Struct, frozen=True):
    """Make ``session_id`` live, then deliver ``step`` (if any) to it.

    Without a ``step``, ``reply`` is answered with True once the session is
    live. Errors (``SessionNotFound``, ``SessionBusy``...) go to the step's reply,
    or to ``reply``.

    ``preloaded`` is the session as the caller read it from the store when the
    live index's ``epoch`` was ``epoch``; the supervisor uses it (instead of
    reading the store again) only if no actor stopped and no session was
    deleted since, which proves it is the latest committed snapshot.

    ``ask`` (a message with a ``reply``, e.g. ``Inspect``) is sent to the
    session's actor once it is live: how a hibernated session is asked.
    """

    session_id: str
    owner: str | None
    step: Step | None = None
    on_busy: OnBusy = "enqueue"
    reply: Reply | None = None
    preloaded: Session | None = None
    epoch: int = -1
    ask: Inspect | ViewSession | Snapshot | None = None


class Loaded(msgspec.Struct, frozen=True):
    """A store-pool job about one session is done (a read, an expiry, a mark-error).

    ``outcome`` is the session, None (no such session) or the error to give
    every activation of it that waited for the job.
    """

    session_id: str
    outcome: Session | BaseException | None


class LoadedMany(msgspec.Struct, frozen=True):
    """A batch of snapshot reads is done: one message for the whole batch."""

    loaded: tuple[Loaded, ...]


class ExpiredFound(msgspec.Struct, frozen=True):
    """The store pool's scan for sessions expired at ``now`` (or the error it raised).

    ``reply`` is the sweep's caller, answered once the expired sessions are deleted.
    """

    session_ids: list[str] | BaseException
    now: float
    reply: Reply | None = None


class ActorStopped(msgspec.Struct, frozen=True):
    """A session actor has stopped and its last save has completed.

    ``steps`` are requests it had not run, to run on the next incarnation.
    """

    session_id: str
    incarnation: int
    steps: tuple[Step, ...] = ()
    crashed: BaseException | None = None


class ActorCrashed(msgspec.Struct, frozen=True):
    """A session actor raised an unexpected exception; remove it and restart it."""

    session_id: str
    incarnation: int
    error: BaseException


class PassivateRequest(msgspec.Struct, frozen=True):
    """Passivate ``session_id`` if it is idle (``reason`` is logged).

    ``reply`` (optional) receives True if the session was live and is now
    passivating, False otherwise.
    """

    session_id: str
    reason: str
    reply: Reply | None = None
    kill: bool = False


class Forget(msgspec.Struct, frozen=True):
    """Stop ``session_id``'s actor without saving, before the session is deleted.

    Answers ``reply`` with True once no new activation can start (queued steps
    are answered ``SessionNotFound``). Activations of the id are refused until
    a ``Forget(session_id, reply, release=True)`` says the store row is gone.
    """

    session_id: str
    reply: Reply
    release: bool = False


class Sweep(msgspec.Struct, frozen=True):
    """Passivate idle and waiting sessions and delete expired ones."""

    reply: Reply | None = None


class Shutdown(msgspec.Struct, frozen=True):
    """Passivate every live session; answer ``reply`` once all have stopped."""

    reply: Reply
    force_error: BaseException | None = None
