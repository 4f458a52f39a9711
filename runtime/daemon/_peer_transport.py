"""`PeerTransport`: the forwarder's keep-alive HTTP/1.1 connections to other daemons.

An httpx transport (the forwarder keeps httpx's client, requests, responses and
errors) that speaks HTTP/1.1 with h11 over asyncio streams, in place of
httpcore's connection pool. That pool cost the forwarding daemon 0.5-1 ms of
CPU a request (anyio's stream attributes, and a walk of every pooled
connection, with a readability check of each, at each request and response):
several times the step it forwarded. Forwarding is what a daemon does for the
sessions another one holds, so with random routing about half of all requests.

What it does, and no more:

- ``http://`` only; any other scheme goes to httpx's own transport.
- A request takes an idle connection to its peer or opens one: there are no
  more connections than forwarded requests in flight, which the daemon's own
  limit on its connections (``--max-connections``) bounds.
- Idle connections are kept per peer, newest first, at most ``max_idle`` in
  all, and dropped after ``keepalive_expiry`` seconds idle (below the peers'
  own keep-alive timeout, so that a peer closing an idle connection as we
  send on it is rare) or once the peer has closed them.
- Errors are httpx's: ``ConnectError`` / ``ConnectTimeout`` when the
  connection could not be made (nothing was sent), ``WriteError``,
  ``ReadError`` and ``RemoteProtocolError`` after that (the request may
  have been received).
- A response's body is read as the caller iterates it (an event stream is
  relayed as it comes); a connection goes back to the pool only once its
  response was read to the end and closed, else it is closed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import h11
import httpx

__all__ = ["PeerTransport"]

_READ = 65_536


class _Connection:
    """One connection to a peer and its HTTP/1.1 state machine."""

    __slots__ = ("idle_since", "protocol", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0

    def usable(self, now: float, expiry: float) -> bool:
        """Whether an idle connection may carry the next request."""
        return (
            now - self.idle_since < expiry
            and not self.reader.at_eof()
            and not self.writer.is_closing()
        )

    def close(self) -> None:
        self.writer.close()

    async def send(self, request: httpx.Request) -> None:
        protocol = self.protocol
        try:
            data = protocol.send(
                h11.Request(
                    method=request.method,
                    target=request.url.raw_path,
                    headers=request.headers.raw,
                )
            )
            chunks = [data] if data else []
            async for chunk in request.stream:  # type: ignore[union-attr]
                if chunk:
                    chunks.append(protocol.send(h11.Data(data=chunk)) or b"")
            chunks.append(protocol.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc)) from exc
        try:
            self.writer.write(b"".join(chunks))
            await self.writer.drain()
        except OSError as exc:
            raise httpx.WriteError(f"{type(exc).__name__}: {exc}") from exc

    async def next_event(self, closed: str) -> object:
        """The peer's next HTTP event (an ``h11.Event``, or ``h11.PAUSED``), reading from
        the socket as h11 needs.

        Raises:
            httpx.RemoteProtocolError: ``closed`` when the peer closed the connection
                where it should not have, else what h11 found wrong.
            httpx.ReadError: the socket failed.
        """
        protocol = self.protocol
        while True:
            try:
                event = protocol.next_event()
            except h11.RemoteProtocolError as exc:
                ended = protocol.their_state is h11.CLOSED or self.reader.at_eof()
                raise httpx.RemoteProtocolError(closed if ended else str(exc)) from exc
            if event is not h11.NEED_DATA:
                if isinstance(event, h11.ConnectionClosed):
                    raise httpx.RemoteProtocolError(closed)
                return event
            try:
                data = await self.reader.read(_READ)
            except OSError as exc:
                raise httpx.ReadError(f"{type(exc).__name__}: {exc}") from exc
            try:
                protocol.receive_data(data)  # b"": the peer closed its side
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from exc

    async def response_head(self) -> h11.Response:
        while True:
            event = await self.next_event("the peer closed the connection without answering")
            if isinstance(event, h11.Response):
                return event
            if not isinstance(event, h11.InformationalResponse):
                raise httpx.RemoteProtocolError(f"unexpected from the peer: {event!r}")


class _Body(httpx.AsyncByteStream):
    """A response's body, read from its connection as it is iterated."""

    def __init__(self, transport: PeerTransport, key: tuple[str, int], conn: _Connection) -> None:
        self._transport = transport
        self._key = key
        self._conn: _Connection | None = conn
        self._ended = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None or self._ended:
            return
        try:
            while True:
                event = await conn.next_event("the peer closed the connection mid-answer")
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    self._ended = True
                    return
                else:
                    raise httpx.RemoteProtocolError(f"unexpected from the peer: {event!r}")
        except BaseException:  # cut, failed or cancelled: the connection is of no more use
            self._conn = None
            conn.close()
            raise

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        protocol = conn.protocol
        if self._ended and protocol.our_state is h11.DONE and protocol.their_state is h11.DONE:
            protocol.start_next_cycle()
            self._transport._release(self._key, conn)
        else:
            conn.close()


class PeerTransport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 to peer daemons (see the module docstring).

    Args:
        connect_timeout: seconds to open a connection.
        keepalive_expiry: seconds an idle connection is kept.
        max_idle: idle connections kept in all.
    """

    def __init__(
        self,
        *,
        connect_timeout: float,
        keepalive_expiry: float = 2.0,
        max_idle: int = 128,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._expiry = keepalive_expiry
        self._max_idle = max_idle
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._idle_count = 0
        self._other: httpx.AsyncHTTPTransport | None = None
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            if self._other is None:
                self._other = httpx.AsyncHTTPTransport(
                    limits=httpx.Limits(max_connections=512, max_keepalive_connections=128)
                )
            return await self._other.handle_async_request(request)
        if self._closed:
            raise httpx.ConnectError("the forwarder is closed")
        key = (url.host, url.port or 80)
        conn = self._reused(key) or await self._connect(key)
        try:
            await conn.send(request)
            head = await conn.response_head()
        except BaseException:
            conn.close()
            raise
        return httpx.Response(
            head.status_code,
            headers=head.headers.raw_items(),
            stream=_Body(self, key, conn),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
        )

    def _reused(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            self._idle_count -= 1
            if conn.usable(now, self._expiry):
                return conn
            conn.close()
        return None

    async def _connect(self, key: tuple[str, int]) -> _Connection:
        host, port = key
        try:
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(host, port, limit=_READ)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} in time") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        return _Connection(reader, writer)

    def _release(self, key: tuple[str, int], conn: _Connection) -> None:
        if self._closed or self._idle_count >= self._max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(key, []).append(conn)
        self._idle_count += 1

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        self._idle_count = 0
        if self._other is not None:
            await self._other.aclose()
