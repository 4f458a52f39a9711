"""actorflow's exceptions, grouped by what the caller does next.

The whole tree (``runtime.errors`` re-exports it; the HTTP layer maps it to
statuses in one table)::

    ActorflowError
    ├── InvalidInput            fix the request (HTTP 422)
    │   ├── GraphInvalid        a graph failed validation at build() (names the task)
    │   ├── SessionTooLarge     the step would grow the session past its cap (413)
    │   └── IdempotencyKeyReused  a step's key was used before with another input (422)
    ├── SessionNotFound         no such session, or not yours (404)
    │   └── RevisionNotFound    that revision is outside the retained history (404)
    ├── GraphNotFound           no graph with that id (or version) (404)
    ├── GraphVersionUnavailable the session's graph version is not served (409)
    │   └── MigrationFailed     a migration raised or returned a bad session (409)
    ├── TaskNotFound            GoTo/edge names a task the graph lacks (500, task-failed)
    ├── SessionCompleted        the session has ended; start a new one (409)
    ├── SessionQuotaExceeded the user holds the most sessions allowed; delete some (403)
    ├── SessionBusy             retry later: a step is running or the mailbox is full (409/429)
    ├── TaskFailed              the task raised; the session was rolled back (500)
    ├── StepTimeout             the step passed its deadline; rolled back (504)
    ├── StoreUnavailable        the store cannot be reached or written; retry (503)
    │   ├── RevisionConflict    compare-and-set lost: someone saved a newer revision
    │   └── Misdirected         not run: accepted under a lease this process lost (421)
    ├── SnapshotDecodeError     stored bytes could not be decoded (row quarantined)
    └── RuntimeClosed           the runtime was closed; open a new one

They live in ``flow`` because the engine and the stores raise them and
``flow`` may not import the layers above it.
"""

from __future__ import annotations

__all__ = [
    "ActorflowError",
    "GraphInvalid",
    "GraphNotFound",
    "GraphVersionUnavailable",
    "IdempotencyKeyReused",
    "InvalidInput",
    "MigrationFailed",
    "Misdirected",
    "RevisionConflict",
    "RevisionNotFound",
    "RuntimeClosed",
    "SessionBusy",
    "SessionCompleted",
    "SessionNotFound",
    "SessionQuotaExceeded",
    "SessionTooLarge",
    "SnapshotDecodeError",
    "StepTimeout",
    "StoreUnavailable",
    "TaskFailed",
    "TaskNotFound",
    "TooManyWatchers",
]


class ActorflowError(Exception):
    """Base class of every error actorflow raises to its callers.

    Attributes:
        request_id: the daemon's ``X-Request-ID`` of the request that failed, when
            the error came over HTTP (``runtime.client``); None in process.
    """

    request_id: str | None = None


class InvalidInput(ActorflowError, ValueError):
    """The caller passed something actorflow cannot accept (fix the request)."""


class GraphInvalid(InvalidInput):
    """A graph failed validation in ``GraphBuilder.build()``; the message names the task."""


class SessionTooLarge(InvalidInput):
    """The step's resulting session would exceed ``max_session_bytes``; nothing was
    stored and the session is as it was (send less, or remove context keys)."""


class IdempotencyKeyReused(InvalidInput):
    """A step carried the key of an earlier step of this session with another input or mode.

    Nothing ran; use a fresh key for a new step.
    """

    def __init__(self, session_id: str, key: str) -> None:
        super().__init__(
            f"session {session_id!r}: idempotency key {key!r} was used by an earlier step "
            "with another input or mode; use a new key for a new step"
        )
        self.session_id = session_id
        self.key = key


class SessionNotFound(ActorflowError, LookupError):
    """No session with this id exists for this caller."""

    def __init__(self, session_id: str, message: str | None = None) -> None:
        super().__init__(message or f"session {session_id!r} not found")
        self.session_id = session_id


class RevisionNotFound(SessionNotFound):
    """The session exists but the revision asked for is not in its retained history.

    Attributes:
        revision: the revision asked for.
        oldest, newest: the retained range (time travel reaches these and those between).
    """

    def __init__(self, session_id: str, revision: int, oldest: int, newest: int) -> None:
        super().__init__(
            session_id,
            f"session {session_id!r} has no revision {revision}: the retained history "
            f"holds revisions {oldest} to {newest}",
        )
        self.revision = revision
        self.oldest = oldest
        self.newest = newest


class GraphNotFound(ActorflowError, LookupError):
    """No graph with this id (or no such version of it) is registered."""

    def __init__(self, graph_id: str, message: str | None = None) -> None:
        super().__init__(message or f"graph {graph_id!r} not found")
        self.graph_id = graph_id


