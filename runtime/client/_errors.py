"""The errors only the client raises, and problem+json mapped back to the runtime's own.

A daemon's error answer (RFC 9457 problem+json, ``urn:actorflow:problem:<slug>``)
becomes the exception ``Runtime`` would have raised for the same failure, with
the daemon's ``detail`` as its message and its ``X-Request-ID`` as
``request_id``. What has no runtime counterpart is a ``ClientError``::

    ActorflowError                  (runtime.errors: the runtime's own tree)
    └── ClientError                 only the HTTP client raises these
        ├── Unauthorized            401: no or unknown token; fix the token
        ├── DaemonUnavailable       no answer (connection failed or lost, timed out)
        │   │                       or 503 overloaded, after the retries; maybe_applied
        │   │                       says whether the request may have run
        │   └── OutcomeUnknown      503 outcome-unknown (cluster): the step may have
        │                           been committed before the answer, never after;
        │                           read the session, then decide (never retried)
        ├── Misdirected             421 misdirected (cluster): a forwarded request
        │                           arrived too late or under a lost lease; not run
        └── UnexpectedResponse      a status or body the client does not know (500
                                    internal-error, a proxy's page, ...)

Every slug of ``runtime.errors.PROBLEM_TYPES`` has its row in ``_BY_SLUG`` (a
test holds them equal), so a daemon's answer is never read as an unknown one.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import msgspec

from runtime.errors import (
    PROBLEM_TYPE_PREFIX,
    ActorflowError,
    GraphNotFound,
    GraphVersionUnavailable,
    IdempotencyKeyReused,
    InvalidInput,
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
    TooManyWatchers,
)

__all__ = [
    "ClientError",
    "DaemonUnavailable",
    "Misdirected",
    "OutcomeUnknown",
    "RemoteTaskError",
    "Unauthorized",
    "UnexpectedResponse",
    "error_for_response",
    "problem_slug",
]

TYPE_PREFIX = PROBLEM_TYPE_PREFIX


class ClientError(ActorflowError):
    """Base of the errors only ``runtime.client`` raises."""


class Unauthorized(ClientError):
    """The daemon refused the bearer token (401): none was given, or it is unknown."""


class DaemonUnavailable(ClientError):
    """No usable answer from the daemon after the retries the deadline allowed.

    Attributes:
        maybe_applied: True when a request may have reached the daemon (the
            connection was lost or timed out after it was sent): a step may then
            have run. False when nothing reached it (connection refused, 503
            overloaded).
    """

    def __init__(self, message: str, *, maybe_applied: bool) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied


class OutcomeUnknown(DaemonUnavailable):
    """503 ``outcome-unknown``: a cluster daemon forwarded the step to the session's
    holder, which stopped answering. The step may have been committed before this
    answer and will never be committed after it (docs/cluster.md); the client
    never retries it: read the session (its revision) and decide.
    ``maybe_applied`` is always True."""

    def __init__(self, message: str) -> None:
        super().__init__(message, maybe_applied=True)


class Misdirected(ClientError):
    """421 ``misdirected``: a forwarded request reached a daemon that no longer holds
    the session's lease, or after its deadline; nothing ran. Daemons send it to each
    other; a client sees it only when it sent the forwarding headers itself."""


class UnexpectedResponse(ClientError):
    """A status or body the client does not know how to read.

    Attributes:
        status: the HTTP status code.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RemoteTaskError(Exception):
    """The ``cause`` of a ``TaskFailed`` raised by the client: the task's error as
    the daemon described it (the original exception stays in the daemon)."""


class _Problem(msgspec.Struct):
    type: str = ""
    title: str = ""
    status: int = 0
    detail: str = ""
    session_id: str | None = None
    mailbox_full: bool | None = None


_decode_problem = msgspec.json.Decoder(_Problem).decode
_TASK_ID = re.compile(r"^task '(?P<task>[^']*)' failed")
_TIMEOUT = re.compile(r"exceeded (?P<seconds>[0-9.eE+-]+) s")
_REUSED_KEY = re.compile(r"idempotency key '(?P<key>[^']*)'")
_RETAINED = re.compile(
    r"no revision (?P<revision>-?\d+): the retained history holds revisions "
    r"(?P<oldest>-?\d+) to (?P<newest>-?\d+)"
)


def _task_failed(detail: str, session_id: str) -> ActorflowError:
    found = _TASK_ID.match(detail)
    task_id = found["task"] if found else ""
    return TaskFailed(task_id, RemoteTaskError(detail), session_id or None)


def _step_timeout(detail: str, session_id: str) -> ActorflowError:
    found = _TIMEOUT.search(detail)
    try:
        seconds = float(found["seconds"]) if found else 0.0
    except ValueError:
        seconds = 0.0
    return StepTimeout(session_id, seconds)


def _reused_key(detail: str) -> str:
    found = _REUSED_KEY.search(detail)
    return found["key"] if found else ""


