"""The ``--workers`` front: one listening socket, requests relayed as bytes to their shard.

The front owns the client connections (the connection cap, the header and body
timeouts, the body limit, TLS). For each request it reads the line and headers,
then the body (``Content-Length``), picks the worker (runtime/daemon/_sharding.py):

- a path naming a session (``/v1/sessions/{id}...``) or ``POST /v1/execute`` with a
  ``session_id``: the worker that owns that id;
- a create (``POST /v1/sessions``, ``POST /v1/execute`` without an id): the next
  worker round robin (it draws an id of its own shard);
- ``GET /v1/sessions`` and ``GET /metrics``: every worker (runtime/daemon/_shards.py);
- anything else (probes, graphs, the dashboard, the OpenAPI document): worker 0;

and relays the request's bytes over a pooled, kept-alive Unix-socket connection to
that worker, then the answer's bytes back (a streamed answer chunk by chunk, as
it comes). Requests on one connection are served in order (pipelining keeps its
order). A worker that is down (crashed, being restarted) gets no request: the
front answers 503 ``worker-unavailable`` with ``Retry-After``; a request that
reached a worker which died before answering gets 503 ``outcome-unknown`` (a step
may have been committed: the client's idempotency key makes its retry safe), or
``worker-unavailable`` when it only read.

Threads: everything here runs on the parent's event loop.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from runtime.daemon._front_http import (
    EXECUTE_PATH,
    AnswerHead,
    BadHead,
    RequestHead,
    answer_bytes,
    client_line,
    execute_session_id,
    parse_answer_head,
    parse_request_head,
    problem_answer,
    session_in_path,
    with_client,
)
from runtime.daemon._problems import (
    BAD_REQUEST,
    BODY_TOO_LARGE,
    DRAINING,
    HEADERS_TOO_LARGE,
    WORKER_UNAVAILABLE,
    Problem,
    problem_kind,
)
from runtime.daemon._sharding import shard_of
from runtime.daemon._shards import FanOutAnswer, FanOutRequest, wants_fan_out
from runtime.daemon._transport import ConnectionLimits

__all__ = ["Front", "FrontLimits", "Upstream"]

OUTCOME_UNKNOWN = problem_kind("outcome-unknown")
_END = b"\r\n\r\n"
_CHUNK = 64 * 1024
# an answer's head from our own worker: generous, it is not a client
_UPSTREAM_LIMIT = 1024 * 1024
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_log = structlog.get_logger("actorflowd.front")

FanOut = Callable[[FanOutRequest, Sequence[Path]], Awaitable[FanOutAnswer]]
_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True, slots=True)
class FrontLimits:
    """The front's limits: the daemon's connection limits, the body limit, keep-alive."""

    connections: ConnectionLimits
    max_body: int
    keepalive_timeout: float


class _WorkerGone(Exception):
    """The worker's connection failed: after the request was sent (``sent``), or not."""

    def __init__(self, *, sent: bool) -> None:
        super().__init__("the worker's connection failed")
        self.sent = sent


class Upstream:
    """One worker as the front sees it: up or not, and its idle kept-alive connections.

    The parent marks it down when the process exits (its connections are dropped)
    and up once the restarted worker answers ``/readyz``.
    """

    def __init__(self, index: int, socket_path: Path) -> None:
        self.index = index
        self.socket_path = socket_path
        self.up = False
        self._idle: list[_Conn] = []

    async def acquire(self) -> _Conn:
        """An idle connection to the worker, or a new one."""
        while self._idle:
            reader, writer = self._idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        return await asyncio.open_unix_connection(str(self.socket_path), limit=_UPSTREAM_LIMIT)

    def release(self, conn: _Conn) -> None:
        """Keep ``conn`` for the next request (only while the worker is up)."""
        if self.up:
            self._idle.append(conn)
        else:
            conn[1].close()

    def mark_down(self) -> None:
        """The worker is gone: no request goes to it, its connections are closed."""
        self.up = False
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


