"""The time-travel endpoints: a session's revisions, its whole chat, fork and rollback.

``GET /v1/sessions/{id}?revision=N`` (a past revision) is the read route in
``_routes``; these are the others. Ownership as everywhere: another owner's
session is 404. A revision outside the retained history is 404
``revision-not-found`` with the retained range in ``detail``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Request, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.types import ControllerRouterHandler

from runtime.daemon._gateway import request_info
from runtime.daemon._models import SessionCreated, SessionDetail

if TYPE_CHECKING:
    from runtime import AsyncRuntime

__all__ = [
    "ForkRequest",
    "MessageBody",
    "MessageList",
    "RevisionBody",
    "RevisionList",
    "RollbackRequest",
    "history_handlers",
]

Revision = Annotated[int, msgspec.Meta(ge=0)]


class RevisionBody(msgspec.Struct):
    """One revision: what ran, with what input and response, and where it left the session."""

    revision: int
    at: float
    kind: str
    task: str
    input: Any
    response: str | None
    status: str


class RevisionList(msgspec.Struct):
    """Revisions, newest first; ``next_before``: pass as ``before`` for older ones."""

    items: list[RevisionBody]
    next_before: int | None


class MessageBody(msgspec.Struct):
    """One chat message with its number in the whole conversation."""

    seq: int
    role: str
    content: str
    timestamp: str


class MessageList(msgspec.Struct):
    """Chat messages, oldest first; ``next_before``: pass as ``before`` for older ones."""

    items: list[MessageBody]
    next_before: int | None


class ForkRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/sessions/{id}/fork``: the revision to start from (default: the newest)."""

    revision: Revision | None = None


class RollbackRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/sessions/{id}/rollback``: the revision whose state becomes the newest."""

    revision: Revision


def history_handlers(
    runtime: AsyncRuntime,
    owner_filter: Callable[[str], str | None],
    problems: dict[int, ResponseSpec],
    security: list[dict[str, list[str]]],
) -> list[ControllerRouterHandler]:
    """The time-travel route handlers, bound to ``runtime``.

    ``owner_filter`` maps the caller to the owner the runtime checks (None: an
    admin's request, any owner), as on every other session route.
    """

    def _caller(request: Request[Any, Any, Any], session_id: str) -> str | None:
        info = request_info(request.scope)
        info.session_id = session_id
        if info.user is None:  # the gateway lets no /v1 request through without a user
            raise RuntimeError("request reached a /v1 handler without an authenticated user")
        return owner_filter(info.user)

    @get(
        "/v1/sessions/{session_id:str}/revisions",
        summary="A session's revisions, newest first",
        responses=problems,
        security=security,
        tags=["history"],
    )
    async def list_revisions(
        session_id: FromPath[str],
        request: Request[Any, Any, Any],
        limit: Annotated[int, QueryParameter(ge=1, le=1000, description="page size")] = 100,
        before: Annotated[
            int | None, QueryParameter(ge=0, description="only revisions below this one")
        ] = None,
    ) -> RevisionList:
        user = _caller(request, session_id)
        infos = await runtime.revisions(session_id, owner=user, limit=limit, before=before)
        items = [
            RevisionBody(i.revision, i.at, i.kind, i.task, i.input, i.response, i.status)
            for i in infos
        ]
        more = len(items) == limit and items[-1].revision > 0
        return RevisionList(items, items[-1].revision if more else None)

    @get(
        "/v1/sessions/{session_id:str}/messages",
        summary="The whole chat history of a session, page by page",
        responses=problems,
        security=security,
        tags=["history"],
    )
    async def list_messages(
        session_id: FromPath[str],
        request: Request[Any, Any, Any],
        limit: Annotated[int, QueryParameter(ge=1, le=1000, description="page size")] = 100,
        before: Annotated[
            int | None, QueryParameter(ge=0, description="only messages numbered below this")
        ] = None,
    ) -> MessageList:
        user = _caller(request, session_id)
        page = await runtime.messages(session_id, owner=user, limit=limit, before=before)
        items = [MessageBody(seq, m.role, m.content, m.timestamp) for seq, m in page.items]
        return MessageList(items, page.next_before)

    @post(
        "/v1/sessions/{session_id:str}/fork",
        status_code=201,
        summary="A new session (same owner) from one of this session's revisions",
        responses=problems,
        security=security,
        tags=["history"],
    )
    async def fork_session(
        session_id: FromPath[str],
        request: Request[Any, Any, Any],
        data: JSONBody[ForkRequest | None] = None,
    ) -> SessionCreated:
        user = _caller(request, session_id)
        revision = None if data is None else data.revision
        fork = await runtime.fork(session_id, revision=revision, owner=user)
        view = await runtime.get_session(fork, owner=user)
        return SessionCreated(
            session_id=view.session_id,
            graph=view.graph,
            current_task=view.current_task,
            status=view.status,
            revision=view.revision,
        )

    @post(
        "/v1/sessions/{session_id:str}/rollback",
        status_code=200,
        summary="Append a revision equal to an earlier one (undo: roll back again)",
        responses=problems,
        security=security,
        tags=["history"],
    )
    async def rollback_session(
        session_id: FromPath[str],
        request: Request[Any, Any, Any],
        data: JSONBody[RollbackRequest],
    ) -> SessionDetail:
        user = _caller(request, session_id)
        view = await runtime.rollback(session_id, revision=data.revision, owner=user)
        return SessionDetail.of(view)

    return [list_revisions, list_messages, fork_session, rollback_session]
