"""Each client method as a ``Call``: the request to send, how far it may be retried,
and how to read the answer. ``Client`` and ``AsyncClient`` share them and differ
only in how they send.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from flow._context import ChatMessage
from flow._session import SessionStatus
from flow._step import StepResult
from flow.stores._log import MessagePage, RevisionInfo
from flow.stores._protocol import SessionPage, StoredSessionInfo
from runtime._views import SessionMetadataView, SessionView, TimerView

__all__ = [
    "Call",
    "GraphSummary",
    "Replay",
    "create_call",
    "delete_call",
    "fork_call",
    "get_call",
    "graphs_call",
    "list_call",
    "messages_call",
    "revisions_call",
    "rollback_call",
    "session_path",
    "share_call",
    "step_call",
    "unshare_call",
    "update_call",
]

T = TypeVar("T")
StepMode = Literal["step", "run"]
OnBusy = Literal["enqueue", "reject"]
JSON_HEADERS = {"content-type": "application/json"}


class Replay(enum.Enum):
    """How far a request may be sent again after an attempt whose outcome is unknown."""

    #: a read: sending it again changes nothing
    SAFE = "safe"
    #: a step: again only once the daemon honours its ``Idempotency-Key``
    KEYED = "keyed"
    #: a create: again only where the first attempt surely did not reach the daemon
    ONCE = "once"
    #: a delete: sending it again is harmless; a 404 after a lost answer means done
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class GraphSummary:
    """A graph the daemon serves, as ``GET /v1/graphs`` describes it.

    It has the ``id``, ``version``, ``start`` and ``describe()`` of a ``Graph``,
    without the tasks' code (which stays in the daemon).
    """

    id: str
    version: str
    start: str
    tasks: tuple[str, ...]
    edges: tuple[dict[str, str], ...]

    def describe(self) -> dict[str, Any]:
        """``{"id", "version", "start", "tasks", "edges"}``, as ``Graph.describe()``."""
        return {
            "id": self.id,
            "version": self.version,
            "start": self.start,
            "tasks": list(self.tasks),
            "edges": [dict(edge) for edge in self.edges],
        }


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request of a client method and how to read its answer.

    Attributes:
        method: the HTTP method.
        path: the path under the base URL.
        body: the JSON body, or None.
        headers: extra request headers.
        replay: how far it may be retried.
        decode: the answer (2xx) to the method's return value.
        session_id: the session it names, for the errors ("" when none).
        graph_id: the graph it names, for ``GraphNotFound`` ("" when none).
    """

    method: str
    path: str
    body: bytes | None
    headers: dict[str, str]
    replay: Replay
    decode: Callable[[httpx.Response], T]
    session_id: str = ""
    graph_id: str = ""


class _Created(msgspec.Struct):
    session_id: str


class _Step(msgspec.Struct):
    session_id: str
    task: str
    response: str | None
    status: str
    next_task: str | None
    revision: int
    responses: list[str] = []
    status_message: str | None = None


class _Metadata(msgspec.Struct):
    owner: str
    created_at: float
    last_accessed: float
    request_count: int
    client_addr: str | None = None
    expires_at: float | None = None
    members: dict[str, str] = {}


class _Message(msgspec.Struct):
    role: str
    content: str
    timestamp: str


class _Timer(msgspec.Struct):
    name: str
    due: float
    wake: bool = False


class _Detail(msgspec.Struct):
    session_id: str
    graph: str
    current_task: str
    status: str
    context: dict[str, Any]
    chat_history: list[_Message]
    metadata: _Metadata
    revision: int
    status_message: str | None = None
    timers: list[_Timer] = msgspec.field(default_factory=list)


class _Summary(msgspec.Struct):
    session_id: str
    graph: str
    current_task: str
    status: str
    revision: int
    created_at: float
    last_accessed: float
    expires_at: float | None = None
    owner: str = ""
    size: int = 0


class _Page(msgspec.Struct):
    items: list[_Summary]
    next_cursor: str | None = None


class _Revision(msgspec.Struct):
    revision: int
    at: float
    kind: str
    task: str
    input: Any
    response: str | None
    status: str


class _Revisions(msgspec.Struct):
    items: list[_Revision]
    next_before: int | None = None


class _SeqMessage(msgspec.Struct):
    seq: int
    role: str
    content: str
    timestamp: str


class _Messages(msgspec.Struct):
    items: list[_SeqMessage]
    next_before: int | None = None


class _Graph(msgspec.Struct):
    id: str
    version: str
    start: str
    tasks: list[str]
    edges: list[dict[str, str]]


class _Graphs(msgspec.Struct):
    graphs: list[_Graph]


