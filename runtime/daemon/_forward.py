"""Forwarding: a request for a session live on another daemon is served by that daemon.

In a cluster (a Redis store), each session is live in at most one daemon: the
holder of its lease (docs/cluster.md). ``Forwarder`` sits between the gateway
(so the caller is authenticated first) and the app, and asks the runtime's
``Cluster`` (never Redis itself) who holds a session. For a request naming a
session (``/v1/sessions/{id}`` and its ``/step``, ``/members``, ``/revisions``,
``/messages``, ``/fork``, ``/rollback`` and ``/events``, and ``/v1/execute`` with a
``session_id``):

1. If this daemon holds the lease, or nobody does, the request is served here
   (activating the session takes the lease). Should another daemon win the
   lease meanwhile, the local 503 is held back and step 2 applies.
2. If another daemon holds it, the request is sent to the holder's advertised
   URL over a keep-alive HTTP connection, with the caller's headers
   (``Authorization`` included), the lease epoch it is forwarded under
   (``X-Actorflow-Lease-Epoch``), the time the forwarder gives up on it
   (``X-Actorflow-Deadline``, UNIX seconds) and ``X-Actorflow-Forwarded``: an
   HMAC of those with the cluster's secret (``Cluster.peer_mark``); the holder's
   answer is returned unchanged. An event stream (a streamed step, a tail) is
   relayed frame by frame as the holder sends it; the caller leaving closes the
   holder's side (a step still commits there). A request whose mark verifies is served where
   it lands, never forwarded twice; a step carrying an epoch runs only under
   that grant of the lease and only if it starts before the deadline (else 421,
   nothing run), and while it runs the session cannot be activated here under
   another epoch. Marks that do not verify (a client sending them itself) are
   dropped and the request is routed as any other.
   A holder read from the store routes its session's next requests for up to
   a second (`HOLDER_TRUST`) without another read.
3. If the holder cannot be reached (connection refused), or answers 421, the
   request is sent again, after a new read of the store (or served here once
   the holder's lease has expired). A holder shutting down answers 503
   ``draining`` (nothing run): the request waits until that daemon has
   released the lease (once its steps in flight are done), then is served by
   the new holder, here or elsewhere.
   If the holder got the request but stops answering while its lease lapses (a
   paused or dead process), or does not answer within the forwarding timeout
   (alive but slow), a step is not run again (it may have been applied): the
   forwarder first fences the holder's epoch off in Redis, so that the step can
   never be committed from then on, then answers 503 ``outcome-unknown``.
"""

from __future__ import annotations

import asyncio
import enum
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import httpx
import msgspec
import structlog
from litestar.types import ASGIApp, Receive, Scope, Send

from runtime._cluster import Cluster, Holder
from runtime.daemon._gateway import request_info
from runtime.daemon._http import disconnected, read_body, replayer, send_problem
from runtime.daemon._peer_transport import PeerTransport
from runtime.daemon._problems import (
    DRAINING,
    MISDIRECTED,
    STORE_UNAVAILABLE,
    Problem,
    problem_kind,
)
from runtime.errors import PROBLEM_TYPE_PREFIX, StoreUnavailable

__all__ = [
    "DEADLINE_HEADER",
    "EPOCH_HEADER",
    "FORWARDED_HEADER",
    "MISDIRECTED",
    "OUTCOME_UNKNOWN",
    "Forwarder",
    "forwarder_for",
]

FORWARDED_HEADER = "x-actorflow-forwarded"
EPOCH_HEADER = "x-actorflow-lease-epoch"
DEADLINE_HEADER = "x-actorflow-deadline"
MAX_ATTEMPTS = 3
CONNECT_TIMEOUT = 1.0
HOLDER_TRUST = 1.0
"""Seconds a holder read from the store routes its session's next requests without
another read (at most half of what its lease had left). A holder that has lost the
lease since refuses the request (421, nothing run) or cannot be reached, and the next
attempt reads the store again."""
HOLDERS_KEPT = 10_000
"""Holders remembered at most (the oldest read is forgotten first)."""
_MARKS = (FORWARDED_HEADER.encode(), EPOCH_HEADER.encode(), DEADLINE_HEADER.encode())
# what httpx's own transport (an https:// peer) reads; PeerTransport has its own connect timeout
_TIMEOUTS = httpx.Timeout(None, connect=CONNECT_TIMEOUT).as_dict()

