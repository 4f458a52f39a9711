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
"""

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
]
