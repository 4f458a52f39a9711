"""A session: one conversation's position in a graph, its context and its metadata."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

import msgspec

from flow._context import Context

if TYPE_CHECKING:
    from flow._idempotency import KeyTable
    from flow._record import StepRecord
    from flow._timers import PendingTimer

__all__ = [
    "ACCESS_LEVELS",
    "STATUSES",
    "STATUS_OF",
    "Access",
    "Session",
    "SessionMetadata",
    "SessionStatus",
    "StepFailure",
    "claim_session_ids",
    "new_session_id",
]

Access = Literal["read", "write"]
"""What a member may do: ``read`` the session, or ``write`` (step) it too."""
ACCESS_LEVELS: tuple[Access, ...] = ("read", "write")


class SessionStatus(StrEnum):
    """Where a session stands between steps.

    The engine reads a status's text as ``status._value_`` (a plain attribute of
    each member), not ``status.value`` (two Python-level calls in 3.11's ``enum``):
    a step reads it several times.
    """

    PAUSED = "paused"
    WAITING_FOR_INPUT = "waiting_for_input"
    COMPLETED = "completed"
    ERROR = "error"


STATUS_OF: dict[str, SessionStatus] = {status.value: status for status in SessionStatus}
"""Each status by its text: a ``KeyError`` for any other text, without an enum call
(a load reads one per snapshot and record)."""
STATUSES: dict[str, str] = {text: text for text in STATUS_OF}
"""A stored status's text, checked the same way (a record holds the text, not the member)."""

_claims: Callable[[str], bool] | None = None


def claim_session_ids(accept: Callable[[str], bool] | None) -> None:
    """Draw only the session ids ``accept`` takes from now on, in this process (None: any).

    A worker of ``actorflowd --workers N`` owns the ids that hash to its shard: it
    sets this once at start, before any session is created (it draws N ids on average).
    """
    global _claims
    _claims = accept


def new_session_id() -> str:
    """A fresh session id (UUID4, canonical string form; one ``claim_session_ids`` takes)."""
    session_id = str(uuid.uuid4())
    while _claims is not None and not _claims(session_id):
        session_id = str(uuid.uuid4())
    return session_id


class SessionMetadata(msgspec.Struct, frozen=True, gc=False):
    """Who owns a session and how it has been used. Times are UNIX epoch seconds.

    ``members``: the other users the owner shared it with, ``(user, access)``
    sorted by user (``Runtime.share``); a change of them is a revision.
    """

    owner: str
    created_at: float
    last_accessed: float
    request_count: int = 0
    client_addr: str | None = None
    expires_at: float | None = None
    members: tuple[tuple[str, Access], ...] = ()

    def access_of(self, user: str) -> Access | None:
        """What ``user`` may do as a member (None: not a member; the owner is not one)."""
        for member, access in self.members:
            if member == user:
                return access
        return None


@dataclass(frozen=True, slots=True)
class StepFailure:
    """A session's last failed step, as ``inspect`` shows it (``time``: UNIX seconds)."""

    type: str
    message: str
    task: str
    time: float

    def to_dict(self) -> dict[str, str | float]:
        """Plain values for JSON."""
        return {"type": self.type, "message": self.message, "task": self.task, "time": self.time}


@dataclass(slots=True, eq=True)
class Session:
    """One session's whole state: what a snapshot holds.

    ``step`` never mutates a session it is given: it works on ``copy()`` and returns
    the new one, so the committed session is untouched when a task raises.
    """

    session_id: str
    graph_id: str
    graph_version: str
    current_task: str
    status: SessionStatus
    context: Context
    metadata: SessionMetadata
    revision: int = 0
    back_stack: list[str] = field(default_factory=list)
    status_message: str | None = None
    #: The idempotency keys of its recent keyed steps (``flow._idempotency``; None:
    #: none yet). Shared by ``copy``: only the session actor adds to it, in its turn.
    keys: KeyTable | None = field(default=None, compare=False, repr=False)
    #: Its pending timers, soonest first (``flow._timers``): set by steps, saved with them.
    timers: tuple[PendingTimer, ...] = ()
    #: The log record of the step that made this session from revision - 1 (set by
    #: ``step``; None for a session made any other way). A store appends it instead
    #: of writing the whole session. Not copied, not compared, reset by ``replace``.
    #: Its status, task and metadata are read from the session at save time; a
    #: change to the context, history or back stack after the step must set it to
    #: None, so that the session is saved whole.
    record: StepRecord | None = field(default=None, init=False, compare=False, repr=False)
    #: The last step that failed (a failed step writes no revision: the session
    #: actor saves the note with the session's next whole snapshot, at the latest
    #: when it passivates, so it survives passivation but not a crash).
    last_failure: StepFailure | None = field(default=None, compare=False, repr=False)
    #: When rebuilt from stored bytes (``flow.stores._log.rebuild``): the encoded size of
    #: the base it started from, and that size plus its records' (an upper bound of its
    #: own encoded size, as a record holds all a step changed). Lets the session actor
    #: skip encoding a long session whole to measure it after an activation. Not copied.
    stored_size: tuple[int, int] | None = field(default=None, init=False, compare=False, repr=False)

    def copy(self) -> Session:
        """An independent working copy (see ``Context.copy`` for what it shares)."""
        return Session(
            self.session_id,
            self.graph_id,
            self.graph_version,
            self.current_task,
            self.status,
            self.context.copy(),
            self.metadata,
            self.revision,
            list(self.back_stack),
            self.status_message,
            self.keys,
            self.timers,
            self.last_failure,
        )
