"""Reading a streamed step's Server-Sent Events back into the runtime's event objects.

The daemon's frames are ``id:``, ``event:`` and one ``data:`` line of JSON, then a
blank line; comments (``: keepalive``) are heartbeats. ``data`` decodes into the
same tagged structs ``Runtime.stream`` yields (``flow._events``); an ``error``
frame carries a problem+json document, which becomes ``StepError`` holding the
exception the runtime would have raised.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import msgspec

from flow._events import (
    Committed,
    CustomEvent,
    Overflow,
    StepError,
    StepEvent,
    StepStarted,
    TaskFinished,
    TaskStarted,
    Token,
)
from runtime.client._errors import DaemonUnavailable, error_for_response

__all__ = ["SSE_HEADERS", "aevents_of", "events_of", "unavailable"]

SSE_HEADERS = {"accept": "text/event-stream"}

_Plain = StepStarted | TaskStarted | Token | CustomEvent | TaskFinished | Committed | Overflow
_decode = msgspec.json.Decoder(_Plain).decode


class _Frames:
    """Assembles frames from lines: ``feed`` returns (event, data) at each blank line."""

    def __init__(self) -> None:
        self.event = ""
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        if not line:
            if not self.data:
                return None
            frame = (self.event, "\n".join(self.data))
            self.event, self.data = "", []
            return frame
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        return None


def _event(kind: str, data: str, response: httpx.Response, session_id: str) -> StepEvent:
    if kind == "error":
        problem = httpx.Response(
            500,
            content=data.encode(),
            headers={"content-type": "application/problem+json"},
            request=response.request,
        )
        return StepError(error_for_response(problem, session_id=session_id))
    event: StepEvent = _decode(data)
    return event


def _ends(event: StepEvent) -> bool:
    return isinstance(event, Committed | StepError | Overflow)


def events_of(
    response: httpx.Response, session_id: str, *, until: Callable[[StepEvent], bool] = _ends
) -> Iterator[StepEvent]:
    """The events of an event stream's 200 answer, up to the first for which ``until`` is
    true (by default a streamed step's last one) or the answer's end."""
    frames = _Frames()
    for line in response.iter_lines():
        frame = frames.feed(line)
        if frame is not None:
            event = _event(*frame, response, session_id)
            yield event
            if until(event):
                return


async def aevents_of(
    response: httpx.Response, session_id: str, *, until: Callable[[StepEvent], bool] = _ends
) -> AsyncIterator[StepEvent]:
    """``events_of`` for an ``httpx.AsyncClient`` answer."""
    frames = _Frames()
    async for line in response.aiter_lines():
        frame = frames.feed(line)
        if frame is not None:
            event = _event(*frame, response, session_id)
            yield event
            if until(event):
                return


def unavailable(path: str, exc: httpx.TransportError, started: bool) -> DaemonUnavailable:
    """A stream's transport failure: the step may have run unless nothing was sent."""
    sent = started or not isinstance(exc, httpx.ConnectError)
    outcome = "it may have run" if sent else "it did not reach the daemon"
    where = "mid-stream" if started else "before the stream started"
    return DaemonUnavailable(
        f"POST {path}: connection lost {where} ({type(exc).__name__}: {exc}); {outcome} "
        "(streams are not retried: read the session to see)",
        maybe_applied=sent,
    )
