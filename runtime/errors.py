"""actorflow's exceptions, grouped by what the caller does next.

Every error a runtime raises is an ``ActorflowError``; pykka's own exceptions
never reach a caller. The tree (the HTTP layer maps it to statuses in one
table)::

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
    ├── TooManyWatchers         the session or runtime has the most tails allowed (429)
    ├── TaskFailed              the task raised; the session was rolled back (500)
    ├── StepTimeout             the step passed its deadline; rolled back (504)
    ├── StoreUnavailable        the store cannot be reached or written; retry (503)
    │   ├── RevisionConflict    compare-and-set lost: someone saved a newer revision
    │   └── Misdirected         not run: accepted under a lease this process lost (421)
    ├── SnapshotDecodeError     stored bytes could not be decoded (row quarantined)
    └── RuntimeClosed           the runtime was closed; open a new one

A session actor that crashes (an unexpected exception inside the actor, not a
task's) answers the request in hand with ``StoreUnavailable`` (retry: the
session restarts from its last committed snapshot); after ``max_restarts``
within ``restart_window`` the session is stored with status ``error`` and its
steps fail with ``TaskFailed`` naming the crashes.

Over HTTP each error is a problem+json type ``urn:actorflow:problem:<slug>``.
``PROBLEM_TYPES`` is the one table of those slugs: the daemon answers with its
rows (``runtime.daemon._problems``) and the client reads them back
(``runtime.client._errors``); a test keeps both to exactly this table. It
is left out of ``__all__``: the HTTP layers' table, not an error.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from flow._errors import (
    ActorflowError,
    GraphInvalid,
    GraphNotFound,
    GraphVersionUnavailable,
    IdempotencyKeyReused,
    InvalidInput,
    MigrationFailed,
    Misdirected,
    RevisionConflict,
    RevisionNotFound,
    RuntimeClosed,
    SessionBusy,
    SessionCompleted,
    SessionNotFound,
    SessionQuotaExceeded,
    SessionTooLarge,
    SnapshotDecodeError,
    StepTimeout,
    StoreUnavailable,
    TaskFailed,
    TaskNotFound,
    TooManyWatchers,
)

__all__ = [
    "ActorflowError",
    "GraphInvalid",
    "GraphNotFound",
    "GraphVersionUnavailable",
    "IdempotencyKeyReused",
    "InvalidInput",
    "MigrationFailed",
    "Misdirected",
    "ProblemType",
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


@dataclass(frozen=True, slots=True)
class ProblemType:
    """One problem+json type the daemon answers: its status, slug and title.

    ``retry_after``: the seconds sent in ``Retry-After`` (None: no header).
    """

    status: int
    slug: str
    title: str
    retry_after: int | None = None


PROBLEM_TYPE_PREFIX = "urn:actorflow:problem:"
"""A problem type's URI is this prefix and its slug."""

PROBLEM_TYPES: Mapping[str, ProblemType] = {
    row.slug: row
    for row in (
        ProblemType(400, "malformed-json", "Malformed JSON"),
        ProblemType(400, "bad-request", "Bad request"),
        ProblemType(400, "non-canonical-path", "Non-canonical path"),
        ProblemType(401, "unauthorized", "Unauthorized"),
        ProblemType(403, "forbidden-host", "Host not allowed"),
        ProblemType(403, "forbidden-origin", "Cross-origin request refused"),
        ProblemType(403, "session-quota-exceeded", "Too many sessions"),
        ProblemType(404, "session-not-found", "Session not found"),
        ProblemType(404, "revision-not-found", "Revision not retained"),
        ProblemType(404, "graph-not-found", "Graph not found"),
        ProblemType(404, "not-found", "Not found"),
        ProblemType(405, "method-not-allowed", "Method not allowed"),
        ProblemType(409, "graph-version-unavailable", "Graph version unavailable"),
        ProblemType(409, "session-busy", "Session busy"),
        ProblemType(409, "session-completed", "Session completed"),
        ProblemType(413, "body-too-large", "Request body too large"),
        ProblemType(413, "session-too-large", "Session too large"),
        ProblemType(415, "unsupported-media-type", "Unsupported media type"),
        ProblemType(421, "misdirected", "Misdirected request"),
        ProblemType(422, "invalid-request", "Invalid request"),
        ProblemType(422, "idempotency-key-reused", "Idempotency key reused"),
        ProblemType(429, "mailbox-full", "Session mailbox full", retry_after=1),
        ProblemType(429, "rate-limited", "Too many steps", retry_after=1),
        ProblemType(429, "too-many-watchers", "Too many watchers", retry_after=5),
        ProblemType(431, "headers-too-large", "Request header fields too large"),
        ProblemType(500, "task-failed", "Task failed"),
        ProblemType(500, "snapshot-unreadable", "Stored session unreadable"),
        ProblemType(500, "internal-error", "Internal server error"),
        ProblemType(503, "overloaded", "Too many steps in flight", retry_after=1),
        ProblemType(503, "store-unavailable", "Store unavailable", retry_after=1),
        ProblemType(503, "outcome-unknown", "Outcome unknown", retry_after=1),
        ProblemType(503, "draining", "The daemon is shutting down", retry_after=5),
        ProblemType(503, "runtime-closed", "Runtime closed", retry_after=5),
        ProblemType(504, "step-timeout", "Step timed out"),
    )
}
"""Every problem type the daemon answers, by slug (docs/http-api.md lists them)."""
