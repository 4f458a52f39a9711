"""A session's live tail read from the daemon: ``GET /v1/sessions/{id}/events``.

``Client.tail`` and ``AsyncClient.tail`` open the request before they return, so
an error (404 for a session that is not the caller's, 429 ``too-many-watchers``)
is raised there, and the tail holds every event from then on, as
``Runtime.tail``'s does. Iterating yields the runtime's event objects; the tail
ends when it is closed, when the daemon drops it for falling behind
(``Overflow``, the last event) or when the daemon drains (the response ends).
Heartbeat comments keep the read timeout from firing while the session is quiet.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

import httpx

from flow._events import Overflow, StepEvent
from runtime.client._calls import session_path
from runtime.client._errors import DaemonUnavailable
from runtime.client._sse import aevents_of, events_of

__all__ = ["AsyncRemoteTail", "RemoteTail", "tail_path", "tail_unreachable"]


def tail_path(session_id: str) -> str:
    """The tail's route of ``session_id``."""
    return session_path(session_id) + "/events"


def tail_unreachable(session_id: str, exc: httpx.TransportError) -> DaemonUnavailable:
    """Opening a tail failed in transport (nothing to apply: a tail changes nothing)."""
    return DaemonUnavailable(
        f"GET {tail_path(session_id)}: the daemon could not be reached "
        f"({type(exc).__name__}: {exc})",
        maybe_applied=False,
    )


def _overflowed(event: StepEvent) -> bool:
    """A tail's last event: it fell too far behind and the daemon dropped it."""
    return isinstance(event, Overflow)


def _cut(session_id: str, exc: httpx.TransportError) -> DaemonUnavailable:
    return DaemonUnavailable(
        f"the tail of session {session_id!r} lost its connection "
        f"({type(exc).__name__}: {exc}); open another to go on",
        maybe_applied=False,
    )


class RemoteTail:
    """``Client.tail``'s answer: iterate for events; ``close()`` (or ``with``) to stop."""

    def __init__(self, response: httpx.Response, session_id: str) -> None:
        self._response = response
        self._session_id = session_id
        self._events = events_of(response, session_id, until=_overflowed)
        self._closed = False

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> StepEvent:
        if self._closed:
            raise StopIteration
        try:
            return next(self._events)
        except httpx.StreamError:
            raise StopIteration from None  # closed while reading
        except httpx.TransportError as exc:
            if self._closed:
                raise StopIteration from None
            raise _cut(self._session_id, exc) from exc

    def close(self) -> None:
        """Stop the tail (idempotent): the daemon frees its place."""
        self._closed = True
        self._response.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncRemoteTail:
    """``AsyncClient.tail``'s answer: ``async for`` events; ``await aclose()`` (or
    ``async with``) to stop."""

    def __init__(self, response: httpx.Response, session_id: str) -> None:
        self._response = response
        self._session_id = session_id
        self._events = aevents_of(response, session_id, until=_overflowed)
        self._closed = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> StepEvent:
        if self._closed:
            raise StopAsyncIteration
        try:
            return await anext(self._events)
        except httpx.StreamError:
            raise StopAsyncIteration from None
        except httpx.TransportError as exc:
            if self._closed:
                raise StopAsyncIteration from None
            raise _cut(self._session_id, exc) from exc

    async def aclose(self) -> None:
        """Stop the tail (idempotent): the daemon frees its place."""
        self._closed = True
        await self._response.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
