"""Request and response bodies of the HTTP API, as msgspec Structs.

Requests reject unknown fields (422), so that a misspelt field is an error
rather than silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from runtime import StoredSessionInfo
from runtime._views import SessionView

__all__ = [
    "ChatMessageBody",
    "CreateSessionRequest",
    "ExecuteRequest",
    "ExecuteResponse",
    "GraphInfo",
    "GraphList",
    "GraphVersionInfo",
    "HealthResponse",
    "MembersResponse",
    "MetadataBody",
    "OnBusy",
    "SessionCreated",
    "SessionDetail",
    "SessionList",
    "SessionSummary",
    "ShareRequest",
    "StepMode",
    "StepRequest",
    "StepResponse",
    "UpdateSessionRequest",
    "decode_step_request",
]

GraphId = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Version = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
ContextKey = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
StepMode = Literal["step", "run"]
OnBusy = Literal["enqueue", "reject"]


#: The most chat messages a session created over HTTP may keep (its snapshot's bound).
MAX_CHAT_MESSAGES = 10_000


class CreateSessionRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/sessions``: the graph to start, optional initial context, and how
    many chat messages the session keeps (graph-flow's ``with_max_chat_messages``)."""

    graph: GraphId
    context: dict[str, Any] | None = None
    max_messages: Annotated[int, msgspec.Meta(ge=1, le=MAX_CHAT_MESSAGES)] = 1000
    version: Version | None = None


class UpdateSessionRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``PATCH /v1/sessions/{id}``: set or remove context keys, move to a task.

    Applied as one new revision recording who did it, after the steps queued before it.
    """

    set: dict[ContextKey, Any] | None = None
    unset: Annotated[list[ContextKey], msgspec.Meta(max_length=1000)] | None = None
    goto: GraphId | None = None


class StepRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/sessions/{id}/step``.

    ``mode="run"`` steps until the session waits for input or completes;
    ``on_busy="reject"`` refuses at once (409) when a step is already running.
    """

    input: Any = None
    mode: StepMode = "step"
    on_busy: OnBusy = "enqueue"


class ExecuteRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/execute`` (graph-flow's service shape): one step with ``content`` as input.

    ``idempotency_key`` does for the step what the step route's ``Idempotency-Key``
    header does; it needs a ``session_id`` (a retry without one would create
    another session).
    """

    content: str
    session_id: str | None = None
    idempotency_key: str | None = None


class SessionCreated(msgspec.Struct):
    """A session just created."""

    session_id: str
    graph: str
    current_task: str
    status: str
    revision: int
    graph_version: str = ""


class ChatMessageBody(msgspec.Struct):
    """One chat message (timestamp: UTC RFC 3339)."""

    role: str
    content: str
    timestamp: str


class MetadataBody(msgspec.Struct):
    """A session's metadata; times are UNIX epoch seconds."""

    owner: str
    created_at: float
    last_accessed: float
    request_count: int
    client_addr: str | None
    expires_at: float | None
    members: dict[str, str] = {}
    """The users the owner shared the session with: ``read`` or ``write``."""


class ShareRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Give ``user`` ``access`` to a session (``POST /v1/sessions/{id}/members``)."""

    user: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    access: Literal["read", "write"]


class MembersResponse(msgspec.Struct):
    """A session's members after a change."""

    session_id: str
    members: dict[str, str]


class TimerBody(msgspec.Struct):
    """A pending timer: its name, due time (UNIX seconds), and whether it is a wake_after."""

    name: str
    due: float
    wake: bool = False


class SessionDetail(msgspec.Struct):
    """A session as of one revision (``context`` is the plain key → value map;
    ``timers`` its pending timers, soonest first)."""

    session_id: str
    graph: str
    current_task: str
    status: str
    context: dict[str, Any]
    chat_history: list[ChatMessageBody]
    metadata: MetadataBody
    revision: int
    status_message: str | None = None
    timers: list[TimerBody] = msgspec.field(default_factory=list)
    graph_version: str = ""

    @classmethod
    def of(cls, view: SessionView) -> SessionDetail:
        """The body for a runtime ``SessionView``."""
        meta = view.metadata
        return cls(
            session_id=view.session_id,
            graph=view.graph,
            current_task=view.current_task,
            status=view.status,
            context=view.context,
            chat_history=[
                ChatMessageBody(m["role"], m["content"], m["timestamp"]) for m in view.chat_history
            ],
            metadata=MetadataBody(
                owner=meta.owner,
                created_at=meta.created_at,
                last_accessed=meta.last_accessed,
                request_count=meta.request_count,
                client_addr=meta.client_addr,
                expires_at=meta.expires_at,
                members=dict(meta.members),
            ),
            revision=view.revision,
            status_message=view.status_message,
            timers=[TimerBody(t.name, t.due, t.wake) for t in view.timers],
            graph_version=view.graph_version,
        )


class StepResponse(msgspec.Struct):
    """The outcome of one step.

    ``response`` is the last task's response; ``responses`` holds every response of
    the tasks this step ran (more than one with ContinueAndExecute or run mode).
    """

    session_id: str
    task: str
    response: str | None
    status: str
    next_task: str | None
    revision: int
    responses: list[str] = msgspec.field(default_factory=list)
    status_message: str | None = None


class SessionSummary(msgspec.Struct):
    """One session in a listing (from the store's index)."""

    session_id: str
    graph: str
    current_task: str
    status: str
    revision: int
    created_at: float
    last_accessed: float
    expires_at: float | None

    @classmethod
    def of(cls, info: StoredSessionInfo) -> SessionSummary:
        """The summary for a store index entry."""
        return cls(
            session_id=info.session_id,
            graph=info.graph_id,
            current_task=info.current_task,
            status=info.status,
            revision=info.revision,
            created_at=info.created_at,
            last_accessed=info.last_accessed,
            expires_at=info.expires_at,
        )


class SessionList(msgspec.Struct):
    """One page of the caller's sessions; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[SessionSummary]
    next_cursor: str | None


class GraphVersionInfo(msgspec.Struct):
    """One version of a graph: served or only stored, and its session counts.

    ``stored`` counts every owner's sessions (refreshed at most every few seconds).
    """

    version: str
    served: bool
    default: bool
    live: int
    stored: int | None


class GraphInfo(msgspec.Struct):
    """A graph the daemon serves: its default version's shape, and every version."""

    id: str
    version: str
    start: str
    tasks: list[str]
    edges: list[dict[str, str]]
    versions: list[GraphVersionInfo] = msgspec.field(default_factory=list)


class GraphList(msgspec.Struct):
    """Every graph the daemon serves, and the one ``/v1/execute`` uses."""

    graphs: list[GraphInfo]
    default_graph: str


class ExecuteResponse(msgspec.Struct):
    """``POST /v1/execute``'s answer (status is a plain word such as ``paused``)."""

    session_id: str
    response: str | None
    status: str


class HealthResponse(msgspec.Struct):
    """``/healthz`` and ``/readyz``."""

    status: str


_DEFAULT = StepRequest()
_decode_step = msgspec.json.Decoder(StepRequest | None).decode


def decode_step_request(body: bytes) -> StepRequest | None:
    """The step request in ``body`` (the defaults for none), or None if Litestar must answer.

    Raises:
        UnicodeDecodeError, RecursionError: the body is not JSON (msgspec raises these
            outside ``DecodeError``; msgspec 0.23 and later raise ``DecodeError`` for bad UTF-8,
            answered by Litestar); the caller answers 400 malformed-json.
    """
    if not body:
        return _DEFAULT
    try:
        return _decode_step(body) or _DEFAULT
    except msgspec.DecodeError:
        return None
