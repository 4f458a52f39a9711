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
    PROBLEM_TYPE_PREFIX,
    PROBLEM_TYPES,
    ActorflowError,
    GraphNotFound,
    GraphVersionUnavailable,
    IdempotencyKeyReused,
    InvalidInput,
    Misdirected,
    ProblemType,
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
    "PROBLEM_CONTENT_TYPE",
    "TYPE_PREFIX",
    "Problem",
    "ProblemDetail",
    "ProblemKind",
    "problem_for",
    "problem_for_error",
    "problem_kind",
]

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = PROBLEM_TYPE_PREFIX


ProblemKind = ProblemType
"""One row of ``runtime.errors.PROBLEM_TYPES``: a status, the type's slug and its title."""


def problem_kind(slug: str) -> ProblemKind:
    """The row of ``slug`` in the one table (``runtime.errors.PROBLEM_TYPES``)."""
    return PROBLEM_TYPES[slug]


MALFORMED_JSON = problem_kind("malformed-json")
UNAUTHORIZED = problem_kind("unauthorized")
NOT_FOUND = problem_kind("not-found")
METHOD_NOT_ALLOWED = problem_kind("method-not-allowed")
BODY_TOO_LARGE = problem_kind("body-too-large")
UNSUPPORTED_MEDIA_TYPE = problem_kind("unsupported-media-type")
INVALID_REQUEST = problem_kind("invalid-request")
KEY_REUSED = problem_kind("idempotency-key-reused")
OVERLOADED = problem_kind("overloaded")
DRAINING = problem_kind("draining")
INTERNAL = problem_kind("internal-error")
BAD_REQUEST = problem_kind("bad-request")
NON_CANONICAL_PATH = problem_kind("non-canonical-path")
FORBIDDEN_HOST = problem_kind("forbidden-host")
FORBIDDEN_ORIGIN = problem_kind("forbidden-origin")
RATE_LIMITED = problem_kind("rate-limited")
HEADERS_TOO_LARGE = problem_kind("headers-too-large")
SESSION_NOT_FOUND = problem_kind("session-not-found")
REVISION_NOT_FOUND = problem_kind("revision-not-found")
GRAPH_NOT_FOUND = problem_kind("graph-not-found")
GRAPH_VERSION_UNAVAILABLE = problem_kind("graph-version-unavailable")
SESSION_BUSY = problem_kind("session-busy")
MAILBOX_FULL = problem_kind("mailbox-full")
SESSION_TOO_LARGE = problem_kind("session-too-large")
SESSION_QUOTA_EXCEEDED = problem_kind("session-quota-exceeded")
TOO_MANY_WATCHERS = problem_kind("too-many-watchers")
SESSION_COMPLETED = problem_kind("session-completed")
TASK_FAILED = problem_kind("task-failed")
STEP_TIMEOUT = problem_kind("step-timeout")
STORE_UNAVAILABLE = problem_kind("store-unavailable")
SNAPSHOT_UNREADABLE = problem_kind("snapshot-unreadable")
RUNTIME_CLOSED = problem_kind("runtime-closed")
MISDIRECTED = problem_kind("misdirected")
"""A step that was not run here (docs/cluster.md): it was accepted under a lease grant this
daemon no longer holds, or it reached its forwarder's deadline; a forwarder asks again."""

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
    (TooManyWatchers, TOO_MANY_WATCHERS),
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