_encode = msgspec.json.Encoder().encode
_decode_created = msgspec.json.Decoder(_Created).decode
_decode_step = msgspec.json.Decoder(_Step).decode
_decode_detail = msgspec.json.Decoder(_Detail).decode
_decode_page = msgspec.json.Decoder(_Page).decode
_decode_graphs = msgspec.json.Decoder(_Graphs).decode
_decode_revisions = msgspec.json.Decoder(_Revisions).decode
_decode_messages = msgspec.json.Decoder(_Messages).decode


def _headers(**extra: str) -> dict[str, str]:
    """A call's headers: its own ``X-Request-ID`` (the same on every retry, so that the
    daemon's log ties the attempts together), plus ``extra``."""
    headers = {"x-request-id": uuid.uuid4().hex}
    headers.update(extra)
    return headers


def session_path(session_id: str) -> str:
    return "/v1/sessions/" + quote(session_id, safe="")


def _created(response: httpx.Response) -> str:
    return _decode_created(response.content).session_id


def _step_result(response: httpx.Response) -> StepResult:
    body = _decode_step(response.content)
    return StepResult(
        session_id=body.session_id,
        task=body.task,
        response=body.response,
        responses=tuple(body.responses),
        status=SessionStatus(body.status),
        next_task=body.next_task or "",
        status_message=body.status_message,
        revision=body.revision,
        replayed=response.headers.get("idempotent-replayed") == "true",
    )


def _session_view(response: httpx.Response) -> SessionView:
    body = _decode_detail(response.content)
    meta = body.metadata
    return SessionView(
        session_id=body.session_id,
        graph=body.graph,
        current_task=body.current_task,
        status=body.status,
        context=body.context,
        chat_history=[
            {"role": m.role, "content": m.content, "timestamp": m.timestamp}
            for m in body.chat_history
        ],
        metadata=SessionMetadataView(
            owner=meta.owner,
            created_at=meta.created_at,
            last_accessed=meta.last_accessed,
            request_count=meta.request_count,
            client_addr=meta.client_addr,
            expires_at=meta.expires_at,
            members=dict(meta.members),
        ),
        revision=body.revision,
        status_message=body.status_message,
        timers=tuple(TimerView(t.name, t.due, t.wake) for t in body.timers),
    )


def _nothing(response: httpx.Response) -> None:
    return None


def _graphs(response: httpx.Response) -> list[GraphSummary]:
    return [
        GraphSummary(g.id, g.version, g.start, tuple(g.tasks), tuple(g.edges))
        for g in _decode_graphs(response.content).graphs
    ]


def create_call(graph_id: str, context: dict[str, Any] | None) -> Call[str]:
    """``POST /v1/sessions``."""
    body: dict[str, Any] = {"graph": graph_id}
    if context is not None:
        body["context"] = context
    return Call(
        "POST", "/v1/sessions", _encode(body), _headers(**JSON_HEADERS), Replay.ONCE, _created,
        graph_id=graph_id,
    )  # fmt: skip


def step_call(
    session_id: str, input: Any, mode: StepMode, on_busy: OnBusy, idempotency_key: str | None
) -> Call[StepResult]:
    """``POST /v1/sessions/{id}/step`` with an ``Idempotency-Key`` (a fresh UUID unless given)."""
    body: dict[str, Any] = {"input": input}
    if mode != "step":
        body["mode"] = mode
    if on_busy != "enqueue":
        body["on_busy"] = on_busy
    key = idempotency_key if idempotency_key is not None else uuid.uuid4().hex
    headers = _headers(**JSON_HEADERS, **{"idempotency-key": key})
    return Call(
        "POST", session_path(session_id) + "/step", _encode(body), headers, Replay.KEYED,
        _step_result, session_id=session_id,
    )  # fmt: skip


def get_call(session_id: str, revision: int | None = None) -> Call[SessionView]:
    """``GET /v1/sessions/{id}`` (``?revision=N``: as of revision N)."""
    query = "" if revision is None else f"?revision={int(revision)}"
    return Call(
        "GET", session_path(session_id) + query, None, _headers(), Replay.SAFE, _session_view,
        session_id=session_id,
    )  # fmt: skip


def delete_call(session_id: str) -> Call[None]:
    """``DELETE /v1/sessions/{id}``."""
    return Call(
        "DELETE", session_path(session_id), None, _headers(), Replay.DELETE, _nothing,
        session_id=session_id,
    )  # fmt: skip