OUTCOME_UNKNOWN = problem_kind("outcome-unknown")
"""The holder got the step and stopped answering: it may have been committed before it
stopped, and it can never be committed after this answer."""
_DRAINING_TYPE = PROBLEM_TYPE_PREFIX + DRAINING.slug
"""A holder's 503 of this type was sent before anything ran (it is shutting down)."""

# every route naming one session
_SESSION_PATH = re.compile(
    r"^/v1/sessions/([^/]+)"
    r"(?:/step|/members(?:/[^/]+)?|/revisions|/messages|/fork|/rollback|/events)?/?$"
)
_EVENT_STREAM = b"text/event-stream"
# a streamed step's last event: once relayed, a cut connection leaves no doubt
_STEP_ENDS = (b"\nevent: committed\n", b"\nevent: error\n")
_MARKER_TAIL = 32
_EXECUTE_PATH = "/v1/execute"
_REQUEST_ID = b"x-request-id"
# A request the holder received but did not answer is served again elsewhere only if
# repeating it is harmless; a step might have been applied.
_SAFE_TO_REPEAT = frozenset({"GET", "HEAD", "DELETE"})
# Transport errors raised before any byte of the request reached the holder.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol)
# Hop-by-hop headers (RFC 9110 7.6.1), those httpx sets itself, and our own marks.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        _REQUEST_ID,
        FORWARDED_HEADER.encode(),
        EPOCH_HEADER.encode(),
        DEADLINE_HEADER.encode(),
    }
)
_log = structlog.get_logger("actorflowd.forward")