class GraphVersionUnavailable(ActorflowError):
    """A stored session's graph version is not served and no migration leads from it.

    The session is untouched; it runs again once its version (or a migration from
    it) is served. The message names the session's version, the versions served
    and the fix.
    """

    def __init__(
        self,
        session_id: str,
        graph_id: str,
        version: str,
        served: list[str],
        message: str | None = None,
    ) -> None:
        shown = ", ".join(repr(v) for v in served) or "none"
        super().__init__(
            message
            or (
                f"session {session_id!r} runs graph {graph_id!r} version {version!r}, which "
                f"is not served (served versions: {shown}) and no migration leads from it; "
                f"fix: serve version {version!r} again next to the new one, or register "
                f"Migration(graph={graph_id!r}, from_version={version!r}, to_version=...)"
            )
        )
        self.session_id = session_id
        self.graph_id = graph_id
        self.version = version
        self.served = list(served)


class MigrationFailed(GraphVersionUnavailable):
    """A migration raised (or returned a session the target graph cannot run).

    Nothing was saved: the session is as it was. The original exception, if any,
    is ``__cause__``.
    """


class TaskNotFound(ActorflowError, LookupError):
    """A task id named by an edge or a GoTo is not in the graph."""

    def __init__(self, task_id: str, graph_id: str | None = None) -> None:
        where = f" in graph {graph_id!r}" if graph_id else ""
        super().__init__(f"task {task_id!r} not found{where}")
        self.task_id = task_id
        self.graph_id = graph_id


class SessionCompleted(ActorflowError):
    """A step was asked of a session that has already completed."""

    def __init__(self, session_id: str) -> None:
        super().__init__(
            f"session {session_id!r} is completed; create a new session to start again"
        )
        self.session_id = session_id


class SessionQuotaExceeded(ActorflowError):
    """The owner holds ``max_sessions_per_user`` sessions; nothing was created
    (delete sessions, or wait for some to expire)."""


class SessionBusy(ActorflowError):
    """The session is busy: a step is running (``on_busy='reject'``) or its mailbox is full.

    Attributes:
        mailbox_full: True when the per-session ``max_pending`` bound was hit (HTTP 429),
            False when ``on_busy='reject'`` found a step running (HTTP 409).
    """

    def __init__(self, session_id: str, *, mailbox_full: bool = False) -> None:
        why = "mailbox is full" if mailbox_full else "a step is already running"
        super().__init__(f"session {session_id!r} is busy: {why}")
        self.session_id = session_id
        self.mailbox_full = mailbox_full


class TooManyWatchers(ActorflowError):
    """The session (``max_tails_per_session``) or the runtime (``max_tails``) has as many
    live tails (``tail``, ``GET /v1/sessions/{id}/events``) as allowed; close one, or
    retry later. Streams of one's own steps are not counted."""

    def __init__(self, session_id: str, detail: str) -> None:
        super().__init__(detail)
        self.session_id = session_id


class TaskFailed(ActorflowError):
    """A task raised; the session was left exactly as it was before the step.

    The original exception is ``__cause__`` and also ``cause``.
    """

    def __init__(self, task_id: str, cause: BaseException, session_id: str | None = None) -> None:
        super().__init__(f"task {task_id!r} failed: {type(cause).__name__}: {cause}")
        self.task_id = task_id
        self.cause = cause
        self.session_id = session_id
        self.__cause__ = cause


class StepTimeout(ActorflowError, TimeoutError):
    """A step ran past ``step_timeout``; the session was left as it was."""

    def __init__(self, session_id: str, timeout: float) -> None:
        super().__init__(f"step on session {session_id!r} exceeded {timeout:g} s")
        self.session_id = session_id
        self.timeout = timeout


class StoreUnavailable(ActorflowError):
    """The session store could not be reached or written; nothing was acknowledged."""


class RevisionConflict(StoreUnavailable):
    """A compare-and-set save lost: the stored revision is not the expected one."""

    def __init__(self, session_id: str, expected: int | None, actual: int | None) -> None:
        super().__init__(
            f"session {session_id!r}: expected stored revision {expected}, found {actual}"
        )
        self.session_id = session_id
        self.expected = expected
        self.actual = actual


class Misdirected(StoreUnavailable):
    """A step was not run, and never will be: it was accepted under a lease grant (epoch)
    this process no longer holds, or it would have started after the deadline of the
    daemon that forwarded it (docs/cluster.md). Nothing was applied; retry (HTTP 421).
    """

    def __init__(self, session_id: str, why: str) -> None:
        super().__init__(f"session {session_id!r}: the step was not run: {why}; retry")
        self.session_id = session_id


class SnapshotDecodeError(ActorflowError):
    """Stored bytes could not be decoded into a session.

    Attributes:
        raw: the bytes that failed to decode (kept so nothing is lost).
    """

    def __init__(self, message: str, raw: bytes) -> None:
        super().__init__(message)
        self.raw = raw


class RuntimeClosed(ActorflowError):
    """The runtime has been closed and takes no more requests."""
