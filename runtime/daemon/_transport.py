"""uvicorn's httptools protocol, writing each response in one socket send.

uvicorn writes a response's head and its body with two ``transport.write``
calls, and uvloop sends each at once: two system calls, and on loopback two
wake-ups of the client, per response. ``CoalescingHttpToolsProtocol`` hands
uvicorn a transport that gathers the writes made during one turn of the event
loop and sends them together at the end of that turn (``loop.call_soon``), so
head and body leave in one send. Order is kept, and ``close`` sends what is
gathered first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingHttpToolsProtocol", "CoalescingTransport"]


class CoalescingTransport:
    """A transport sending the writes of one event-loop turn in one ``write``.

    Args:
        transport: the connection's real transport.
        loop: the event loop the connection runs on.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        """Gather ``data``; it is sent at the end of this turn of the loop."""
        if not self._pending:
            self._loop.call_soon(self._send)
        self._pending.append(data)

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
