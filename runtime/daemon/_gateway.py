"""The ASGI layer in front of the Litestar app: request ids, authentication, access logs.

It runs for every HTTP request before routing: it takes the request id from
``X-Request-ID`` (or makes one) and echoes it in the response, refuses what
``_policy`` refuses (non-canonical paths, foreign hosts and origins), checks the
bearer token of every ``/v1`` route (401 problem+json otherwise), then a body's
content type, JSON depth and the user's step rate, and logs one line per
request with request_id, session_id, method, path, status and duration_ms.
The body is read here once (``_http.read_body``) and replayed to the app.
Handlers find the caller in ``scope["actorflow"]`` (a ``RequestInfo``).
"""

from __future__ import annotations

import itertools
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import structlog
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from runtime.daemon._auth import Authenticator
from runtime.daemon._front_http import CLIENT_HEADER
from runtime.daemon._http import (
    ClientLeft,
    has_body,
    header,
    read_body,
    replayer,
    send_bytes,
    send_problem,
)
from runtime.daemon._http import Receive as _Receive
from runtime.daemon._http import Send as _Send
from runtime.daemon._logging import log_access
from runtime.daemon._metrics import DaemonMetrics
from runtime.daemon._policy import (
    GatewayPolicy,
    StepRateLimiter,
    canonical_path_problem,
    content_type_problem,
    host_problem,
    is_step,
    json_depth_problem,
    origin_allowed,
    origin_problem,
)
from runtime.daemon._problems import UNAUTHORIZED, Problem

__all__ = ["SCOPE_KEY", "Gateway", "RequestInfo", "request_info"]

SCOPE_KEY = "actorflow"
CLIENT_CLOSED = 499
"""The status logged for a request whose client left before its body ended (nothing sent)."""
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
_log = structlog.get_logger("actorflowd.access")


@dataclass(slots=True)
class RequestInfo:
    """What the gateway learnt about a request, and what handlers add for the log line."""

    request_id: str
    user: str | None = None
    session_id: str | None = None


# Not a secret, only unique: a random prefix per process and a counter (no system
# call and no 128-bit random number per request on the event loop thread).
_ID_PREFIX = f"{random.getrandbits(64):016x}"
_ids = itertools.count(1)


def _new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ids):08x}"


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    value = header(headers, name)
    return None if value is None else value.decode("latin-1")


