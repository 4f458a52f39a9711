"""uvicorn's httptools protocol, guarded, writing each response in one socket send.

``GuardedHttpToolsProtocol`` adds the limits uvicorn's httptools protocol lacks
(docs/security.md): the request line plus headers are capped (431 and close as
soon as the cap is passed, before the parser buffers more), a client gets
``header_timeout`` to send them from the moment it connects or starts a
request and ``body_timeout`` for the body (then the connection is closed), and
beyond ``max_connections`` open connections a new one is closed at once (logged,
at most once a second). uvicorn's own ``timeout_keep_alive`` closes idle
keep-alive connections.

uvicorn writes a response's head and its body with two ``transport.write``
calls, and uvloop sends each at once: two system calls, and on loopback two
wake-ups of the client, per response. ``CoalescingHttpToolsProtocol`` hands
uvicorn a transport that gathers a response head and the writes that follow it
in the same turn of the event loop, and sends them together at the end of that
turn (``loop.call_soon``), so head and body leave in one send. A write with
nothing gathered that is not a head (the next chunk of a streamed response: an
SSE frame) is sent at once, not a turn later. Order is kept, and ``close``
sends what is gathered first.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from runtime.daemon._problems import HEADERS_TOO_LARGE, Problem

__all__ = [
    "CoalescingHttpToolsProtocol",
    "CoalescingTransport",
    "ConnectionLimits",
    "GuardedHttpToolsProtocol",
    "guarded_protocol",
]

_log = structlog.get_logger("actorflowd")
_END_OF_HEAD = b"\r\n\r\n"


class CoalescingTransport:
    """A transport sending a response head and what follows it in the same event-loop
    turn in one ``write``.

    Args:
        transport: the connection's real transport.
        loop: the event loop the connection runs on.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        """Gather ``data`` if it is a response head or follows one gathered in this
        turn of the loop (sent at the end of the turn); else send it now."""
        if self._pending:
            self._pending.append(data)
        elif data.startswith(b"HTTP/"):  # a head: its body most often follows this turn
            self._loop.call_soon(self._send)
            self._pending.append(data)
        elif not self._transport.is_closing():  # the peer left: nothing can be sent
            self._transport.write(data)

    def writelines(self, chunks: Any) -> None:
        """Gather each chunk, as ``write`` does."""
        for chunk in chunks:
            self.write(chunk)

    def close(self) -> None:
        """Send what is gathered, then close the connection."""
        self._send()
        self._transport.close()

    def write_eof(self) -> None:
        """Send what is gathered, then half-close the connection."""
        self._send()
        self._transport.write_eof()

    def abort(self) -> None:
        """Drop what is gathered and close the connection at once."""
        self._pending.clear()
        self._transport.abort()

    def _send(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if self._transport.is_closing():
            return  # the peer left: nothing can be sent any more
        self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a ``CoalescingTransport``."""

    def connection_made(  # type: ignore[override]  # uvicorn narrows the argument the same way
        self, transport: asyncio.Transport
    ) -> None:
        """Start the connection on a coalescing wrapper of ``transport``."""
        loop = asyncio.get_running_loop()
        super().connection_made(CoalescingTransport(transport, loop))  # type: ignore[arg-type]  # a duck-typed transport


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Per-connection limits (sizes in bytes, times in seconds)."""

    max_header_bytes: int = 16 * 1024
    max_connections: int = 10_000
    header_timeout: float = 10.0
    body_timeout: float = 60.0


class _RefusalLog:
    """Logs refused connections at most once a second (an attack must not flood the log)."""

    def __init__(self) -> None:
        self.refused = 0
        self._last = 0.0

    def note(self, limit: int) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self._last >= 1.0:
            self._last = now
            _log.warning("connection_limit_reached", max_connections=limit, refused=self.refused)


class GuardedHttpToolsProtocol(CoalescingHttpToolsProtocol):
    """The coalescing protocol with the header cap, the timeouts and the connection cap."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    refusals: ClassVar[_RefusalLog] = _RefusalLog()

    def connection_made(  # type: ignore[override]  # as in the base class
        self, transport: asyncio.Transport
    ) -> None:
        """Refuse the connection past the cap; otherwise start it and its header timer."""
        self._head_bytes = 0
        self._in_head = True
        self._reading = False  # between a request's first byte and its end
        self._timer: asyncio.TimerHandle | None = None
        self._refused = len(self.connections) >= self.limits.max_connections
        if self._refused:
            self.refusals.note(self.limits.max_connections)
            transport.abort()
            return
        super().connection_made(transport)
        self._arm(self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection (nothing was started for a refused one)."""
        self._disarm()
        if not self._refused:
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed the parser, unless the head being read passes ``max_header_bytes``; then
        time the request if it is still incomplete.

        A request that arrives whole (the common case) starts and stops no timer: only
        one left incomplete by this chunk gets one (its head's or its body's).
        """
        if self._in_head:
            end = data.find(_END_OF_HEAD)
            size = len(data) if end < 0 else end + len(_END_OF_HEAD)
            self._head_bytes += size
            if self._head_bytes > self.limits.max_header_bytes:
                self._send_431()
                return
        super().data_received(data)
        # (a chunk of bare line ends starts no request but must not idle for free)
        if self._timer is None and (self._reading or not data.strip()):
            limits = self.limits
            self._arm(limits.header_timeout if self._in_head else limits.body_timeout)

    def on_message_begin(self) -> None:
        """A new request: its head is being read."""
        self._in_head = True
        self._reading = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        """The head is in: its timer stops (the body's starts if the body is incomplete)."""
        self._in_head = False
        self._head_bytes = 0
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The request is in: no timer until the next one starts."""
        self._in_head = True
        self._reading = False
        self._disarm()
        super().on_message_complete()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _send_431(self) -> None:
        limit = self.limits.max_header_bytes
        problem = Problem(HEADERS_TOO_LARGE, f"the request line and headers exceed {limit} bytes")
        body = problem.body()
        head = (
            f"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            f"content-type: {problem.response_headers()['content-type']}\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        self._in_head = False
        self.transport.write(head + body)
        self.transport.close()


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, with ``limits``."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"limits": limits, "refusals": _RefusalLog()},
    )
