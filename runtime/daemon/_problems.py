"""The one table that maps errors to HTTP statuses, and problem+json bodies (RFC 9457).

Every error the daemon returns is ``application/problem+json`` with ``type``,
``title``, ``status`` and ``detail``, plus ``session_id`` when one is known. The
``type`` is ``urn:actorflow:problem:<slug>``; docs/http-api.md lists the slugs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec

from runtime.errors import (
    ActorflowError,
    GraphNotFound,
    GraphVersionUnavailable,
    IdempotencyKeyReused,
    InvalidInput,
    Misdirected,
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
    "PROBLEM_CONTENT_TYPE",
    "TYPE_PREFIX",
    "Problem",
    "ProblemDetail",
    "ProblemKind",
    "problem_for",
    "problem_for_error",
]

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:actorflow:problem:"


@dataclass(frozen=True, slots=True)
class ProblemKind:
    """One row of the table: a status, the type's slug and its title."""

    status: int
    slug: str
    title: str
    retry_after: int | None = None


MALFORMED_JSON = ProblemKind(400, "malformed-json", "Malformed JSON")
UNAUTHORIZED = ProblemKind(401, "unauthorized", "Unauthorized")
NOT_FOUND = ProblemKind(404, "not-found", "Not found")
METHOD_NOT_ALLOWED = ProblemKind(405, "method-not-allowed", "Method not allowed")
BODY_TOO_LARGE = ProblemKind(413, "body-too-large", "Request body too large")
UNSUPPORTED_MEDIA_TYPE = ProblemKind(415, "unsupported-media-type", "Unsupported media type")
INVALID_REQUEST = ProblemKind(422, "invalid-request", "Invalid request")
KEY_REUSED = ProblemKind(422, "idempotency-key-reused", "Idempotency key reused")
OVERLOADED = ProblemKind(503, "overloaded", "Too many steps in flight", retry_after=1)
DRAINING = ProblemKind(503, "draining", "The daemon is shutting down", retry_after=5)
INTERNAL = ProblemKind(500, "internal-error", "Internal server error")
BAD_REQUEST = ProblemKind(400, "bad-request", "Bad request")
NON_CANONICAL_PATH = ProblemKind(400, "non-canonical-path", "Non-canonical path")
FORBIDDEN_HOST = ProblemKind(403, "forbidden-host", "Host not allowed")
FORBIDDEN_ORIGIN = ProblemKind(403, "forbidden-origin", "Cross-origin request refused")
RATE_LIMITED = ProblemKind(429, "rate-limited", "Too many steps", retry_after=1)
HEADERS_TOO_LARGE = ProblemKind(431, "headers-too-large", "Request header fields too large")

SESSION_NOT_FOUND = ProblemKind(404, "session-not-found", "Session not found")
REVISION_NOT_FOUND = ProblemKind(404, "revision-not-found", "Revision not retained")
GRAPH_NOT_FOUND = ProblemKind(404, "graph-not-found", "Graph not found")
GRAPH_VERSION_UNAVAILABLE = ProblemKind(
    409, "graph-version-unavailable", "Graph version unavailable"
)
SESSION_BUSY = ProblemKind(409, "session-busy", "Session busy")
MAILBOX_FULL = ProblemKind(429, "mailbox-full", "Session mailbox full", retry_after=1)
SESSION_TOO_LARGE = ProblemKind(413, "session-too-large", "Session too large")
SESSION_QUOTA_EXCEEDED = ProblemKind(403, "session-quota-exceeded", "Too many sessions")
SESSION_COMPLETED = ProblemKind(409, "session-completed", "Session completed")
TASK_FAILED = ProblemKind(500, "task-failed", "Task failed")
STEP_TIMEOUT = ProblemKind(504, "step-timeout", "Step timed out")
STORE_UNAVAILABLE = ProblemKind(503, "store-unavailable", "Store unavailable", retry_after=1)
SNAPSHOT_UNREADABLE = ProblemKind(500, "snapshot-unreadable", "Stored session unreadable")
RUNTIME_CLOSED = ProblemKind(503, "runtime-closed", "Runtime closed", retry_after=5)
MISDIRECTED = ProblemKind(421, "misdirected", "Misdirected request")
"""A step that was not run here (docs/cluster.md): it was accepted under a lease grant this
daemon no longer holds, or it reached its start deadline; a forwarder asks Redis again."""