class Gateway:
    """Wraps the app: request ids, bearer authentication on ``/v1``, access logs.

    Args:
        app: the app behind the gateway.
        auth: checks the bearer tokens.
        metrics: counts the 401 answers.
        on_close: what ``aclose`` awaits (closing the app's own clients), if anything.
        policy: hosts, origins and the step rate (the default checks none of them).
        max_body: the body limit (a larger body is not read here: the app answers 413).
    """

    def __init__(
        self,
        app: ASGIApp,
        auth: Authenticator,
        metrics: DaemonMetrics,
        *,
        on_close: Callable[[], Awaitable[None]] | None = None,
        policy: GatewayPolicy = GatewayPolicy(),  # noqa: B008  # frozen: one shared default is safe
        max_body: int = 1024 * 1024,
    ) -> None:
        self.app = app
        self.auth = auth
        self.metrics = metrics
        self.policy = policy
        self.max_body = max_body
        self._steps = StepRateLimiter(policy.step_rate)
        self._on_close = on_close

    async def aclose(self) -> None:
        """Close what the app behind the gateway holds open (e.g. the forwarder's clients)."""
        if self._on_close is not None:
            await self._on_close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = cast("dict[str, Any]", scope)  # plain ASGI: our own key goes into the scope
        if raw["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        if self.policy.client_from_front:
            _client_from_front(raw)
        headers: list[tuple[bytes, bytes]] = raw["headers"]
        given = _header(headers, b"x-request-id")
        request_id = given if given and _REQUEST_ID.match(given) else _new_request_id()
        info = RequestInfo(request_id)
        raw[SCOPE_KEY] = info
        # every line logged while serving this request (its own asyncio task) carries its id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500
        rid_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        cors_origin = self._cors_origin(raw)
        reply: Send = send_with_id if cors_origin is None else _with_cors(send_with_id, cors_origin)
        try:
            if raw["method"] == "OPTIONS" and cors_origin is not None:
                await send_bytes(cast(_Send, reply), 204, _preflight_headers(), b"")
                return
            problem = self._refusal(raw, info)
            if problem is None and has_body(raw) and raw["path"].startswith("/v1/"):
                body, complete = await read_body(raw, cast(_Receive, receive), self.max_body)
                problem = json_depth_problem(body) if complete else None
                receive = cast(Receive, replayer(body, complete, cast(_Receive, receive)))
            if problem is not None:
                self.metrics.record_error(problem.kind.slug)
                await send_problem(cast(_Send, reply), problem)
                return
            await self.app(scope, receive, reply)
        except ClientLeft:
            # the body was cut short (here or in a layer behind): nothing ran, and
            # nobody is left to answer (logged as nginx's 499, "client closed request")
            status = CLIENT_CLOSED
        finally:
            fields = {
                "request_id": request_id,
                "session_id": info.session_id,
                "user": info.user,
                "client": (raw.get("client") or ("",))[0],
                "method": raw["method"],
                "path": raw["path"],
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            }
            if not log_access(fields):
                _log.info("request", **fields)

    def _refusal(self, scope: dict[str, Any], info: RequestInfo) -> Problem | None:
        """The first check the request fails, in order, or None."""
        problem = (
            canonical_path_problem(scope)
            or host_problem(scope, self.policy)
            or origin_problem(scope, self.policy)
        )
        path: str = scope["path"]
        if problem is not None or not (path.startswith("/v1/") or path == "/v1"):
            return problem
        info.user = self.auth.user_for(_header(scope["headers"], b"authorization"))
        if info.user is None:
            return Problem(
                UNAUTHORIZED,
                "a valid 'Authorization: Bearer <token>' header is required",
                headers={"www-authenticate": 'Bearer realm="actorflow"'},
            )
        problem = content_type_problem(scope)
        if problem is None and is_step(scope):
            problem = self._steps.take(info.user)
        return problem

    def _cors_origin(self, scope: dict[str, Any]) -> str | None:
        """The request's ``Origin`` when it is cross-origin and allowed (CORS headers go out)."""
        if not self.policy.cors_origins:
            return None
        origin = _header(scope["headers"], b"origin")
        if origin is None or not origin_allowed(origin, scope, self.policy):
            return None
        return origin


def _with_cors(send: Send, origin: str) -> Send:
    extra = [(b"access-control-allow-origin", origin.encode()), (b"vary", b"origin")]

    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *extra]
        await send(message)

    return send_with_cors


def _preflight_headers() -> list[tuple[bytes, bytes]]:
    return [
        (b"access-control-allow-methods", b"GET, POST, PATCH, DELETE"),
        (b"access-control-allow-headers", b"authorization, content-type, x-request-id"),
        (b"access-control-max-age", b"600"),
    ]


def request_info(scope: Any) -> RequestInfo:
    """The ``RequestInfo`` the gateway put in ``scope`` (a fresh one if it is missing)."""
    info = scope.get(SCOPE_KEY)
    if isinstance(info, RequestInfo):
        return info
    info = RequestInfo(_new_request_id())
    scope[SCOPE_KEY] = info
    return info


def _client_from_front(scope: dict[str, Any]) -> None:
    """Take the client's address from the front's header (a worker of ``--workers N``)."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for i, (name, value) in enumerate(headers):
        if name == CLIENT_HEADER:
            host, _, port = value.decode("latin-1").rpartition(" ")
            if host and port.isdigit():
                scope["client"] = (host, int(port))
            del headers[i]
            return
