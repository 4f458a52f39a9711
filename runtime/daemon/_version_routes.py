"""The graph-version endpoints: ``GET /v1/graphs`` (versions and counts) and ``PATCH`` a session.

``GET /v1/graphs`` reads the runtime's registry on every request, so a reload
shows at once; its stored counts come from one scan of the store on a worker
thread, reused for ``STORED_COUNTS_TTL`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from litestar import Request, get, patch
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody
from litestar.types import ControllerRouterHandler

from runtime._version_counts import stored_version_counts, version_table
from runtime.daemon._gateway import request_info
from runtime.daemon._models import (
    GraphInfo,
    GraphList,
    GraphVersionInfo,
    StepResponse,
    UpdateSessionRequest,
)

if TYPE_CHECKING:
    from runtime import AsyncRuntime

__all__ = ["STORED_COUNTS_TTL", "version_handlers"]

#: Seconds a scan's stored-session counts are reused by ``GET /v1/graphs``.
STORED_COUNTS_TTL = 5.0


class _StoredCounts:
    """The last scan's counts, refreshed by one request at a time."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def get(self, runtime: AsyncRuntime) -> Counter[tuple[str, str]]:
        async with self._lock:
            if self._counts is None or time.monotonic() - self._at > STORED_COUNTS_TTL:
                self._counts = await asyncio.to_thread(stored_version_counts, runtime.store)
                self._at = time.monotonic()
            return self._counts


def version_handlers(
    runtime: AsyncRuntime,
    owner_filter: Callable[[str], str | None],
    *,
    default_graph: str,
    caller: Callable[[Request[Any, Any, Any]], str],
    problems: dict[int, ResponseSpec],
) -> list[ControllerRouterHandler]:
    """``GET /v1/graphs`` and ``PATCH /v1/sessions/{id}``, bound to ``runtime``.

    ``owner_filter`` maps the caller to the owner the runtime checks (None: an
    admin's request, any owner), as on every other session route; the revision
    records the caller's own name.
    """
    stored_counts = _StoredCounts()
    security: list[dict[str, list[str]]] = [{"bearer": []}]

    @get(
        "/v1/graphs",
        summary="The graphs served: every version, with live and stored session counts",
        responses={status: problems[status] for status in (401, 503)},
        security=security,
        tags=["graphs"],
    )
    async def list_graphs() -> GraphList:
        registry = runtime.registry
        table = version_table(
            registry, await runtime.live_sessions(), await stored_counts.get(runtime)
        )
        infos = []
        for row in table:
            graph = registry.get(row["id"]) if row["default_version"] else None
            described = graph.describe() if graph is not None else {}
            infos.append(
                GraphInfo(
                    id=row["id"],
                    version=row["default_version"] or "",
                    start=described.get("start", ""),
                    tasks=list(described.get("tasks", [])),
                    edges=list(described.get("edges", [])),
                    versions=[GraphVersionInfo(**v) for v in row["versions"]],
                )
            )
        return GraphList(graphs=infos, default_graph=default_graph)

    @patch(
        "/v1/sessions/{session_id:str}",
        summary="Repair a session: set or remove context keys, move it to a task",
        description=(
            "Applied as one new revision whose status_message records who did it, after "
            "the steps already queued for the session. The answer is the edit's result, "
            "as a step's: task is where the session was, next_task where it is now."
        ),
        responses=problems,
        security=security,
        tags=["sessions"],
    )
    async def update_session(
        session_id: FromPath[str],
        data: JSONBody[UpdateSessionRequest],
        request: Request[Any, Any, Any],
    ) -> StepResponse:
        user = caller(request)
        request_info(request.scope).session_id = session_id
        result = await runtime.update_session(
            session_id,
            set=data.set,
            unset=data.unset or (),
            goto=data.goto,
            owner=owner_filter(user),
            by=user,
        )
        return StepResponse(
            session_id=result.session_id,
            task=result.task,
            response=result.response,
            status=str(result.status),
            next_task=result.next_task,
            revision=result.revision,
            responses=list(result.responses),
            status_message=result.status_message,
        )

    return [list_graphs, update_session]