def list_call(cursor: str | None, limit: int, owner: str) -> Call[SessionPage]:
    """``GET /v1/sessions?limit=...&cursor=...``; ``owner`` fills the items' owner."""
    query = f"?limit={int(limit)}"
    if cursor is not None:
        query += "&cursor=" + quote(cursor, safe="")

    def page(response: httpx.Response) -> SessionPage:
        body = _decode_page(response.content)
        items = [
            StoredSessionInfo(
                session_id=s.session_id,
                owner=s.owner or owner,
                graph_id=s.graph,
                current_task=s.current_task,
                status=s.status,
                revision=s.revision,
                created_at=s.created_at,
                last_accessed=s.last_accessed,
                expires_at=s.expires_at,
                size=s.size,
            )
            for s in body.items
        ]
        return SessionPage(items, body.next_cursor)

    return Call("GET", "/v1/sessions" + query, None, _headers(), Replay.SAFE, page)


def graphs_call() -> Call[list[GraphSummary]]:
    """``GET /v1/graphs``."""
    return Call("GET", "/v1/graphs", None, _headers(), Replay.SAFE, _graphs)


def _page_query(limit: int, before: int | None) -> str:
    query = f"?limit={int(limit)}"
    return query if before is None else query + f"&before={int(before)}"


def _revisions(response: httpx.Response) -> list[RevisionInfo]:
    return [
        RevisionInfo(r.revision, r.at, r.task, r.input, r.response, r.status, r.kind)
        for r in _decode_revisions(response.content).items
    ]


def _messages(response: httpx.Response) -> MessagePage:
    body = _decode_messages(response.content)
    items = [
        (m.seq, ChatMessage(m.role, m.content, m.timestamp))  # type: ignore[arg-type]
        for m in body.items
    ]
    return MessagePage(items, body.next_before)


def revisions_call(session_id: str, limit: int, before: int | None) -> Call[list[RevisionInfo]]:
    """``GET /v1/sessions/{id}/revisions?limit=...&before=...``."""
    return Call(
        "GET", session_path(session_id) + "/revisions" + _page_query(limit, before), None,
        _headers(), Replay.SAFE, _revisions, session_id=session_id,
    )  # fmt: skip


def messages_call(session_id: str, limit: int, before: int | None) -> Call[MessagePage]:
    """``GET /v1/sessions/{id}/messages?limit=...&before=...``."""
    return Call(
        "GET", session_path(session_id) + "/messages" + _page_query(limit, before), None,
        _headers(), Replay.SAFE, _messages, session_id=session_id,
    )  # fmt: skip


def fork_call(session_id: str, revision: int | None) -> Call[str]:
    """``POST /v1/sessions/{id}/fork``: sent again only where it surely did not arrive."""
    body = {} if revision is None else {"revision": revision}
    return Call(
        "POST", session_path(session_id) + "/fork", _encode(body), _headers(**JSON_HEADERS),
        Replay.ONCE, _created, session_id=session_id,
    )  # fmt: skip


def rollback_call(session_id: str, revision: int) -> Call[SessionView]:
    """``POST /v1/sessions/{id}/rollback``: sent again only where it surely did not arrive
    (a second rollback would append a second revision)."""
    return Call(
        "POST", session_path(session_id) + "/rollback", _encode({"revision": revision}),
        _headers(**JSON_HEADERS), Replay.ONCE, _session_view, session_id=session_id,
    )  # fmt: skip


def update_call(
    session_id: str, set: dict[str, Any] | None, unset: Sequence[str], goto: str | None
) -> Call[StepResult]:
    """``PATCH /v1/sessions/{id}``: sent again only where it surely did not arrive
    (a second edit would append a second revision)."""
    body: dict[str, Any] = {}
    if set is not None:
        body["set"] = set
    if unset:
        body["unset"] = list(unset)
    if goto is not None:
        body["goto"] = goto
    return Call(
        "PATCH", session_path(session_id), _encode(body), _headers(**JSON_HEADERS),
        Replay.ONCE, _step_result, session_id=session_id,
    )  # fmt: skip


class _Members(msgspec.Struct):
    session_id: str
    members: dict[str, str]


_decode_members = msgspec.json.Decoder(_Members).decode


def _members(response: httpx.Response) -> dict[str, str]:
    return _decode_members(response.content).members


def share_call(session_id: str, user: str, access: str) -> Call[dict[str, str]]:
    """``POST /v1/sessions/{id}/members``: granting an access a member has changes
    nothing, so it is sent again like a read."""
    return Call(
        "POST", session_path(session_id) + "/members",
        _encode({"user": user, "access": access}), _headers(**JSON_HEADERS), Replay.SAFE,
        _members, session_id=session_id,
    )  # fmt: skip


def unshare_call(session_id: str, user: str) -> Call[dict[str, str]]:
    """``DELETE /v1/sessions/{id}/members/{user}``: removing a non-member changes nothing."""
    return Call(
        "DELETE", session_path(session_id) + "/members/" + quote(user, safe=""), None,
        _headers(), Replay.SAFE, _members, session_id=session_id,
    )  # fmt: skip
