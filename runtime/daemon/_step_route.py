"""``POST /v1/sessions/{id}/step`` served without Litestar's request machinery.

The step route carries nearly all of the daemon's traffic, and Litestar's
routing, signature modelling, body extraction and response building cost more
CPU than the step itself. ``StepRoute`` sits in front of the Litestar app: a
well-formed step request (a body that decodes as a ``StepRequest``, or none, an
authenticated caller) is run through ``Api.run_step`` here and answered with
the same JSON document the Litestar handler returns. Anything else (another
route, a body Litestar must reject with 400/413/422, a path with a trailing
slash) goes to the Litestar app unchanged, so every answer but the common one
still comes from one place.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, cast

import msgspec
import structlog
from litestar.types import ASGIApp, Receive, Scope, Send

from runtime.daemon._gateway import request_info
from runtime.daemon._models import StepRequest
from runtime.daemon._problems import INTERNAL, Problem, problem_for_error
from runtime.daemon._routes import Api, replayed_header, step_response
from runtime.errors import ActorflowError

__all__ = ["StepRoute"]

_PATH = re.compile(r"^/v1/sessions/([^/]+)/step$")
_JSON_HEADERS = (b"content-type", b"application/json")
_DEFAULT = StepRequest()
_decode_step = msgspec.json.Decoder(StepRequest | None).decode
_encode = msgspec.json.Encoder().encode
_log = structlog.get_logger("actorflowd")

# ASGI, loosely typed: litestar's TypedDicts are exact per event and scope type
_Message = dict[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_App = Callable[[dict[str, Any], _Receive, _Send], Awaitable[None]]


class StepRoute:
    """ASGI middleware answering well-formed step requests itself; the rest goes to ``app``.

    Args:
        app: the Litestar app (every other request, and every malformed step request).
        api: what the handlers share (``run_step``, the metrics).
        max_body: the daemon's request body limit (larger bodies go to ``app``: 413).
    """

    def __init__(self, app: ASGIApp, api: Api, *, max_body: int) -> None:
        self.app = cast(_App, app)
        self.api = api
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = cast("dict[str, Any]", scope)
        match = _PATH.match(raw["path"]) if raw["type"] == "http" else None
        if match is None or raw["method"] != "POST":
            await self.app(raw, cast(_Receive, receive), cast(_Send, send))
            return
        messages, body = await _read_body(cast(_Receive, receive), self.max_body)
        request = _decoded(body) if body is not None else None
        info = request_info(raw)
        if request is None or info.user is None:
            await self.app(raw, _replayer(messages, cast(_Receive, receive)), cast(_Send, send))
            return
        session_id = match.group(1)
        info.session_id = session_id
        key = _idempotency_key(raw["headers"])
        try:
            result = await self.api.run_step(
                session_id,
                info.user,
                request.input,
                mode=request.mode,
                on_busy=request.on_busy,
                key=key,
            )
        except Exception as exc:  # every failure is answered as problem+json, as Litestar would
            await self._send_problem(cast(_Send, send), self._problem(exc, raw, session_id))
            return
        headers = [_JSON_HEADERS]
        if key is not None:
            headers.append((b"idempotent-replayed", replayed_header(result).encode()))
        await _send(cast(_Send, send), 200, headers, _encode(step_response(result)))

    def _problem(self, exc: Exception, scope: dict[str, Any], session_id: str) -> Problem:
        """The answer for what ``run_step`` raised; counted, and logged when unexpected."""
        if isinstance(exc, Problem):
            problem = exc
        elif isinstance(exc, ActorflowError):
            problem = problem_for_error(exc, session_id)
        else:
            problem = Problem(
                INTERNAL, "an unexpected error occurred; it has been logged", session_id
            )
        self.api.metrics.record_error(problem.kind.slug)
        if problem.kind is INTERNAL:
            _log.error(
                "unhandled_error",
                request_id=request_info(scope).request_id,
                session_id=session_id,
                exc_info=exc,
            )
        return problem

    async def _send_problem(self, send: _Send, problem: Problem) -> None:
        headers = [(k.encode(), v.encode()) for k, v in problem.response_headers().items()]
        await _send(send, problem.status, headers, problem.body())


def _idempotency_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The request's ``Idempotency-Key`` (the runtime checks its form), if any."""
    for name, value in headers:
        if name.lower() == b"idempotency-key":
            return value.decode("latin-1")
    return None


def _decoded(body: bytes) -> StepRequest | None:
    """The step request in ``body`` (the defaults for none), or None if Litestar must answer."""
    if not body:
        return _DEFAULT
    try:
        return _decode_step(body) or _DEFAULT
    except msgspec.DecodeError:
        return None


async def _send(send: _Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _read_body(receive: _Receive, limit: int) -> tuple[list[_Message], bytes | None]:
    """The messages read, and the whole body (None: over ``limit``, or the client left)."""
    messages: list[_Message] = []
    size = 0
    while size <= limit:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            if size > limit:
                return messages, None
            if len(messages) == 1:
                return messages, messages[0].get("body", b"")
            return messages, b"".join(m.get("body", b"") for m in messages)
    return messages, None


def _replayer(messages: list[_Message], rest: _Receive) -> _Receive:
    """A ``receive`` giving ``messages`` again, then what ``rest`` gives."""
    pending = iter(messages)

    async def receive() -> _Message:
        message = next(pending, None)
        return message if message is not None else await rest()

    return receive
