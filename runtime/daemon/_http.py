"""Plain-ASGI helpers shared by the layers in front of the Litestar app.

The gateway, the forwarder and the step route's fast path each read a body,
send a response or answer a problem without Litestar; they do it with these
functions, so there is one body reader (read once per request: the result is
kept in the scope), one response writer and one problem writer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from runtime.daemon._problems import Problem

__all__ = [
    "App",
    "ClientLeft",
    "Message",
    "Receive",
    "Send",
    "disconnected",
    "has_body",
    "header",
    "read_body",
    "replayer",
    "send_bytes",
    "send_problem",
]

# ASGI, loosely typed: litestar's TypedDicts are exact per event and scope type
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]

_BODY_KEY = "actorflow.body"
_LEFT = (b"", False)  # kept in the scope for a body cut short: never read again


class ClientLeft(Exception):
    """The client disconnected before its request body ended: the request is not run
    (a step cut short must never run with the part of its body that arrived) and
    nobody is answered. The gateway catches it."""


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case), or None."""
    for key, value in headers:
        if key == name:
            return bytes(value)
    return None


async def read_body(scope: dict[str, Any], receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The request body, and False if it is over ``limit`` (then only what was read).

    The result is kept in ``scope``: a second call (the step route behind the
    forwarder) gets it again without reading.

    Raises:
        ClientLeft: the client disconnected before the body ended (and again on
            every later call for this request).
    """
    kept = scope.get(_BODY_KEY)
    if kept is _LEFT:
        raise ClientLeft(scope.get("path", ""))
    if kept is not None:
        return kept  # type: ignore[no-any-return]
    chunks: list[bytes] = []
    size = 0
    complete = True
    while True:
        message = await receive()
        if message["type"] != "http.request":
            if not chunks and not has_body(scope):
                break  # no body to wait for: an empty one, complete
            scope[_BODY_KEY] = _LEFT
            raise ClientLeft(scope.get("path", ""))
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        if size > limit:
            complete = False
            break
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    scope[_BODY_KEY] = (body, complete)
    return body, complete


def has_body(scope: dict[str, Any]) -> bool:
    """Whether the request announces a body."""
    headers = scope["headers"]
    length = header(headers, b"content-length")
    if length is not None:
        return length.strip() not in (b"", b"0")
    return header(headers, b"transfer-encoding") is not None


def replayer(body: bytes, complete: bool, rest: Receive) -> Receive:
    """A ``receive`` giving ``body`` first (the rest of it follows unless ``complete``),
    then what ``rest`` gives (the rest of the body, or the client's disconnect)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": not complete}
        return await rest()

    return receive


async def send_bytes(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    """Send a whole response: ``headers`` plus its content length, then ``body``."""
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_problem(send: Send, problem: Problem) -> None:
    """Send ``problem`` as problem+json."""
    headers = [(k.encode(), v.encode()) for k, v in problem.response_headers().items()]
    await send_bytes(send, problem.status, headers, problem.body())


async def disconnected(receive: Receive) -> None:
    """Return once the client has gone (ASGI ``http.disconnect``): await it beside a long
    answer (an event stream) to stop when nobody reads it any more."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
