"""Relaying an event stream from the daemon holding a session, frame by frame.

A streamed step (``POST .../step`` with ``Accept: text/event-stream``) or a
tail (``GET .../events``) forwarded to the lease holder (``runtime.daemon._forward``)
answers Server-Sent Events. ``relay_stream`` passes each chunk on as it arrives
(heartbeat comments included), so tokens reach the caller through the forwarder
as soon as the holder sends them. Either side leaving ends both: a caller who
disconnects closes the connection to the holder (a step still commits there, as
when its own caller leaves); a holder ending or cutting the stream ends the
caller's.

While no chunk arrives the relay checks, once per lease renewal interval, that
the holder still holds the session's lease. For a step, as for a plain forwarded
step, a holder that lost its lease (paused or dead) or that passes the
forwarding timeout, and a stream cut before its ``committed`` or ``error``, make
the outcome unknown: the caller (who already has a 200 and some events) gets a
last ``error`` event carrying the ``outcome-unknown`` problem+json document,
sent only once the holder's epoch is fenced off (``Forwarder._unknown``). A
tail simply ends.

Runs on the daemon's event loop only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from runtime._cluster import Holder

__all__ = ["StreamRelay", "is_event_stream"]

_Message = dict[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]

# a step's last event: after one of these the outcome is known, whatever happens next
_TERMINAL = (b"\nevent: committed\n", b"\nevent: error\n")
_KEEP = max(len(t) for t in _TERMINAL)


def is_event_stream(response: httpx.Response) -> bool:
    """Whether ``response`` is a 200 answering Server-Sent Events."""
    kind = response.headers.get("content-type", "")
    return response.status_code == 200 and kind.startswith("text/event-stream")


class StreamRelay:
    """One relayed event stream.

    Args:
        response: the holder's streaming answer (headers read, body not).
        holder: the daemon holding the session's lease.
        still_holds: whether ``holder`` still holds the lease (asks the store).
        check_every: seconds without a chunk between two ``still_holds`` checks.
        give_up: ``time.monotonic()`` past which a step's outcome is unknown (None: a
            tail, which has no time limit).
    """

    def __init__(
        self,
        response: httpx.Response,
        holder: Holder,
        *,
        still_holds: Callable[[Holder], Awaitable[bool]],
        check_every: float,
        give_up: float | None,
    ) -> None:
        self.response = response
        self.holder = holder
        self.still_holds = still_holds
        self.check_every = check_every
        self.give_up = give_up
        self.ended = False
        """Whether a step's ``committed`` or ``error`` went through."""
        self.failure = ""
        """Why the stream stopped short ("" if it ended, or the caller left)."""
        self._last = b""

    async def run(self, receive: _Receive, send: _Send, headers: list[tuple[bytes, bytes]]) -> bool:
        """Relay the stream to the caller; True when it stopped short of its end (a step's
        outcome is then unknown unless ``ended``), False when it ended or the caller left.
        The caller's response is left open when True (the forwarder ends it)."""
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        gone = asyncio.ensure_future(_disconnected(receive))
        chunks = self.response.aiter_raw().__aiter__()
        try:
            while True:
                chunk = await self._next(chunks, gone)
                if chunk is None:
                    break
                self._watch(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if gone.done():
                return False
            if self.failure:
                return True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return False
        finally:
            gone.cancel()
            await self.response.aclose()  # closes the connection to the holder mid-stream

    async def _next(self, chunks: Any, gone: asyncio.Future[None]) -> bytes | None:
        """The next chunk; None at the stream's end, once the caller left, or on a failure
        (``self.failure`` says which)."""
        reading = asyncio.ensure_future(chunks.__anext__())
        try:
            while True:
                wait = self.check_every
                if self.give_up is not None:
                    wait = min(wait, self.give_up - time.monotonic())
                done, _ = await asyncio.wait(
                    {reading, gone}, timeout=max(0.0, wait), return_when=asyncio.FIRST_COMPLETED
                )
                if gone in done:
                    return None
                if reading in done:
                    break
                if self.give_up is not None and time.monotonic() >= self.give_up:
                    self.failure = "the holder did not end the stream within the forwarding timeout"
                    return None
                if not await self.still_holds(self.holder):
                    self.failure = "the holder's lease lapsed while its stream was silent"
                    return None
            try:
                chunk: bytes = reading.result()
            except StopAsyncIteration:
                return None
            except httpx.TransportError as exc:
                self.failure = f"the holder's stream was cut ({type(exc).__name__}: {exc})"
                return None
            return chunk
        finally:
            if not reading.done():
                reading.cancel()
                await asyncio.wait({reading})  # let it unwind before the response is closed

    def _watch(self, chunk: bytes) -> None:
        """Note a step's last event going through (frames may span chunks)."""
        if not self.ended:
            seen = self._last + chunk
            self.ended = any(t in seen for t in _TERMINAL)
            self._last = seen[-_KEEP:]


async def _disconnected(receive: _Receive) -> None:
    """Return once the caller has gone (ASGI ``http.disconnect``)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