# ASGI, loosely typed: litestar's TypedDicts are exact per event and scope type
_Scope = dict[str, Any]
_Message = dict[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_App = Callable[[_Scope, _Receive, _Send], Awaitable[None]]


class _SessionRef(msgspec.Struct):
    session_id: str | None = None


_decode_session_ref = msgspec.json.Decoder(_SessionRef).decode


class _Outcome(enum.Enum):
    """What became of a forwarded request."""

    RELAYED = "the holder's answer was relayed"
    NOT_DELIVERED = "the holder never got it (it may be served elsewhere)"
    IMPOSSIBLE = "this daemon cannot send it to the holder (nothing was sent)"
    NOT_RUN = "the holder refused it (421): it was not run"
    DRAINING = "the holder is shutting down (503 draining): it was not run"
    UNKNOWN = "the holder got it but did not answer (it may have been applied)"
    TIMED_OUT = "the holder got it and did not answer within the forwarding timeout"


@dataclass(slots=True)
class _Captured:
    """A local response held back because it was a 503."""

    messages: list[_Message]


class Forwarder:
    """ASGI middleware routing session requests to the daemon holding the session's lease.

    Args:
        app: the daemon's app.
        cluster: the runtime's cluster membership.
        max_body: the daemon's request body limit (bodies beyond it are not forwarded).
        timeout: the most seconds a request routed to another daemon takes in all
            (every attempt, and the wait for a dead holder's lease to expire).
        transport: the httpx transport to forward through (a `PeerTransport`, made on
            first use, when None).
        on_forward: called for each request sent on to another daemon (a counter).
    """

    def __init__(
        self,
        app: ASGIApp,
        cluster: Cluster,
        *,
        max_body: int,
        timeout: float = 300.0,
        transport: httpx.AsyncBaseTransport | None = None,
        on_forward: Callable[[], None] | None = None,
    ) -> None:
        self.app = cast(_App, app)
        self.cluster = cluster
        self.max_body = max_body
        self.timeout = timeout
        self._transport = transport
        self._on_forward = on_forward
        # session id -> (its holder, until when it is trusted): read on the server loop only
        self._holders: dict[str, tuple[Holder, float]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handle(cast(_Scope, scope), cast(_Receive, receive), cast(_Send, send))

    async def _handle(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        match = _SESSION_PATH.match(path)
        if match is None and not (path == _EXECUTE_PATH and scope["method"] == "POST"):
            await self.app(scope, receive, send)
            return
        body, complete = await read_body(scope, receive, self.max_body)
        replay = replayer(body, complete, receive)
        if not complete:
            await self.app(scope, replay, send)  # too large: the app answers 413
            return
        session_id = match.group(1) if match is not None else _execute_session(body)
        forwarded = await self._from_peer(scope)
        if session_id is None:
            await self.app(scope, replay, send)
        elif forwarded:
            await self._serve_forwarded(scope, replay, send, session_id)
        else:
            await self._route(scope, body, receive, send, session_id)

    async def _from_peer(self, scope: _Scope) -> bool:
        """Whether the request carries a verified forwarded mark; marks that do not verify
        (a client sending them itself) are dropped from ``scope``."""
        marks = {k.lower(): bytes(v) for k, v in scope["headers"] if k.lower() in _MARKS}
        if not marks:
            return False
        mark = marks.get(_MARKS[0])
        if mark is not None and await self.cluster.is_peer_mark(
            mark, *_signed_fields(scope, marks.get(_MARKS[1]), marks.get(_MARKS[2]))
        ):
            return True
        _log.warning(
            "forwarding_marks_dropped",
            request_id=request_info(scope).request_id,
            reason="not signed by a daemon of this cluster",
        )
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() not in _MARKS]
        return False

    async def aclose(self) -> None:
        """Close the keep-alive connections to other daemons and to Redis."""
        if self._transport is not None:
            await self._transport.aclose()
            self._transport = None
        await self.cluster.aclose()

    async def _serve_forwarded(
        self, scope: _Scope, receive: _Receive, send: _Send, session_id: str
    ) -> None:
        """Serve a request another daemon forwarded here, under the epoch it names."""
        epoch = _number(_header(scope, EPOCH_HEADER.encode()))
        if epoch is None or scope["method"] in _SAFE_TO_REPEAT:
            # bound to no epoch, or harmless to run under any: served where it lands
            await self.app(scope, receive, send)
            return
        deadline = _number(_header(scope, DEADLINE_HEADER.encode()))
        late = deadline is not None and time.time() > deadline
        if late or not self.cluster.bind(session_id, int(epoch)):
            why = (
                "it arrived after its deadline"
                if late
                else f"this daemon no longer holds lease epoch {int(epoch)} of the session"
            )
            _log.warning(
                "forwarded_request_refused",
                request_id=request_info(scope).request_id,
                session_id=session_id,
                epoch=int(epoch),
                reason=why,
            )
            detail = f"request forwarded under lease epoch {int(epoch)} not run: {why}"
            await send_problem(send, Problem(MISDIRECTED, detail, session_id=session_id))
            return
        try:
            with self.cluster.accepted_under(int(epoch), deadline):
                await self.app(scope, receive, send)
        finally:
            self.cluster.unbind(session_id)

    async def _route(
        self, scope: _Scope, body: bytes, receive: _Receive, send: _Send, session_id: str
    ) -> None:
        give_up = time.monotonic() + self.timeout
        refusal: str | None = None
        for _ in range(MAX_ATTEMPTS):
            holder = await self._holder_elsewhere(session_id)
            if holder is None:
                captured = await self._serve_here(scope, replayer(body, True, receive), send)
                if captured is None:
                    return
                # asked of Redis: this node may believe it holds a lease it lost
                holder = await self._holder_elsewhere(session_id, trust_local=False)
                if holder is None:
                    for message in captured.messages:
                        await send(message)
                    return
            outcome, refusal = await self._forward(scope, body, receive, send, holder, give_up)
            if outcome is _Outcome.RELAYED:
                return
            self._holders.pop(session_id, None)  # the next attempt reads the store again
            if outcome is _Outcome.TIMED_OUT:
                await send_problem(send, await self._timed_out(holder, scope["method"]))
                return
            if outcome is _Outcome.IMPOSSIBLE:
                # at once: waiting for a healthy holder's lease to lapse would only make
                # the caller wait out the forwarding timeout for the same answer
                detail = (
                    f"session {session_id!r} is live on another daemon (node "
                    f"{holder.node_id!r}), and this daemon cannot forward to it: {refusal}; "
                    "the request was not run; retry"
                )
                await send_problem(send, Problem(STORE_UNAVAILABLE, detail, session_id=session_id))
                return
            if outcome is not _Outcome.NOT_RUN:  # the lease moved, the holder is late,
                # or it is shutting down: its leases go once its steps in flight are done
                await self._wait_until_lapsed(holder, give_up)
            if outcome is _Outcome.UNKNOWN and scope["method"] not in _SAFE_TO_REPEAT:
                await send_problem(send, await self._unknown(holder))
                return
            if time.monotonic() >= give_up:
                break
        await send_problem(send, self._not_served(session_id, refusal, give_up))

    def _not_served(self, session_id: str, refusal: str | None, give_up: float) -> Problem:
        """The 503 after every attempt failed without the request reaching a task."""
        where = f"session {session_id!r} is live on another daemon"
        if refusal is not None:
            why = f"which refused it ({refusal})"
        elif time.monotonic() >= give_up:
            why = f"which could not be reached within the forwarding timeout ({self.timeout:g} s)"
        else:
            why = f"which could not be reached after {MAX_ATTEMPTS} attempts"
        return Problem(
            STORE_UNAVAILABLE,
            f"{where}, {why}; the request was not run; retry",
            session_id=session_id,
        )

    async def _timed_out(self, holder: Holder, method: str) -> Problem:
        """The answer once an alive holder kept a request past the forwarding timeout."""
        _log.warning(
            "forward_timed_out",
            session_id=holder.name,
            node_id=holder.node_id,
            timeout=self.timeout,
        )
        if method not in _SAFE_TO_REPEAT:
            return await self._unknown(holder)
        detail = (
            f"the daemon holding session {holder.name!r} (node {holder.node_id!r}) did not "
            f"answer within the forwarding timeout ({self.timeout:g} s); retry"
        )
        return Problem(STORE_UNAVAILABLE, detail, session_id=holder.name)

    async def _unknown(self, holder: Holder) -> Problem:
        """Fence ``holder``'s epoch off, then say the outcome is unknown (and will stay so)."""
        session_id = holder.name
        where = f"the daemon holding session {session_id!r} (node {holder.node_id!r})"
        try:
            await self.cluster.fence_off(holder)
        except StoreUnavailable as exc:
            _log.warning("fence_off_failed", session_id=session_id, error=str(exc))
            detail = (
                f"{where} did not answer this step in time, and Redis could "
                f"not be reached to fence it off ({exc}): the step may have been applied, "
                "and may still be; read the session before retrying"
            )
            return Problem(STORE_UNAVAILABLE, detail, session_id=session_id)
        _log.info(
            "holder_fenced_off",
            session_id=session_id,
            node_id=holder.node_id,
            epoch=holder.epoch,
        )
        detail = (
            f"{where} did not answer this step in time, so its outcome is "
            "unknown: it may have been committed before the holder stopped, and it can no "
            f"longer be committed (lease epoch {holder.epoch} is fenced off); read the "
            "session to find out before retrying; the session is served elsewhere now"
        )
        return Problem(OUTCOME_UNKNOWN, detail, session_id=session_id)

    async def _holder_elsewhere(
        self, session_id: str, *, trust_local: bool = True
    ) -> Holder | None:
        """The other node holding the session's lease, or None (this node, or nobody).

        With ``trust_local``, a holder read in the last `HOLDER_TRUST` seconds is taken
        as it was read.
        """
        if trust_local:
            if self.cluster.holds(session_id):
                return None
            known = self._holders.get(session_id)
            if known is not None and known[1] > time.monotonic():
                return known[0]
        try:
            holder = await self.cluster.holder_of(session_id)
        except StoreUnavailable:
            return None  # served here, where the request fails with the store's 503
        if holder is None or holder.node_id == self.cluster.node_id:
            self._holders.pop(session_id, None)
            return None
        self._remember(holder)
        return holder

    def _remember(self, holder: Holder) -> None:
        """Route ``holder``'s session to it for a while without reading the store."""
        trust = min(HOLDER_TRUST, holder.expires_in / 2)
        holders = self._holders
        holders.pop(holder.name, None)
        if trust <= 0:
            return
        if len(holders) >= HOLDERS_KEPT:
            del holders[next(iter(holders))]
        holders[holder.name] = (holder, time.monotonic() + trust)

    async def _serve_here(self, scope: _Scope, receive: _Receive, send: _Send) -> _Captured | None:
        """Run the app; a 503 answer is held back (returned) instead of sent."""
        captured: _Captured | None = None

        async def send_unless_503(message: _Message) -> None:
            nonlocal captured
            if message["type"] == "http.response.start" and message["status"] == 503:
                captured = _Captured([])
            if captured is not None:
                captured.messages.append(message)
            else:
                await send(message)

        await self.app(scope, receive, send_unless_503)
        return captured

    async def _forward(
        self,
        scope: _Scope,
        body: bytes,
        receive: _Receive,
        send: _Send,
        holder: Holder,
        give_up: float,
    ) -> tuple[_Outcome, str | None]:
        """Send the request to ``holder`` and relay its answer; what became of it (and, for a
        421, the holder's reason)."""
        if not holder.advertise:
            _log.warning(
                "forward_impossible",
                session_id=holder.name,
                node_id=holder.node_id,
                reason="the holder advertises no URL (start it with --advertise)",
            )
            return _Outcome.IMPOSSIBLE, "it advertises no URL (start it with --advertise)"
        transport = self._peers()
        info = request_info(scope)
        deadline = time.time() + max(0.0, give_up - time.monotonic())
        try:
            headers = await self._forward_headers(scope, info.request_id, holder.epoch, deadline)
        except StoreUnavailable as exc:
            _log.warning("forward_impossible", session_id=holder.name, reason=str(exc))
            return _Outcome.IMPOSSIBLE, str(exc)
        # A bare request, not an httpx client's: no cookie jar (a Set-Cookie from one
        # holder's answer would ride along every later forwarded request, whoever made
        # it), no default headers (an Accept-Encoding the caller did not send), no
        # redirects or auth; and 50-60 us less per forwarded request.
        request = httpx.Request(
            scope["method"],
            _target_url(holder.advertise, scope),
            headers=headers,
            content=body,
            extensions={"timeout": _TIMEOUTS},
        )
        info.session_id = holder.name
        if self._on_forward is not None:
            self._on_forward()
        sending = asyncio.ensure_future(transport.handle_async_request(request))
        try:
            while True:
                left = give_up - time.monotonic()
                wait = min(self.cluster.renew_interval, left)
                done, _ = await asyncio.wait({sending}, timeout=max(0.0, wait))
                if done:
                    break
                if left <= wait:
                    return _Outcome.TIMED_OUT, None
                if not await self._still_holds(holder):
                    _log.warning(
                        "forward_abandoned",
                        request_id=info.request_id,
                        session_id=holder.name,
                        node_id=holder.node_id,
                        reason="the holder's lease lapsed while it did not answer",
                    )
                    return _Outcome.UNKNOWN, None
            response = sending.result()
        except httpx.TransportError as exc:
            delivered = not isinstance(exc, _NOT_SENT)
            _log.warning(
                "holder_unreachable",
                request_id=info.request_id,
                session_id=holder.name,
                node_id=holder.node_id,
                advertise=holder.advertise,
                error=f"{type(exc).__name__}: {exc}",
                request_delivered=delivered,
            )
            return (_Outcome.UNKNOWN if delivered else _Outcome.NOT_DELIVERED), None
        finally:
            if not sending.done():
                sending.cancel()
        if response.status_code == 200 and _EVENT_STREAM in (
            response.headers.get("content-type", "").encode("latin-1").lower()
        ):
            await self._relay_events(scope, receive, send, response, holder)
            return _Outcome.RELAYED, None
        try:
            content = b"".join([chunk async for chunk in response.aiter_raw()])
        except httpx.TransportError as exc:
            _log.warning("holder_answer_cut", session_id=holder.name, error=str(exc))
            return _Outcome.UNKNOWN, None
        finally:
            await response.aclose()
        if response.status_code in (MISDIRECTED.status, DRAINING.status):
            kind, detail = _problem_of(content)
            if response.status_code == MISDIRECTED.status:
                return _Outcome.NOT_RUN, f"421: {detail}"
            if kind == _DRAINING_TYPE:
                return _Outcome.DRAINING, f"503 draining: {detail}"
        # the gateway adds this request's id itself (the holder answered with the same)
        headers = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP]
        headers.append((b"content-length", str(len(content)).encode()))
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        await send({"type": "http.response.body", "body": content, "more_body": False})
        return _Outcome.RELAYED, None

    async def _relay_events(
        self,
        scope: _Scope,
        receive: _Receive,
        send: _Send,
        response: httpx.Response,
        holder: Holder,
    ) -> None:
        """Relay an event stream (a streamed step, a session's tail) frame by frame as the
        holder sends it, until it ends, the caller leaves (the holder's side is closed;
        a step goes on there and commits) or the holder stops answering.

        A holder that dies or pauses mid-stream (its connection cut, or its lease lapsed
        while it sent nothing) ends a tail's relay; a step's ends with an ``error`` event
        whose data is the ``outcome-unknown`` problem (the holder's epoch fenced off first,
        as for a plain step: the response has started, so no status can say it).
        """
        headers = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        gone = asyncio.ensure_future(disconnected(receive))
        chunks = response.aiter_raw().__aiter__()
        cut: str | None = None
        ended = False  # a step's last event (committed or error) relayed already
        recent = b""  # the end of the previous chunk: a marker may straddle two
        try:
            while cut is None:
                ahead = asyncio.ensure_future(anext(chunks))
                while not ahead.done() and not gone.done():
                    await asyncio.wait(
                        {ahead, gone},
                        timeout=self.cluster.renew_interval,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if not ahead.done() and not await self._still_holds(holder):
                        cut = "the holder's lease lapsed while it sent nothing"
                        break
                if gone.done() or cut is not None:
                    ahead.cancel()
                    break
                try:
                    chunk = ahead.result()
                except StopAsyncIteration:
                    break
                except httpx.TransportError as exc:
                    cut = f"{type(exc).__name__}: {exc}"
                    break
                seen = recent + chunk
                ended = ended or any(marker in seen for marker in _STEP_ENDS)
                recent = seen[-_MARKER_TAIL:]
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if gone.done():
                return
            if cut is not None:
                _log.warning(
                    "holder_stream_cut",
                    request_id=request_info(scope).request_id,
                    session_id=holder.name,
                    node_id=holder.node_id,
                    reason=cut,
                )
                if scope["method"] not in _SAFE_TO_REPEAT and not ended:
                    # (cut after its committed or error event: the outcome is known)
                    problem = await self._unknown(holder)
                    frame = b"event: error\ndata: %s\n\n" % problem.body()
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            gone.cancel()
            await response.aclose()

    async def _forward_headers(
        self, scope: _Scope, request_id: str, epoch: int, deadline: float
    ) -> list[tuple[bytes, bytes]]:
        """The caller's headers (credentials included), this request's id, the lease epoch it
        is forwarded under, its deadline, and the mark signing them (the forwarded mark).

        Raises:
            StoreUnavailable: the cluster's secret could not be read from Redis.
        """
        epoch_text = str(epoch).encode()
        deadline_text = f"{deadline:.3f}".encode()
        mark = await self.cluster.peer_mark(*_signed_fields(scope, epoch_text, deadline_text))
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP_BY_HOP]
        headers.append((_REQUEST_ID, request_id.encode()))
        headers.append((FORWARDED_HEADER.encode(), mark))
        headers.append((EPOCH_HEADER.encode(), epoch_text))
        headers.append((DEADLINE_HEADER.encode(), deadline_text))
        return headers

    async def _still_holds(self, holder: Holder) -> bool:
        try:
            current = await self.cluster.holder_of(holder.name)
        except StoreUnavailable:
            return True  # cannot tell: keep waiting for the answer
        return current is not None and (current.node_id, current.epoch) == (
            holder.node_id,
            holder.epoch,
        )

    async def _wait_until_lapsed(self, holder: Holder, give_up: float) -> None:
        """Wait (at most one lease ttl and a bit, and never past ``give_up``) until ``holder``
        no longer holds the lease."""
        interval = self.cluster.renew_interval
        deadline = min(time.monotonic() + holder.expires_in + interval, give_up)
        poll = min(0.05, interval)
        while time.monotonic() < deadline:
            if not await self._still_holds(holder):
                _log.info(
                    "lease_lapsed",
                    session_id=holder.name,
                    node_id=holder.node_id,
                    epoch=holder.epoch,
                    action="serving here",
                )
                return
            await asyncio.sleep(poll)  # waiting for a lease in Redis to expire: no event to await

    def _peers(self) -> httpx.AsyncBaseTransport:
        if self._transport is None:
            self._transport = PeerTransport(connect_timeout=CONNECT_TIMEOUT)
        return self._transport


def forwarder_for(
    app: ASGIApp,
    cluster: Cluster | None,
    *,
    max_body: int,
    timeout: float,
    on_forward: Callable[[], None] | None = None,
) -> ASGIApp:
    """``app`` behind a ``Forwarder`` when the runtime is in a cluster."""
    if cluster is None:
        return app
    return Forwarder(app, cluster, max_body=max_body, timeout=timeout, on_forward=on_forward)


def _execute_session(body: bytes) -> str | None:
    try:
        return _decode_session_ref(body).session_id
    except msgspec.DecodeError:
        return None  # the app answers the malformed body itself


def _header(scope: _Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value)
    return None


def _signed_fields(scope: _Scope, epoch: bytes | None, deadline: bytes | None) -> tuple[bytes, ...]:
    """What a forwarded mark signs: the request's method and path, its epoch and deadline."""
    path = scope.get("raw_path") or scope["path"].encode()
    return (scope["method"].encode(), bytes(path), epoch or b"", deadline or b"")


def _problem_of(content: bytes) -> tuple[str | None, str]:
    """The ``type`` of a problem+json body (None when absent) and its ``detail`` (a 421's
    reason; a placeholder when absent)."""
    try:
        document = msgspec.json.decode(content)
    except msgspec.DecodeError:
        document = None
    if not isinstance(document, dict):
        return None, "no reason given"
    kind, detail = document.get("type"), document.get("detail")
    return (
        kind if isinstance(kind, str) else None,
        detail if isinstance(detail, str) else "no reason given",
    )


def _number(value: bytes | None) -> float | None:
    """A header's number, or None when absent or not a finite number."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number == number and abs(number) != float("inf") else None


def _target_url(advertise: str, scope: _Scope) -> str:
    path = scope.get("raw_path") or scope["path"].encode()
    url = advertise.rstrip("/") + path.decode("latin-1")
    query: bytes = scope.get("query_string", b"")
    return f"{url}?{query.decode('latin-1')}" if query else url