# The table: the first row whose class the error is an instance of wins, so a
# subclass must come before its base (RevisionConflict is a StoreUnavailable).
ERROR_TABLE: tuple[tuple[type[ActorflowError], ProblemKind], ...] = (
    (SessionTooLarge, SESSION_TOO_LARGE),
    (IdempotencyKeyReused, KEY_REUSED),
    (InvalidInput, INVALID_REQUEST),
    (RevisionNotFound, REVISION_NOT_FOUND),
    (SessionNotFound, SESSION_NOT_FOUND),
    (GraphNotFound, GRAPH_NOT_FOUND),
    (GraphVersionUnavailable, GRAPH_VERSION_UNAVAILABLE),
    (SessionCompleted, SESSION_COMPLETED),
    (SessionQuotaExceeded, SESSION_QUOTA_EXCEEDED),
    (TaskFailed, TASK_FAILED),
    (TaskNotFound, TASK_FAILED),
    (StepTimeout, STEP_TIMEOUT),
    (Misdirected, MISDIRECTED),
    (StoreUnavailable, STORE_UNAVAILABLE),
    (SnapshotDecodeError, SNAPSHOT_UNREADABLE),
    (RuntimeClosed, RUNTIME_CLOSED),
)

# Client-side statuses Litestar raises itself (routing, body limits), by status.
HTTP_STATUS_TABLE: Mapping[int, ProblemKind] = {
    400: BAD_REQUEST,
    401: UNAUTHORIZED,
    404: NOT_FOUND,
    405: METHOD_NOT_ALLOWED,
    413: BODY_TOO_LARGE,
    415: UNSUPPORTED_MEDIA_TYPE,
    422: INVALID_REQUEST,
}


class ProblemDetail(msgspec.Struct, omit_defaults=True):
    """The problem+json document (RFC 9457); ``mailbox_full`` only on busy errors."""

    type: str
    title: str
    status: int
    detail: str
    session_id: str | None = None
    mailbox_full: bool | None = None


_encode = msgspec.json.Encoder().encode


@dataclass(slots=True)
class Problem(Exception):
    """An error response: raise it from a handler, or build it with ``problem_for_error``.

    Attributes:
        kind: the table row (status, type slug, title).
        detail: what was wrong, for a human.
        session_id: the session concerned, when known.
        mailbox_full: set for ``SessionBusy`` errors (True: 429, False: 409).
        headers: extra response headers (``Retry-After`` is added from ``kind``).
    """

    kind: ProblemKind
    detail: str
    session_id: str | None = None
    mailbox_full: bool | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> int:
        """The HTTP status code."""
        return self.kind.status

    @property
    def type(self) -> str:
        """The problem type URI."""
        return TYPE_PREFIX + self.kind.slug

    def body(self) -> bytes:
        """The problem+json document."""
        return _encode(
            ProblemDetail(
                type=self.type,
                title=self.kind.title,
                status=self.kind.status,
                detail=self.detail,
                session_id=self.session_id,
                mailbox_full=self.mailbox_full,
            )
        )

    def response_headers(self) -> dict[str, str]:
        """Headers to send with the body (content type, Retry-After, extras)."""
        headers = {"content-type": PROBLEM_CONTENT_TYPE}
        if self.kind.retry_after is not None:
            headers["retry-after"] = str(self.kind.retry_after)
        headers.update(self.headers)
        return headers


def problem_for_error(exc: ActorflowError, session_id: str | None = None) -> Problem:
    """The problem for an actorflow error, from the one table.

    Args:
        exc: the error the runtime raised.
        session_id: the session the request named, used when the error names none.
    """
    known = getattr(exc, "session_id", None)
    sid = known if isinstance(known, str) else session_id
    if isinstance(exc, SessionBusy):
        kind = MAILBOX_FULL if exc.mailbox_full else SESSION_BUSY
        return Problem(kind, str(exc), session_id=sid, mailbox_full=exc.mailbox_full)
    for cls, kind in ERROR_TABLE:
        if isinstance(exc, cls):
            return Problem(kind, str(exc), session_id=sid)
    return Problem(INTERNAL, "an unexpected error occurred; it has been logged", session_id=sid)


def problem_for(exc: BaseException, session_id: str | None = None) -> Problem:
    """The problem for anything a route raised: a ``Problem`` as it is, an actorflow
    error from the table, anything else a 500 (the caller logs it)."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, ActorflowError):
        return problem_for_error(exc, session_id)
    return Problem(INTERNAL, "an unexpected error occurred; it has been logged", session_id)