def _revision_not_found(detail: str, session_id: str) -> ActorflowError:
    found = _RETAINED.search(detail)
    if found is None:
        return RevisionNotFound(session_id, -1, -1, -1)
    numbers = (int(found[name]) for name in ("revision", "oldest", "newest"))
    return RevisionNotFound(session_id, *numbers)


# slug -> (detail, session_id, graph_id) -> the error the runtime raises for it
_Factory = Callable[[str, str, str], ActorflowError]
_BY_SLUG: dict[str, _Factory] = {
    "session-not-found": lambda d, s, g: SessionNotFound(s, d),
    "revision-not-found": lambda d, s, g: _revision_not_found(d, s),
    "graph-not-found": lambda d, s, g: GraphNotFound(g),
    "graph-version-unavailable": lambda d, s, g: GraphVersionUnavailable(s, g, "", [], d),
    "session-busy": lambda d, s, g: SessionBusy(s, mailbox_full=False),
    "mailbox-full": lambda d, s, g: SessionBusy(s, mailbox_full=True),
    "session-completed": lambda d, s, g: SessionCompleted(s),
    "task-failed": lambda d, s, g: _task_failed(d, s),
    "step-timeout": lambda d, s, g: _step_timeout(d, s),
    "store-unavailable": lambda d, s, g: StoreUnavailable(d),
    "snapshot-unreadable": lambda d, s, g: SnapshotDecodeError(d, b""),
    "runtime-closed": lambda d, s, g: RuntimeClosed(d),
    "draining": lambda d, s, g: RuntimeClosed(d),
    "overloaded": lambda d, s, g: DaemonUnavailable(d, maybe_applied=False),
    "unauthorized": lambda d, s, g: Unauthorized(d),
    "invalid-request": lambda d, s, g: InvalidInput(d),
    "idempotency-key-reused": lambda d, s, g: IdempotencyKeyReused(s, _reused_key(d)),
    "malformed-json": lambda d, s, g: InvalidInput(d),
    "bad-request": lambda d, s, g: InvalidInput(d),
    "body-too-large": lambda d, s, g: InvalidInput(d),
    "unsupported-media-type": lambda d, s, g: InvalidInput(d),
    "session-too-large": lambda d, s, g: SessionTooLarge(d),
    "session-quota-exceeded": lambda d, s, g: SessionQuotaExceeded(d),
    "outcome-unknown": lambda d, s, g: OutcomeUnknown(d),
    "misdirected": lambda d, s, g: Misdirected(d),
    "rate-limited": lambda d, s, g: UnexpectedResponse(d, 429),
    "too-many-watchers": lambda d, s, g: TooManyWatchers(s or "", d),
    "not-found": lambda d, s, g: UnexpectedResponse(d, 404),
    "method-not-allowed": lambda d, s, g: UnexpectedResponse(d, 405),
    "non-canonical-path": lambda d, s, g: UnexpectedResponse(d, 400),
    "headers-too-large": lambda d, s, g: UnexpectedResponse(d, 431),
    "forbidden-host": lambda d, s, g: UnexpectedResponse(d, 403),
    "forbidden-origin": lambda d, s, g: UnexpectedResponse(d, 403),
    "internal-error": lambda d, s, g: UnexpectedResponse(d, 500),
}


def _problem(response: httpx.Response) -> _Problem | None:
    if "json" not in response.headers.get("content-type", ""):
        return None
    try:
        return _decode_problem(response.content)
    except msgspec.ValidationError:
        return None
    except msgspec.DecodeError:
        return None


def problem_slug(response: httpx.Response) -> str | None:
    """The problem type's slug of an error answer (``overloaded``), or None."""
    problem = _problem(response)
    if problem is None or not problem.type.startswith(TYPE_PREFIX):
        return None
    return problem.type[len(TYPE_PREFIX) :]


def error_for_response(
    response: httpx.Response, *, session_id: str = "", graph_id: str = ""
) -> ActorflowError:
    """The exception for a daemon's error answer, as the runtime would raise it.

    Args:
        response: an answer with status 400 or above.
        session_id: the session the request named (used when the problem names none).
        graph_id: the graph the request named (for ``GraphNotFound``).
    """
    problem = _problem(response)
    status = response.status_code
    slug = ""
    if problem is not None and problem.type.startswith(TYPE_PREFIX):
        slug = problem.type[len(TYPE_PREFIX) :]
    if problem is not None and problem.detail:
        detail = problem.detail
    else:
        text = response.text[:200].strip() or response.reason_phrase
        detail = f"HTTP {status} from {response.request.url}: {text}"
    sid = (problem.session_id if problem is not None else None) or session_id
    factory = _BY_SLUG.get(slug)
    if factory is not None:
        error = factory(detail, sid, graph_id)
    elif status == 401:
        error = Unauthorized(detail)
    else:
        error = UnexpectedResponse(detail, status)
    error.args = (detail,)
    error.request_id = response.headers.get("x-request-id")
    return error
