"""The ASGI layer in front of the Litestar app: request ids, authentication, access logs.

It runs for every HTTP request before routing: it takes the request id from
``X-Request-ID`` (or makes one) and echoes it in the response, checks the bearer
token of every ``/v1`` route (401 problem+json otherwise), and logs one line per
request with request_id, session_id, method, path, status and duration_ms.
Handlers find the caller in ``scope["actorflow"]`` (a ``RequestInfo``).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import structlog
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from runtime.daemon._auth import Authenticator
from runtime.daemon._metrics import DaemonMetrics
from runtime.daemon._problems import UNAUTHORIZED, Problem

__all__ = ["SCOPE_KEY", "Gateway", "RequestInfo", "request_info"]

SCOPE_KEY = "actorflow"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
_log = structlog.get_logger("actorflowd.access")


@dataclass(slots=True)
class RequestInfo:
    """What the gateway learnt about a request, and what handlers add for the log line."""

    request_id: str
    user: str | None = None
    session_id: str | None = None


def _new_request_id() -> str:
    # not a secret, only unique: no system call (os.urandom) on the event loop thread
    return f"{random.getrandbits(128):032x}"


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


class Gateway:
    """Wraps the app: request ids, bearer authentication on ``/v1``, access logs.

    Args:
        app: the app behind the gateway.
        auth: checks the bearer tokens.
        metrics: counts the 401 answers.
        on_close: what ``aclose`` awaits (closing the app's own clients), if anything.
    """

    def __init__(
        self,
        app: ASGIApp,
        auth: Authenticator,
        metrics: DaemonMetrics,
        *,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.app = app
        self.auth = auth
        self.metrics = metrics
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

        try:
            if raw["path"].startswith("/v1/") or raw["path"] == "/v1":
                info.user = self.auth.user_for(_header(headers, b"authorization"))
                if info.user is None:
                    await self._unauthorized(send_with_id)
                    return
            await self.app(scope, receive, send_with_id)
        finally:
            _log.info(
                "request",
                request_id=request_id,
                session_id=info.session_id,
                user=info.user,
                method=raw["method"],
                path=raw["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )

    async def _unauthorized(self, send: Send) -> None:
        problem = Problem(
            UNAUTHORIZED,
            "a valid 'Authorization: Bearer <token>' header is required",
            headers={"www-authenticate": 'Bearer realm="actorflow"'},
        )
        self.metrics.record_error(problem.kind.slug)
        body = problem.body()
        raw: list[tuple[bytes, bytes]] = [
            (k.encode(), v.encode()) for k, v in problem.response_headers().items()
        ]
        raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": problem.status, "headers": raw})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def request_info(scope: Any) -> RequestInfo:
    """The ``RequestInfo`` the gateway put in ``scope`` (a fresh one if it is missing)."""
    info = scope.get(SCOPE_KEY)
    if isinstance(info, RequestInfo):
        return info
    info = RequestInfo(_new_request_id())
    scope[SCOPE_KEY] = info
    return info