class Front:
    """Relays every client connection's requests to the workers (``serve`` per connection)."""

    def __init__(self, upstreams: list[Upstream], limits: FrontLimits, fan_out: FanOut) -> None:
        self.upstreams = upstreams
        self.limits = limits
        self._fan_out = fan_out
        self._sockets = [u.socket_path for u in upstreams]
        self._next = itertools.cycle(range(len(upstreams)))
        self._connections: set[asyncio.StreamWriter] = set()
        self._busy: set[asyncio.StreamWriter] = set()
        self.closing = False

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def close_idle(self) -> None:
        """Close every client connection not inside a request (at shutdown)."""
        self.closing = True
        for writer in self._connections - self._busy:
            writer.close()

    def abort_all(self) -> None:
        """Close every client connection now."""
        for writer in self._connections:
            writer.close()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection until it closes, times out or misbehaves."""
        if len(self._connections) >= self.limits.connections.max_connections or self.closing:
            writer.transport.abort()
            return
        self._connections.add(writer)
        try:
            await self._serve(reader, writer, client_line(writer.get_extra_info("peername")))
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            self._connections.discard(writer)
            self._busy.discard(writer)
            writer.close()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: bytes
    ) -> None:
        limits = self.limits.connections
        wait = limits.header_timeout
        while not self.closing:
            try:
                async with asyncio.timeout(wait):
                    raw = await reader.readuntil(_END)
            except asyncio.LimitOverrunError:
                detail = f"the request line and headers exceed {limits.max_header_bytes} bytes"
                writer.write(problem_answer(Problem(HEADERS_TOO_LARGE, detail), close=True))
                return
            self._busy.add(writer)
            if self.closing:
                detail = "the daemon is shutting down; retry on a new connection"
                writer.write(problem_answer(Problem(DRAINING, detail), close=True))
                return
            try:
                head = parse_request_head(raw)
            except BadHead as exc:
                writer.write(problem_answer(Problem(BAD_REQUEST, str(exc)), close=True))
                return
            if head.content_length > self.limits.max_body:
                detail = f"the request body exceeds {self.limits.max_body} bytes"
                writer.write(problem_answer(Problem(BODY_TOO_LARGE, detail), close=True))
                return
            if raw is not head.raw and head.content_length:
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = b""
            if head.content_length:
                async with asyncio.timeout(limits.body_timeout):
                    body = await reader.readexactly(head.content_length)
            keep = await self._answer(head, body, writer, client) and head.keep_alive
            await writer.drain()
            self._busy.discard(writer)
            if not keep:
                return
            wait = self.limits.keepalive_timeout + limits.header_timeout

    def _route(self, head: RequestHead, body: bytes) -> int | None:
        """The worker for ``head`` (None: every worker answers a part)."""
        n = len(self.upstreams)
        session_id = session_in_path(head.path)
        if session_id is not None:
            return shard_of(session_id, n)
        if head.method == "POST" and head.path == EXECUTE_PATH:
            session_id = execute_session_id(body)
            return next(self._next) if session_id is None else shard_of(session_id, n)
        if head.method == "POST" and head.path == b"/v1/sessions":
            return next(self._next)
        if wants_fan_out(head.method, head.target):
            return None
        return 0

    async def _answer(
        self, head: RequestHead, body: bytes, writer: asyncio.StreamWriter, client: bytes
    ) -> bool:
        """Answer one request; whether the client connection may stay open. ``client``
        (``client_line``) names the client's address to the worker."""
        shard = self._route(head, body)
        if shard is None:
            request = FanOutRequest(head.method, head.target, head.headers(), body)
            answer = await self._fan_out(request, self._sockets)
            writer.write(answer_bytes(answer.status, answer.headers, answer.body, close=False))
            return True
        upstream = self.upstreams[shard]
        if not upstream.up:
            detail = f"worker {shard} is restarting; retry shortly"
            writer.write(problem_answer(Problem(WORKER_UNAVAILABLE, detail), close=False))
            return True
        try:
            return await self._relay(upstream, head, with_client(head.raw, client) + body, writer)
        except _WorkerGone as gone:
            _log.warning("worker_lost_request", worker=shard, method=head.method, sent=gone.sent)
            if head.method in _SAFE or not gone.sent:
                problem = Problem(WORKER_UNAVAILABLE, f"worker {shard} stopped; retry shortly")
            else:
                problem = Problem(
                    OUTCOME_UNKNOWN,
                    f"worker {shard} stopped before answering: the request may have been "
                    "applied; retry with the same idempotency key",
                )
            writer.write(problem_answer(problem, close=False))
            return True

    async def _relay(
        self, upstream: Upstream, head: RequestHead, request: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        """Send ``request`` (head and body bytes) to ``upstream``; relay its answer."""
        try:
            up_reader, up_writer = await upstream.acquire()
        except OSError:
            raise _WorkerGone(sent=False) from None
        answered = False
        try:
            up_writer.write(request)
            raw = await up_reader.readuntil(_END)
            answer = parse_answer_head(raw, head.method)
            while 100 <= answer.status < 200:  # an interim answer: the final one follows
                raw = await up_reader.readuntil(_END)
                answer = parse_answer_head(raw, head.method)
            length = answer.content_length
            if length is not None and length <= _CHUNK:
                # the usual answer: head and body in one write (one system call)
                whole = raw + await up_reader.readexactly(length) if length else raw
                answered = True
                writer.write(whole)
            else:
                answered = True
                writer.write(raw)
                await _relay_body(answer, up_reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            up_writer.close()
            if answered:
                return False  # part of the answer went out: only closing can tell the client
            raise _WorkerGone(sent=True) from None
        except BaseException:
            up_writer.close()
            raise
        to_the_end = answer.content_length is None and not answer.chunked
        if answer.closes or to_the_end:
            up_writer.close()
            return False  # the client learns where such an answer ends by the close
        upstream.release((up_reader, up_writer))
        return True


async def _relay_body(
    answer: AnswerHead, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Relay the body framed as ``answer`` says: by length, chunk by chunk, or to the end."""
    if answer.chunked:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)
            writer.write(size_line)
            if size == 0:
                while True:  # trailers, up to the blank line
                    line = await reader.readuntil(b"\r\n")
                    writer.write(line)
                    if line == b"\r\n":
                        return
            writer.write(await reader.readexactly(size + 2))
            await writer.drain()
    if answer.content_length is not None:
        left = answer.content_length
        while left:
            data = await reader.read(min(left, _CHUNK))
            if not data:
                raise asyncio.IncompleteReadError(b"", left)
            writer.write(data)
            left -= len(data)
            if left:
                await writer.drain()
        return
    while data := await reader.read(_CHUNK):
        writer.write(data)
        await writer.drain()
