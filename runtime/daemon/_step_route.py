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
from typing import Any, cast

import msgspec
import structlog
from litestar.types import ASGIApp, Receive, Scope, Send

from runtime.daemon._gateway import request_info
from runtime.daemon._http import App, read_body, replayer, send_bytes, send_problem
from runtime.daemon._http import Receive as _Receive
from runtime.daemon._http import Send as _Send
from runtime.daemon._models import decode_step_request
from runtime.daemon._policy import malformed_json
from runtime.daemon._problems import INTERNAL, Problem, problem_for
from runtime.daemon._routes import Api, replayed_header, step_response

__all__ = ["StepRoute"]

_PATH = re.compile(r"/v1/sessions/([^/]+)/step")
_JSON_HEADERS = (b"content-type", b"application/json")
_encode = msgspec.json.Encoder().encode
_log = structlog.get_logger("actorflowd")


class StepRoute:
    """ASGI middleware answering well-formed step requests itself; the rest goes to ``app``.

    Args:
        app: the Litestar app (every other request, and every malformed step request).
        api: what the handlers share (``run_step``, the metrics).
        max_body: the daemon's request body limit (larger bodies go to ``app``: 413).
    """

    def __init__(self, app: ASGIApp, api: Api, *, max_body: int) -> None:
        self.app = cast(App, app)
        self.api = api
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = cast("dict[str, Any]", scope)
        match = _PATH.fullmatch(raw["path"]) if raw["type"] == "http" else None
        if match is None or raw["method"] != "POST":
            await self.app(raw, cast(_Receive, receive), cast(_Send, send))
            return
        body, complete = await read_body(raw, cast(_Receive, receive), self.max_body)
        info = request_info(raw)
        session_id = match.group(1)
        try:
            request = decode_step_request(body) if complete else None
        except (UnicodeDecodeError, RecursionError) as exc:
            info.session_id = session_id
            await send_problem(cast(_Send, send), self._problem(malformed_json(exc), session_id))
            return
        if request is None or info.user is None:
            replay = replayer(body, complete, cast(_Receive, receive))
            await self.app(raw, replay, cast(_Send, send))
            return
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
            await send_problem(cast(_Send, send), self._problem(exc, session_id))
            return
        headers = [_JSON_HEADERS]
        if key is not None:
            headers.append((b"idempotent-replayed", replayed_header(result).encode()))
        await send_bytes(cast(_Send, send), 200, headers, _encode(step_response(result)))

    def _problem(self, exc: Exception, session_id: str) -> Problem:
        """The answer for what ``run_step`` raised; counted, and logged when unexpected."""
        problem = problem_for(exc, session_id)
        if problem.session_id is None:
            problem.session_id = session_id
        self.api.metrics.record_error(problem.kind.slug)
        if problem.kind is INTERNAL:
            _log.error("unhandled_error", session_id=session_id, exc_info=exc)
        return problem


def _idempotency_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The request's ``Idempotency-Key`` (the runtime checks its form), if any."""
    for name, value in headers:
        if name.lower() == b"idempotency-key":
            return value.decode("latin-1")
    return None
