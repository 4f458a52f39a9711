"""The Litestar application: routes, OpenAPI, and every error as problem+json."""

from __future__ import annotations

from typing import Any

import msgspec
import structlog
from litestar import Litestar, Request
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.response import Response

from runtime.daemon._auth import Authenticator
from runtime.daemon._docs_ui import docs_assets_router, swagger_plugin
from runtime.daemon._forward import Forwarder, forwarder_for
from runtime.daemon._gateway import Gateway, request_info
from runtime.daemon._policy import GatewayPolicy, malformed_json
from runtime.daemon._problems import (
    BODY_TOO_LARGE,
    HTTP_STATUS_TABLE,
    INTERNAL,
    INVALID_REQUEST,
    MALFORMED_JSON,
    NOT_FOUND,
    Problem,
    ProblemKind,
    problem_for,
)
from runtime.daemon._routes import Api, route_handlers
from runtime.daemon._sse import SseRoutes
from runtime.daemon._step_route import StepRoute
from runtime.daemon.ui import UI_PATH, Dashboard, ui_error_page, ui_router
from runtime.daemon.ui._logins import Logins
from runtime.daemon.ui._peers import Peers
from runtime.errors import ActorflowError

__all__ = ["OPENAPI_PATH", "build_app", "problem_for_exception"]

OPENAPI_PATH = "/schema"
_log = structlog.get_logger("actorflowd")


def _validation_problem(exc: ValidationException, session_id: str | None) -> Problem:
    """422 with msgspec's messages, or 400 when the required body is missing altogether."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    parts = []
    for item in extra:
        if not isinstance(item, dict):
            continue
        key, message = item.get("key"), item.get("message")
        if key == "data" and message == "'data'":  # Litestar's way of saying "no body"
            detail = "the request body is missing; send a JSON object"
            return Problem(MALFORMED_JSON, detail, session_id=session_id)
        parts.append(f"{key}: {message}" if key and key != "data" else str(message))
    detail = "; ".join(parts) or str(exc.detail)
    return Problem(INVALID_REQUEST, detail, session_id=session_id)


def problem_for_exception(
    exc: Exception, request: Request[Any, Any, Any], *, max_body: int
) -> Problem:
    """The problem+json answer for anything a handler (or Litestar) raised."""
    session_id = request.path_params.get("session_id") if request.scope.get("path_params") else None
    if isinstance(exc, Problem | ActorflowError):
        return problem_for(exc, session_id)
    if isinstance(exc, UnicodeDecodeError | RecursionError | msgspec.DecodeError):
        return malformed_json(exc)
    if isinstance(exc, ValidationException):
        return _validation_problem(exc, session_id)
    if isinstance(exc, HTTPException):
        if exc.status_code == 400 and _is_decode_error(exc):
            return Problem(MALFORMED_JSON, str(exc.detail), session_id=session_id)
        if exc.status_code == 404:
            return Problem(NOT_FOUND, f"no route for {request.method} {request.url.path}")
        if exc.status_code == 413:
            detail = f"the request body is larger than the limit of {max_body} bytes"
            return Problem(BODY_TOO_LARGE, detail, session_id=session_id)
        kind = HTTP_STATUS_TABLE.get(exc.status_code) or ProblemKind(
            exc.status_code, f"http-{exc.status_code}", str(exc.detail)
        )
        return Problem(kind, str(exc.detail), session_id=session_id, headers=exc.headers or {})
    return problem_for(exc, session_id)


def _is_decode_error(exc: HTTPException) -> bool:
    """Whether Litestar's 400 is about the body's JSON (malformed or truncated)."""
    cause = exc.__cause__
    while cause is not None:  # Litestar chains its SerializationException to msgspec's error
        if isinstance(cause, msgspec.DecodeError | UnicodeDecodeError | RecursionError):
            return True
        cause = cause.__cause__
    detail = str(exc.detail).lower()
    return "malformed" in detail or "json" in detail or "truncated" in detail


def build_app(
    api: Api,
    auth: Authenticator,
    *,
    max_body: int,
    policy: GatewayPolicy | None = None,
    forward_timeout: float = 0.0,
    secure_cookies: bool = False,
    sse_heartbeat: float = 15.0,
    peers: Peers | None = None,
) -> Gateway:
    """The daemon's ASGI application: the gateway, (in a cluster) the forwarder, the
    event streams (SSE), the step route's fast path, then the Litestar app (the API
    and the dashboard at /ui).

    ``forward_timeout`` bounds a request sent on to another daemon (0: the step timeout
    plus two lease ttls).

    ``aclose()`` on it closes the forwarder's connections (in a cluster) and stops the
    dashboard's sampler. ``secure_cookies``: the daemon serves TLS.
    """
    # peers: on a worker of --workers N, every worker's figures and the login key
    logins = Logins(key=peers.key if peers is not None else None)
    dashboard = Dashboard(api, auth, secure_cookies=secure_cookies, logins=logins, peers=peers)

    def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        path = request.url.path
        if path == UI_PATH or path.startswith(UI_PATH + "/"):
            return ui_error_page(dashboard, request, exc)  # a browser's page: HTML
        problem = problem_for_exception(exc, request, max_body=max_body)
        info = request_info(request.scope)
        if problem.session_id and info.session_id is None:
            info.session_id = problem.session_id
        api.metrics.record_error(problem.kind.slug)
        if problem.kind is INTERNAL:
            _log.error(
                "unhandled_error",
                request_id=info.request_id,
                session_id=info.session_id,
                exc_info=exc,
            )
        return Response(
            problem.body(),
            status_code=problem.status,
            headers=problem.response_headers(),
            media_type=problem.response_headers()["content-type"],
        )

    app = Litestar(
        route_handlers=[
            *route_handlers(api),
            docs_assets_router(OPENAPI_PATH),
            ui_router(dashboard),
        ],
        exception_handlers={Exception: handle},
        logging_config=None,
        debug=False,
        request_max_body_size=max_body,
        openapi_config=OpenAPIConfig(
            title="actorflow",
            version="1",
            description=(
                "actorflowd: graph sessions over HTTP. Errors are application/problem+json; "
                "/v1 routes need 'Authorization: Bearer <token>' when the daemon has a "
                "tokens file."
            ),
            path=OPENAPI_PATH,
            render_plugins=[swagger_plugin(OPENAPI_PATH)],
            components=Components(
                security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}
            ),
        ),
    )
    steps = StepRoute(app, api, max_body=max_body)
    streams = SseRoutes(steps, api, max_body=max_body, heartbeat=sse_heartbeat)
    cluster = api.runtime.cluster
    if cluster is not None and not forward_timeout:
        config = api.runtime.config
        forward_timeout = config.step_timeout + 2 * config.lease_ttl
    inner = forwarder_for(
        streams,
        cluster,
        max_body=max_body,
        timeout=forward_timeout,
        on_forward=api.metrics.forwarded.inc,
    )
    forwarder = inner if isinstance(inner, Forwarder) else None

    async def on_close() -> None:
        await dashboard.sampler.aclose()
        if peers is not None:
            await peers.aclose()
        if forwarder is not None:
            await forwarder.aclose()

    return Gateway(
        inner,
        auth,
        api.metrics,
        on_close=on_close,
        policy=policy or GatewayPolicy(),
        max_body=max_body,
    )
