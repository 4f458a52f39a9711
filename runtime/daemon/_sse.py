"""Server-Sent Events: a streamed step, and a session's live tail.

``SseRoutes`` sits in front of the step route's fast path and answers:

- ``POST /v1/sessions/{id}/step`` with ``Accept: text/event-stream``: the step
  runs as ``AsyncRuntime.stream`` runs it, and each event goes out as it
  happens (``event:`` its kind, ``data:`` its JSON, ``id:`` its sequence
  number). An error before the step starts is answered problem+json with its
  status, as a plain step's is; once it started, a failure is the last event,
  ``error``, whose data is the problem+json document. A client that leaves
  does not cancel the step: it commits, and its result stays readable
  (``GET /v1/sessions/{id}``, ``/revisions``).
- ``GET /v1/sessions/{id}/events`` (the owner, a member, or an admin): every event of the
  session from now on, whoever steps it, until the client leaves, the reader
  falls behind (``overflow``) or the daemon drains. In a cluster the tail is
  served by the session's lease holder (``runtime.daemon._forward`` relays it
  there); a session live nowhere is activated here first, and the tail ends
  when the session leaves this daemon (passivated, lease lost), so that the
  reader reopens it where the session lives next (docs/cluster.md).

Both send a comment (``: keepalive``) after ``heartbeat`` seconds without an
event, so proxies and clients see the connection alive. Everything else goes
to ``app`` unchanged.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Callable
from typing import Any, cast

import msgspec
import structlog
from litestar.types import ASGIApp, Receive, Scope, Send

from flow._events import Committed, StepError, StepEvent
from runtime._streams import AsyncEventStream
from runtime.daemon._gateway import request_info
from runtime.daemon._http import App, disconnected, header, read_body, replayer, send_problem
from runtime.daemon._http import Receive as _Receive
from runtime.daemon._http import Send as _Send
from runtime.daemon._models import decode_step_request
from runtime.daemon._policy import malformed_json
from runtime.daemon._problems import DRAINING, INTERNAL, OVERLOADED, Problem, problem_for
from runtime.daemon._routes import Api

__all__ = ["SseRoutes", "sse_frame"]

_STEP_PATH = re.compile(r"/v1/sessions/([^/]+)/step")
_EVENTS_PATH = re.compile(r"/v1/sessions/([^/]+)/events")
_EVENT_STREAM = b"text/event-stream"
_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_HEARTBEAT = b": keepalive\n\n"
# seconds between two checks that a tailed session is still live here (in a cluster)
_LEFT_CHECK = 1.0
_encode = msgspec.json.Encoder().encode
_log = structlog.get_logger("actorflowd")


def sse_frame(seq: int, event: StepEvent, session_id: str) -> bytes:
    """One event as an SSE frame; an ``error`` carries the problem+json document."""
    if isinstance(event, StepError):
        data = problem_for(event.error, session_id).body()
        kind = b"error"
    else:
        data = _encode(event)
        kind = type(event).__struct_config__.tag.encode()  # type: ignore[union-attr]  # every event is tagged
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, kind, data)


def _wants_events(headers: list[tuple[bytes, bytes]]) -> bool:
    accept = header(headers, b"accept")
    return accept is not None and _EVENT_STREAM in accept.lower()


class SseRoutes:
    """ASGI middleware answering the two event-stream routes; the rest goes to ``app``.

    Args:
        app: what answers every other request (the step route's fast path).
        api: what the handlers share (runtime, limits, metrics).
        max_body: the daemon's request body limit.
        heartbeat: seconds without an event before a keep-alive comment.
    """

    def __init__(self, app: ASGIApp, api: Api, *, max_body: int, heartbeat: float) -> None:
        self.app = cast(App, app)
        self.api = api
        self.max_body = max_body
        self.heartbeat = heartbeat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = cast("dict[str, Any]", scope)
        rcv, snd = cast(_Receive, receive), cast(_Send, send)
        if raw["type"] == "http":
            path = raw["path"]
            if raw["method"] == "POST" and _wants_events(raw["headers"]):
                match = _STEP_PATH.fullmatch(path)
                if match is not None:
                    await self._step(raw, rcv, snd, match.group(1))
                    return
            elif raw["method"] == "GET":
                match = _EVENTS_PATH.fullmatch(path)
                if match is not None:
                    await self._tail(raw, rcv, snd, match.group(1))
                    return
        await self.app(raw, rcv, snd)

    async def _step(self, raw: dict[str, Any], receive: _Receive, send: _Send, sid: str) -> None:
        body, complete = await read_body(raw, receive, self.max_body)
        info = request_info(raw)
        info.session_id = sid
        try:
            request = decode_step_request(body) if complete else None
        except (UnicodeDecodeError, RecursionError) as exc:
            await send_problem(send, self._problem(malformed_json(exc), sid))
            return
        if request is None or info.user is None:  # Litestar answers what is malformed
            await self.app(raw, replayer(body, complete, receive), send)
            return
        api = self.api
        if api.draining or api.runtime.draining:
            problem = Problem(DRAINING, "the daemon is shutting down; retry on another instance")
            await send_problem(send, self._problem(problem, sid))
            return
        if api.inflight >= api.max_inflight:
            detail = f"{api.inflight} steps are in flight (the limit is {api.max_inflight}); retry"
            await send_problem(send, self._problem(Problem(OVERLOADED, detail), sid))
            return
        api.inflight += 1
        api.metrics.inflight.inc()
        started = time.perf_counter()
        try:
            stream = api.runtime.stream(
                sid,
                request.input,
                mode=request.mode,
                on_busy=request.on_busy,
                owner=api.owner_filter(info.user),
                request_id=_idempotency_key(raw["headers"]),
            )
            ok = await self._pump(stream, receive, send, sid, first_is_problem=True)
        finally:
            api.inflight -= 1
            api.metrics.inflight.dec()
        if ok:
            api.metrics.record_step(time.perf_counter() - started)

    async def _tail(self, raw: dict[str, Any], receive: _Receive, send: _Send, sid: str) -> None:
        info = request_info(raw)
        info.session_id = sid
        if info.user is None:
            await self.app(raw, receive, send)
            return
        try:
            stream = await self.api.runtime.tail(sid, owner=self.api.owner_filter(info.user))
        except Exception as exc:  # answered as problem+json, as Litestar would
            await send_problem(send, self._problem(exc, sid))
            return
        cluster = self.api.runtime.cluster
        here = None if cluster is None else functools.partial(cluster.holds, sid)
        await self._start(send)
        await self._pump(stream, receive, send, sid, first_is_problem=False, here=here)

    async def _start(self, send: _Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": list(_HEADERS)})

    async def _pump(
        self,
        stream: AsyncEventStream,
        receive: _Receive,
        send: _Send,
        sid: str,
        *,
        first_is_problem: bool,
        here: Callable[[], bool] | None = None,
    ) -> bool:
        """Send the stream's events until it ends or the client leaves; True if it ended
        with ``committed`` (not ``error`` or ``overflow``). With ``first_is_problem`` the
        response starts with the first event, and an ``error`` first is answered as
        problem+json instead. With ``here`` (a tail in a cluster), the stream also ends
        once ``here()`` is false (checked each ``_LEFT_CHECK`` seconds without events)."""
        gone = asyncio.ensure_future(disconnected(receive))
        stream.interrupt_on(gone)
        last: StepEvent | None = None
        patience = self.heartbeat if here is None else min(self.heartbeat, _LEFT_CHECK)
        quiet_since = time.monotonic()
        try:
            while not gone.done():
                batch = await stream.batch(patience)
                if batch is None or gone.done():
                    break
                if here is not None and not batch:
                    if not here():
                        break  # the session left this daemon: the reader follows it
                    if time.monotonic() - quiet_since < self.heartbeat:
                        continue
                quiet_since = time.monotonic()
                if first_is_problem and batch:
                    first_is_problem = False
                    if isinstance(batch[0][1], StepError):
                        await send_problem(send, self._problem(batch[0][1].error, sid))
                        return False
                    await self._start(send)
                elif first_is_problem:
                    continue  # the step waits in the mailbox: nothing is sent yet
                chunk = (
                    b"".join(sse_frame(seq, event, sid) for seq, event in batch)
                    if batch
                    else _HEARTBEAT
                )
                if batch:
                    last = batch[-1][1]
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if gone.done():
                self.api.metrics.stream_disconnects.inc()
                return False
            if first_is_problem:  # ended before any event: cannot happen, but answer
                await send_problem(send, self._problem(RuntimeError("stream ended"), sid))
                return False
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return isinstance(last, Committed)
        finally:
            stream.close()
            gone.cancel()

    def _problem(self, exc: BaseException, session_id: str) -> Problem:
        problem = problem_for(exc, session_id)
        if problem.session_id is None:
            problem.session_id = session_id
        self.api.metrics.record_error(problem.kind.slug)
        if problem.kind is INTERNAL:
            _log.error("unhandled_error", session_id=session_id, exc_info=exc)
        return problem


def _idempotency_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    value = header(headers, b"idempotency-key")
    return None if value is None else value.decode("latin-1")
