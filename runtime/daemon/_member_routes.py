"""Sharing a session: ``POST /v1/sessions/{id}/members`` and ``DELETE .../members/{user}``.

Only the session's owner (or an admin token) may change its members; anyone
else, members included, gets 404 as for a session that is not theirs. Each
change is one revision, committed before the answer (``Runtime.share``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from litestar import Request, delete, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody
from litestar.types import ControllerRouterHandler

from runtime.daemon._gateway import request_info
from runtime.daemon._models import MembersResponse, ShareRequest

if TYPE_CHECKING:
    from runtime import AsyncRuntime

__all__ = ["member_handlers"]


def member_handlers(
    runtime: AsyncRuntime,
    owner_filter: Callable[[str], str | None],
    caller: Callable[[Request[Any, Any, Any]], str],
    problems: dict[int, ResponseSpec],
) -> list[ControllerRouterHandler]:
    """The two member routes, bound to ``runtime`` (``owner_filter``: None for an admin)."""
    security: list[dict[str, list[str]]] = [{"bearer": []}]

    @post(
        "/v1/sessions/{session_id:str}/members",
        status_code=200,
        summary="Share a session: give a user read or write access",
        description=(
            "read: GET the session, its revisions, messages and events; write: step it "
            "too. Only the owner or an admin may share. Granting the access a member has "
            "already changes nothing. Answers the members after the change."
        ),
        responses=problems,
        security=security,
        tags=["sessions"],
    )
    async def share_session(
        session_id: FromPath[str], data: JSONBody[ShareRequest], request: Request[Any, Any, Any]
    ) -> MembersResponse:
        request_info(request.scope).session_id = session_id
        owner = owner_filter(caller(request))
        members = await runtime.share(session_id, data.user, data.access, owner=owner)
        return MembersResponse(session_id=session_id, members=members)

    @delete(
        "/v1/sessions/{session_id:str}/members/{user:str}",
        status_code=200,
        summary="Stop sharing a session with a user",
        description="Removing a user who is not a member changes nothing.",
        responses=problems,
        security=security,
        tags=["sessions"],
    )
    async def unshare_session(
        session_id: FromPath[str], user: FromPath[str], request: Request[Any, Any, Any]
    ) -> MembersResponse:
        request_info(request.scope).session_id = session_id
        owner = owner_filter(caller(request))
        members = await runtime.unshare(session_id, user, owner=owner)
        return MembersResponse(session_id=session_id, members=members)

    return [share_session, unshare_session]
