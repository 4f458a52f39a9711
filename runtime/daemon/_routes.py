"""The HTTP endpoints: sessions, steps, graphs, execute, health, readiness and metrics.

Handlers only await the runtime (whose replies complete asyncio futures), so no
request blocks the event loop on an actor. Errors are raised, and turned into
problem+json by the exception handler in ``_app``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from litestar import Request, delete, get, post
from litestar.datastructures import ResponseHeader
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Operation, RequestBody
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from litestar.response import Response
from litestar.types import ControllerRouterHandler

from flow import Graph, SessionStatus
from runtime.daemon._gateway import request_info
from runtime.daemon._history_routes import history_handlers
from runtime.daemon._member_routes import member_handlers
from runtime.daemon._metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from runtime.daemon._metrics import DaemonMetrics, RuntimeSample
from runtime.daemon._models import (
    CreateSessionRequest,
    ExecuteRequest,
    ExecuteResponse,
    HealthResponse,
    OnBusy,
    SessionCreated,
    SessionDetail,
    SessionList,
    SessionSummary,
    StepMode,
    StepRequest,
    StepResponse,
)
from runtime.daemon._problems import (
    DRAINING,
    INVALID_REQUEST,
    OVERLOADED,
    PROBLEM_CONTENT_TYPE,
    STORE_UNAVAILABLE,
    Problem,
    ProblemDetail,
)
from runtime.daemon._version_routes import version_handlers
from runtime.errors import RuntimeClosed

if TYPE_CHECKING:
    from runtime import AsyncRuntime, StepResult

__all__ = ["Api", "replayed_header", "route_handlers", "step_response"]

_REPLAYED_DOC = ResponseHeader(
    name="Idempotent-Replayed",
    documentation_only=True,
    description=(
        "On a step that carried an Idempotency-Key: true when the answer is the recorded "
        "result of an earlier step with that key (nothing ran), false on its first run"
    ),
)

READY_PROBE_TIMEOUT = 2.0
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]


def _problems(*statuses: int) -> dict[int, ResponseSpec]:
    return {
        status: ResponseSpec(
            data_container=ProblemDetail,
            description="problem+json (RFC 9457)",
            media_type=PROBLEM_CONTENT_TYPE,
        )
        for status in statuses
    }


# Statuses every /v1 route may answer, and those of routes that run steps.
_COMMON = (400, 401, 413, 422, 503)
_STEPPING = (*_COMMON, 404, 409, 429, 500, 504)


@dataclass
class OptionalBodyOperation(Operation):
    """An operation whose request body may be left out (Litestar marks every body required)."""

    def __post_init__(self) -> None:
        if isinstance(self.request_body, RequestBody):
            self.request_body.required = False


@dataclass(slots=True)
class Api:
    """What the handlers share: the runtime, the graphs, limits and counters.

    Attributes:
        runtime: the runtime the daemon serves.
        graphs: the graphs served, in order.
        default_graph: the graph ``/v1/execute`` creates sessions of.
        max_inflight: most steps in flight before 503.
        metrics: the daemon's metrics.
        inflight: steps in flight right now.
        draining: set when shutdown began; new steps get 503.
        unready: set when a SIGTERM's drain delay began: ``/readyz`` answers 503, every
            other request is served as before.
        admins: users who see and act on every session (``admin`` in the tokens file).
    """

    runtime: AsyncRuntime
    graphs: list[Graph]
    default_graph: str
    max_inflight: int
    metrics: DaemonMetrics
    inflight: int = 0
    draining: bool = False
    unready: bool = False
    admins: frozenset[str] = frozenset()

    def owner_filter(self, user: str) -> str | None:
        """The owner the runtime checks ``user``'s requests against (None: an admin's, any)."""
        return None if user in self.admins else user

    async def run_step(
        self,
        session_id: str,
        user: str,
        input: Any,
        *,
        mode: StepMode = "step",
        on_busy: OnBusy = "enqueue",
        key: str | None = None,
    ) -> StepResult:
        """One step through the runtime, within the in-flight bound; counted in the metrics.

        ``key`` is the step's idempotency key (``Runtime.step``'s ``request_id``).

        Raises:
            Problem: the daemon is draining, or too many steps are in flight (503).
            ActorflowError: whatever the runtime raised.
        """
        if self.draining or self.runtime.draining:
            raise Problem(DRAINING, "the daemon is shutting down; retry on another instance")
        if self.inflight >= self.max_inflight:
            raise Problem(
                OVERLOADED,
                f"{self.inflight} steps are in flight (the limit is {self.max_inflight}); retry",
                session_id=session_id,
            )
        self.inflight += 1
        self.metrics.inflight.inc()
        started = time.perf_counter()
        try:
            result = await self.runtime.step(
                session_id,
                input,
                mode=mode,
                on_busy=on_busy,
                owner=self.owner_filter(user),
                request_id=key,
            )
        finally:
            self.inflight -= 1
            self.metrics.inflight.dec()
        self.metrics.record_step(time.perf_counter() - started)
        return result


def _caller(request: Request[Any, Any, Any]) -> str:
    user = request_info(request.scope).user
    if user is None:  # the gateway lets no /v1 request through without a user
        raise RuntimeError("request reached a /v1 handler without an authenticated user")
    return user


def _scope(api: Api, request: Request[Any, Any, Any]) -> str | None:
    """The owner a request may act as: the caller, or None (any owner) for an admin."""
    return api.owner_filter(_caller(request))


def _client_addr(request: Request[Any, Any, Any]) -> str | None:
    client = request.client
    return client.host if client is not None else None


def step_response(result: StepResult) -> StepResponse:
    """The step route's answer for ``result``."""
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


