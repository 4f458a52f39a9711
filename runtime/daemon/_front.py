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
that worker, then the answer's bytes back (a streamed answer piece by piece, as
it comes). Requests on one connection are served in order (pipelining keeps its
order). A worker that is down (crashed, being restarted) gets no request: the
front answers 503 ``worker-unavailable`` with ``Retry-After``; a request that
reached a worker which died before answering gets 503 ``outcome-unknown`` (a step
may have been committed: the client's idempotency key makes its retry safe), or
``worker-unavailable`` when it only read.

Both sides are ``asyncio.Protocol`` callbacks, not streams: a relayed step costs
the four socket calls and a parse of each head, with no coroutine, future or
timeout context per request (py-spy put half the front's CPU there). A client
connection (``_Client``) is a small state machine (reading a head, its body,
waiting for the answer); the worker connection it borrows (``_WorkerConn``)
hands it the answer's bytes as they arrive. Each connection's timeouts are one
deadline checked by one timer that re-arms itself, not a timer per request.

Threads: everything here runs on the parent's event loop.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import structlog

from runtime.daemon._chunked import ChunkedEnd
from runtime.daemon._front_http import (
    EXECUTE_PATH,
    READYZ_PATH,
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
# an answer whose body is at most this is sent to the client in one write with its head
_WHOLE = 64 * 1024
# an answer's head from our own worker: generous, it is not a client
_UPSTREAM_LIMIT = 1024 * 1024
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_log = structlog.get_logger("actorflowd.front")

FanOut = Callable[[FanOutRequest, Sequence[Path]], Awaitable[FanOutAnswer]]


@dataclass(frozen=True, slots=True)
class FrontLimits:
    """The front's limits: the daemon's connection limits, the body limit, keep-alive."""

    connections: ConnectionLimits
    max_body: int
    keepalive_timeout: float


class Upstream:
    """One worker as the front sees it: up or not, and its idle kept-alive connections.

    The parent marks it down when the process exits (its connections are dropped)
    and up once the restarted worker answers ``/readyz``.
    """

    def __init__(self, index: int, socket_path: Path) -> None:
        self.index = index
        self.socket_path = socket_path
        self.up = False
        self._idle: list[_WorkerConn] = []

    def take_idle(self) -> _WorkerConn | None:
        """An idle connection to the worker, if one is open."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.lost:
                return conn
        return None

    async def connect(self) -> _WorkerConn:
        """A new connection to the worker (raises OSError when it is not listening)."""
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_unix_connection(
            lambda: _WorkerConn(self), str(self.socket_path)
        )
        return conn

    def release(self, conn: _WorkerConn) -> None:
        """Keep ``conn`` for the next request (only while the worker is up)."""
        if self.up and not conn.lost:
            self._idle.append(conn)
        else:
            conn.close()

    def forget(self, conn: _WorkerConn) -> None:
        """``conn`` closed: it is no longer idle."""
        if conn in self._idle:
            self._idle.remove(conn)

    def mark_down(self) -> None:
        """The worker is gone: no request goes to it, its connections are closed."""
        self.up = False
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _WorkerConn(asyncio.Protocol):
    """One Unix-socket connection to a worker; while lent, its bytes go to ``client``."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.client: _Client | None = None
        self.lost = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's: not a subclass

    def data_received(self, data: bytes) -> None:
        if self.client is None:
            self.close()  # a worker speaking out of turn: the connection cannot be trusted
        else:
            self.client.answer_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.upstream.forget(self)
        client, self.client = self.client, None
        if client is not None:
            client.worker_lost()

    def send(self, client: _Client, data: bytes) -> None:
        self.client = client
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        self.client = None
        if self.transport is not None:
            self.transport.close()


class _Phase(enum.Enum):
    HEAD = "head"  # waiting for a request's line and headers
    BODY = "body"  # the head is in, waiting for the body
    ANSWER = "answer"  # the request went to a worker (or the fan-out): its answer is due
    DONE = "done"  # the connection is closing


class Front:
    """Relays every client connection's requests to the workers.

    ``loop.create_server(front.protocol, ...)`` serves the listening socket.
    """

    def __init__(self, upstreams: list[Upstream], limits: FrontLimits, fan_out: FanOut) -> None:
        self.upstreams = upstreams
        self.limits = limits
        self.fan_out = fan_out
        self.sockets = [u.socket_path for u in upstreams]
        self._next = itertools.cycle(range(len(upstreams)))
        self.connections: set[_Client] = set()
        self.closing = False
        self.unready = False
        """A SIGTERM's drain delay began: the front answers ``/readyz`` 503 itself."""
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def open_connections(self) -> int:
        return len(self.connections)

    def protocol(self) -> asyncio.Protocol:
        """A new client connection's protocol."""
        return _Client(self)

    def close_idle(self) -> None:
        """Close every client connection not inside a request (at shutdown)."""
        self.closing = True
        for client in list(self.connections):
            if client.phase is _Phase.HEAD:
                client.close()

    def abort_all(self) -> None:
        """Close every client connection now."""
        for client in list(self.connections):
            client.close()

    def spawn(self, work: Awaitable[None]) -> None:
        """Run ``work`` (a connect or a fan-out) as a task the front keeps until it ends."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def route(self, head: RequestHead, body: bytes) -> int | None:
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


class _Client(asyncio.Protocol):
    """One client connection: its requests read, relayed and answered one at a time."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.phase = _Phase.HEAD
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._client = b""
        self._buffer = bytearray()
        self._scanned = 0  # the head's end is not in the buffer's first bytes
        self._eof = False
        self._tls = False
        self._paused = False  # reading from the client is paused (pipelined far ahead)
        self._write_paused = False  # the client reads its answers slower than they come
        self._head: RequestHead | None = None
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        # the answer being relayed
        self._shard = 0
        self._worker: _WorkerConn | None = None
        self._answer_buffer = bytearray()
        self._answer: AnswerHead | None = None
        self._answer_head = b""
        self._left = 0  # body bytes still due (an answer framed by Content-Length)
        self._chunks: ChunkedEnd | None = None
        self._answered = False  # some of the answer went to the client

    # -- the client's side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast("asyncio.Transport", transport)  # uvloop's: not a subclass
        front = self.front
        if len(front.connections) >= front.limits.connections.max_connections or front.closing:
            self.phase = _Phase.DONE
            transport.abort()
            return
        self._transport = transport
        front.connections.add(self)
        self._client = client_line(transport.get_extra_info("peername"))
        self._tls = transport.get_extra_info("sslcontext") is not None
        self._expire_in(front.limits.connections.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.connections.discard(self)
        self.phase = _Phase.DONE
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        worker = self._worker
        if worker is not None and (self._answered or self._head_is_safe()):
            # nobody reads the rest (a step's answer still completes on its own)
            self._worker = None
            worker.close()

    def eof_received(self) -> bool:
        self._eof = True
        if self.phase is _Phase.HEAD or self.phase is _Phase.BODY:
            self._read_requests()  # closes unless a whole request is buffered
        return not self._tls  # an answer due may still go out (TLS cannot half-close)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self.phase is _Phase.HEAD or self.phase is _Phase.BODY:
            self._read_requests()
        if (
            not self._paused
            and self.phase is not _Phase.DONE
            and len(self._buffer) > self.front.limits.max_body + _UPSTREAM_LIMIT
        ):
            assert self._transport is not None
            self._paused = True
            self._transport.pause_reading()  # pipelined far ahead: wait for the answers

    def pause_writing(self) -> None:
        """The client's send buffer is full: stop reading the answer (and requests)."""
        self._write_paused = True
        _pause(self._worker, pause=True)

    def resume_writing(self) -> None:
        self._write_paused = False
        _pause(self._worker, pause=False)
        if self.phase is _Phase.HEAD:
            self._resume_requests()

    def close(self) -> None:
        self.phase = _Phase.DONE
        if self._transport is not None:
            self._transport.close()

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _refuse(self, problem: Problem) -> None:
        self._write(problem_answer(problem, close=True))
        self.close()

    def _head_is_safe(self) -> bool:
        return self._head is not None and self._head.method in _SAFE

    # -- timeouts: one deadline per connection, one self-re-arming timer

    def _expire_in(self, seconds: float) -> None:
        deadline = self._deadline = self._loop.time() + seconds
        timer = self._timer
        if timer is not None and timer.when() > deadline:  # an earlier deadline: re-arm
            timer.cancel()
            timer = None
        if timer is None:
            self._timer = self._loop.call_at(deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        self._timer = None
        if self._deadline is None or self.phase is _Phase.DONE:
            return
        if self._loop.time() >= self._deadline:
            # the head or body came too slowly, or the connection idled (or did not
            # read its answers): abort, since a close would wait for them to be read
            self.phase = _Phase.DONE
            if self._transport is not None:
                self._transport.abort()
        else:
            self._timer = self._loop.call_at(self._deadline, self._check_deadline)

    # -- reading requests

    def _read_requests(self) -> None:
        """Take the next request from the buffer if it is all there; relay it."""
        limits = self.front.limits
        if self.phase is _Phase.HEAD:
            if not self._buffer:
                if self._eof:
                    self.close()
                return
            if self._write_paused:
                return  # the client is not reading its answers: no more requests yet
            # a head arriving in pieces is searched once, not from its start each time
            end = self._buffer.find(_END, self._scanned)
            max_head = limits.connections.max_header_bytes
            if end < 0 and len(self._buffer) <= max_head:
                if self._eof:
                    self.close()  # the client stopped sending halfway through a head
                else:
                    self._scanned = max(0, len(self._buffer) - 3)
                return
            self._scanned = 0
            if end < 0 or end + 4 > max_head:
                detail = f"the request line and headers exceed {max_head} bytes"
                self._refuse(Problem(HEADERS_TOO_LARGE, detail))
                return
            if self.front.closing:
                detail = "the daemon is shutting down; retry on a new connection"
                self._refuse(Problem(DRAINING, detail))
                return
            raw = bytes(self._buffer[: end + 4])
            del self._buffer[: end + 4]
            try:
                head = parse_request_head(raw)
            except BadHead as exc:
                self._refuse(Problem(BAD_REQUEST, str(exc)))
                return
            if head.content_length > limits.max_body:
                detail = f"the request body exceeds {limits.max_body} bytes"
                self._refuse(Problem(BODY_TOO_LARGE, detail))
                return
            self._head = head
            self.phase = _Phase.BODY
            if len(self._buffer) < head.content_length:
                if head.expects_continue:
                    self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self._expire_in(limits.connections.body_timeout)
        request = self._head
        assert request is not None
        if len(self._buffer) < request.content_length:
            if self._eof:
                self.close()
            return
        body = bytes(self._buffer[: request.content_length])
        del self._buffer[: request.content_length]
        self._deadline = None
        self.phase = _Phase.ANSWER
        self._dispatch(request, body)

    def _dispatch(self, head: RequestHead, body: bytes) -> None:
        if self.front.unready and head.path == READYZ_PATH:
            detail = "the daemon is about to shut down (still serving)"
            self._write(problem_answer(Problem(DRAINING, detail), close=False))
            self._loop.call_soon(self._answered_now)
            return
        shard = self.front.route(head, body)
        if shard is None:
            self.front.spawn(
                self._fan_out(FanOutRequest(head.method, head.target, head.headers(), body))
            )
            return
        upstream = self.front.upstreams[shard]
        if not upstream.up:
            detail = f"worker {shard} is restarting; retry shortly"
            self._write(problem_answer(Problem(WORKER_UNAVAILABLE, detail), close=False))
            # on the next turn: a pipelined run of such requests must not recurse
            self._loop.call_soon(self._answered_now)
            return
        self._shard = shard
        self._answer_buffer.clear()
        self._answer = None
        self._answered = False
        request = with_client(head.raw, self._client) + body
        worker = upstream.take_idle()
        if worker is None:
            self.front.spawn(self._connect_and_send(upstream, request))
        else:
            self._lend(worker, request)

    def _lend(self, worker: _WorkerConn, request: bytes) -> None:
        """Send ``request`` on ``worker``, whose bytes come to this connection until its
        answer ends."""
        self._worker = worker
        worker.send(self, request)
        if self._write_paused:
            _pause(worker, pause=True)

    async def _connect_and_send(self, upstream: Upstream, request: bytes) -> None:
        try:
            worker = await upstream.connect()
        except OSError:
            self._worker_gone(sent=False)
            return
        if self.phase is not _Phase.ANSWER:  # the client left meanwhile: nothing was sent
            upstream.release(worker)
            return
        self._lend(worker, request)

    async def _fan_out(self, request: FanOutRequest) -> None:
        try:
            answer = await self.front.fan_out(request, self.front.sockets)
        except Exception:
            _log.exception("fan_out_failed", target=request.target.decode("latin-1"))
            self.close()
            return
        self._write(answer_bytes(answer.status, answer.headers, answer.body, close=False))
        self._next_request(keep=True)

    def _answered_now(self) -> None:
        self._next_request(keep=True)

    def _next_request(self, *, keep: bool) -> None:
        """The answer went out: read the next request, or close."""
        if self.phase is _Phase.DONE:
            return
        head, self._head = self._head, None
        ended = self._eof and not self._buffer
        if not keep or head is None or not head.keep_alive or self.front.closing or ended:
            self.close()
            return
        self.phase = _Phase.HEAD
        limits = self.front.limits
        self._expire_in(limits.keepalive_timeout + limits.connections.header_timeout)
        if not self._write_paused:
            self._resume_requests()

    def _resume_requests(self) -> None:
        """Read the client's next request (buffered, or from the socket)."""
        if self._paused:
            self._paused = False
            assert self._transport is not None
            self._transport.resume_reading()
        self._read_requests()

    # -- relaying the answer

    def answer_received(self, data: bytes) -> None:
        """Bytes of the answer from the worker."""
        try:
            if self._answer is None:
                self._answer_buffer += data
                if not self._read_answer_head():
                    return
                data = bytes(self._answer_buffer)
                self._answer_buffer.clear()
            self._relay_body(data)
        except ValueError:  # a head or chunk the front cannot frame
            self._worker_failed()

    def _read_answer_head(self) -> bool:
        """Parse the answer's head once it is in (interim 1xx answers are dropped)."""
        assert self._head is not None
        buffer = self._answer_buffer
        while True:
            end = buffer.find(_END)
            if end < 0:
                if len(buffer) > _UPSTREAM_LIMIT:
                    raise ValueError("an overlong answer head")
                return False
            raw = bytes(buffer[: end + 4])
            del buffer[: end + 4]
            answer = parse_answer_head(raw, self._head.method)
            if not 100 <= answer.status < 200:
                break
        self._answer = answer
        self._answer_head = raw
        self._chunks = ChunkedEnd() if answer.chunked else None
        self._left = answer.content_length or 0
        if answer.content_length is None or answer.content_length > _WHOLE:
            self._send_answer(raw)  # a long or streamed answer: its head goes out now
        return True

    def _relay_body(self, data: bytes) -> None:
        answer = self._answer
        assert answer is not None
        if answer.content_length is not None:
            if len(data) < self._left:
                self._left -= len(data)
                if self._answered:
                    self._send_answer(data)
                else:  # a short answer: head and body go out in one write
                    self._answer_head += data
                return
            extra = len(data) > self._left
            data, self._left = data[: self._left], 0
            self._send_answer(self._answer_head + data if not self._answered else data)
            self._answer_done(reuse=not extra)
        elif self._chunks is not None:
            end = self._chunks.feed(data)
            if end is None:
                self._send_answer(data)
                return
            self._send_answer(data[:end])
            self._answer_done(reuse=end == len(data))
        else:
            self._send_answer(data)  # to the end: the worker's close ends it

    def _send_answer(self, data: bytes) -> None:
        self._answered = True
        if data:
            self._write(data)

    def _answer_done(self, *, reuse: bool) -> None:
        answer = self._answer
        worker, self._worker = self._worker, None
        assert answer is not None
        assert worker is not None
        worker.client = None
        if self._write_paused:
            _pause(worker, pause=False)  # paused for this client only
        upstream = self.front.upstreams[self._shard]
        keep = not answer.closes
        if keep and reuse:
            upstream.release(worker)
        else:
            worker.close()
        self._answer = None
        self._next_request(keep=keep)

    def worker_lost(self) -> None:
        """The worker's connection closed before the answer ended."""
        answer = self._answer
        self._worker = None
        if answer is not None and answer.content_length is None and not answer.chunked:
            self._next_request(keep=False)  # an answer that ends with the connection: ended
            return
        self._worker_gone(sent=True)

    def _worker_failed(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.close()
        self._worker_gone(sent=True)

    def _worker_gone(self, *, sent: bool) -> None:
        """The worker's connection failed: after the request was sent (``sent``), or not."""
        if self.phase is not _Phase.ANSWER:
            return
        head = self._head
        assert head is not None
        if self._answered:
            self.close()  # part of the answer went out: only closing can tell the client
            return
        shard = self._shard
        _log.warning("worker_lost_request", worker=shard, method=head.method, sent=sent)
        if head.method in _SAFE or not sent:
            problem = Problem(WORKER_UNAVAILABLE, f"worker {shard} stopped; retry shortly")
        else:
            problem = Problem(
                OUTCOME_UNKNOWN,
                f"worker {shard} stopped before answering: the request may have been "
                "applied; retry with the same idempotency key",
            )
        self._write(problem_answer(problem, close=False))
        self._answer = None
        self._next_request(keep=True)


def _pause(worker: _WorkerConn | None, *, pause: bool) -> None:
    """Stop (or go on) reading ``worker``'s answer: its client's send buffer is full."""
    transport = worker.transport if worker is not None else None
    if transport is None or transport.is_closing():
        return
    if pause:
        transport.pause_reading()
    else:
        transport.resume_reading()