def replayed_header(result: StepResult) -> str:
    """The ``Idempotent-Replayed`` value of a keyed step's answer."""
    return "true" if result.replayed else "false"


def route_handlers(api: Api) -> list[ControllerRouterHandler]:
    """The route handlers of the daemon, bound to ``api``."""
    runtime = api.runtime

    @post(
        "/v1/sessions",
        status_code=201,
        summary="Create a session",
        responses=_problems(*_COMMON, 404),
        security=SECURITY,
        tags=["sessions"],
    )
    async def create_session(
        data: JSONBody[CreateSessionRequest], request: Request[Any, Any, Any]
    ) -> SessionCreated:
        user = _caller(request)
        # answered from the graph it pins, without reading the session back: one store
        # read less, and (a cluster) no lease taken here, so its first step activates it
        # wherever a load balancer sends it (docs/cluster.md)
        graph = runtime.graph(data.graph, data.version)
        session_id = await runtime.create_session(
            data.graph,
            owner=user,
            context=data.context,
            client_addr=_client_addr(request),
            max_messages=data.max_messages,
            version=graph.version,
        )
        request_info(request.scope).session_id = session_id
        return SessionCreated(
            session_id=session_id,
            graph=graph.id,
            current_task=graph.start,
            status=SessionStatus.PAUSED.value,  # what flow's new_session makes
            revision=0,
            graph_version=graph.version,
        )

    @get(
        "/v1/sessions/{session_id:str}",
        summary="Read a session",
        responses=_problems(*_COMMON, 404),
        security=SECURITY,
        tags=["sessions"],
    )
    async def read_session(
        session_id: FromPath[str],
        request: Request[Any, Any, Any],
        revision: Annotated[
            int | None, QueryParameter(ge=0, description="a past revision (default: the newest)")
        ] = None,
    ) -> SessionDetail:
        request_info(request.scope).session_id = session_id
        user = _scope(api, request)
        if revision is None:
            view = await runtime.get_session(session_id, owner=user)
        else:
            view = await runtime.get_session(session_id, owner=user, revision=revision)
        return SessionDetail.of(view)

    @post(
        "/v1/sessions/{session_id:str}/step",
        status_code=200,
        summary="Run one step (or, with mode=run, step until input is needed)",
        description="The body is optional: no body (or {}) is a step with no input.",
        operation_class=OptionalBodyOperation,
        responses=_problems(*_STEPPING),
        response_headers=[_REPLAYED_DOC],
        security=SECURITY,
        tags=["sessions"],
    )
    async def step_session(
        session_id: FromPath[str],
        request: Request[Any, Any, Any],
        data: JSONBody[StepRequest | None] = None,
        idempotency_key: Annotated[
            str | None,
            HeaderParameter(
                name="Idempotency-Key",
                description="retries with this key get the first run's result (docs/http-api.md)",
            ),
        ] = None,
    ) -> Response[StepResponse]:
        request_info(request.scope).session_id = session_id
        body = data if data is not None else StepRequest()
        result = await api.run_step(
            session_id,
            _caller(request),
            body.input,
            mode=body.mode,
            on_busy=body.on_busy,
            key=idempotency_key,
        )
        headers = (
            None if idempotency_key is None else {"idempotent-replayed": replayed_header(result)}
        )
        return Response(step_response(result), headers=headers)

    @delete(
        "/v1/sessions/{session_id:str}",
        status_code=204,
        summary="Delete a session",
        responses=_problems(*_COMMON, 404),
        security=SECURITY,
        tags=["sessions"],
    )
    async def delete_session(session_id: FromPath[str], request: Request[Any, Any, Any]) -> None:
        request_info(request.scope).session_id = session_id
        await runtime.delete_session(session_id, owner=_scope(api, request))

    @get(
        "/v1/sessions",
        summary="List the caller's sessions",
        responses=_problems(*_COMMON),
        security=SECURITY,
        tags=["sessions"],
    )
    async def list_sessions(
        request: Request[Any, Any, Any],
        limit: Annotated[int, QueryParameter(ge=1, le=1000, description="page size")] = 100,
        cursor: Annotated[
            str | None, QueryParameter(description="next_cursor of the previous page")
        ] = None,
    ) -> SessionList:
        page = await runtime.list_sessions(_scope(api, request), cursor=cursor, limit=limit)
        return SessionList(
            items=[SessionSummary.of(info) for info in page.items], next_cursor=page.next_cursor
        )

    @post(
        "/v1/execute",
        status_code=200,
        summary="graph-flow's execute: one step with content as input",
        description=(
            "Without session_id, creates a session of the default graph first, with its id "
            "in context key session_id. The content is the step's input (stored in context "
            "key user_input)."
        ),
        responses=_problems(*_STEPPING),
        response_headers=[_REPLAYED_DOC],
        security=SECURITY,
        tags=["graph-flow"],
    )
    async def execute(
        data: JSONBody[ExecuteRequest], request: Request[Any, Any, Any]
    ) -> Response[ExecuteResponse]:
        user = _caller(request)
        info = request_info(request.scope)
        session_id = data.session_id
        key = data.idempotency_key
        if key is not None and session_id is None:
            raise Problem(
                INVALID_REQUEST,
                "idempotency_key needs a session_id: a retry without one would create "
                "another session (create it first, then execute with its id)",
            )
        if session_id is None:
            session_id = await runtime.create_session(
                api.default_graph,
                owner=user,
                client_addr=_client_addr(request),
                session_id_key="session_id",  # graph-flow's services read it there
            )
        info.session_id = session_id
        result = await api.run_step(session_id, user, data.content, key=key)
        answer = ExecuteResponse(
            session_id=session_id, response=result.response, status=str(result.status)
        )
        headers = None if key is None else {"idempotent-replayed": replayed_header(result)}
        return Response(answer, headers=headers)

    @get("/healthz", summary="Liveness: 200 while the process is up", tags=["probes"])
    async def healthz() -> HealthResponse:
        return HealthResponse("ok")

    @get(
        "/readyz",
        summary="Readiness: 200 when the store is reachable and the daemon not draining",
        responses=_problems(503),
        tags=["probes"],
    )
    async def readyz() -> HealthResponse:
        if api.draining or runtime.draining:
            raise Problem(DRAINING, "the daemon is shutting down")
        if api.unready:
            raise Problem(DRAINING, "the daemon is about to shut down (still serving)")
        try:
            await asyncio.wait_for(runtime.ready(), READY_PROBE_TIMEOUT)
        except RuntimeClosed as exc:
            raise Problem(DRAINING, "the daemon is shutting down") from exc
        except Exception as exc:
            raise Problem(
                STORE_UNAVAILABLE, f"the store did not answer: {type(exc).__name__}: {exc}"
            ) from exc
        return HealthResponse("ready")

    @get(
        "/metrics",
        summary="Prometheus metrics (every name prefixed actorflow_)",
        media_type=METRICS_CONTENT_TYPE,
        tags=["probes"],
    )
    async def metrics() -> Response[bytes]:
        # stats() runs on a worker thread: the loop never walks the live sessions
        stats = await runtime.stats()
        body = api.metrics.render(RuntimeSample.of(stats))
        return Response(body, media_type=METRICS_CONTENT_TYPE)

    return [
        create_session,
        read_session,
        step_session,
        delete_session,
        list_sessions,
        *version_handlers(
            runtime,
            api.owner_filter,
            default_graph=api.default_graph,
            caller=_caller,
            problems=_problems(*_STEPPING),
        ),
        *member_handlers(runtime, api.owner_filter, _caller, _problems(*_COMMON, 404, 409, 429)),
        execute,
        healthz,
        readyz,
        metrics,
        *history_handlers(runtime, api.owner_filter, _problems(*_COMMON, 404), SECURITY),
    ]
