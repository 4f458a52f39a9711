"""A session's live tail over HTTP: what ``Client.tail`` and ``AsyncClient.tail`` return.

``GET /v1/sessions/{id}/events`` is sent when ``tail`` is called, so that an
unknown session or a refused tail (``SessionNotFound``, ``TooManyWatchers``)
is raised there, as ``Runtime.tail`` raises it. Its frames become the
runtime's event objects (``runtime.client._sse``): every event of the session
from then on, whoever steps it. The tail lasts until it is closed (``close()``,
the end of a ``with``), the daemon drops it after ``Overflow`` (its reader fell
behind), or the daemon ends it (shutting down; in a cluster, the session
leaving the daemon serving it: open it again to follow the session). A tail is
never retried; a connection lost mid-tail is ``DaemonUnavailable``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Self

import httpx

from flow._events import StepEvent
from runtime.client._calls import tail_target
from runtime.client._errors import DaemonUnavailable, error_for_response
from runtime.client._sse import aevents_of, events_of, tail_ends

__all__ = ["AsyncTail", "Tail", "aopen_tail", "open_tail"]


class Tail:
    """The events of a session's tail (a sync iterator); use it in a ``with`` or
    ``close()`` it."""

    def __init__(self, response: httpx.Response, session_id: str, path: str) -> None:
        self._response = response
        self._events: Iterator[StepEvent] = events_of(response, session_id, tail_ends)
        self._path = path

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> StepEvent:
        try:
            return next(self._events)
        except httpx.TransportError as exc:
            self.close()
            raise _cut(self._path, exc, started=True) from exc
        except StopIteration:
            self.close()
            raise

    def close(self) -> None:
        """Stop following the session (closes the connection)."""
        self._response.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncTail:
    """The events of a session's tail (``async for``); use it in an ``async with`` or
    ``await aclose()`` it."""

    def __init__(self, response: httpx.Response, session_id: str, path: str) -> None:
        self._response = response
        self._events: AsyncIterator[StepEvent] = aevents_of(response, session_id, tail_ends)
        self._path = path

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> StepEvent:
        try:
            return await anext(self._events)
        except httpx.TransportError as exc:
            await self.aclose()
            raise _cut(self._path, exc, started=True) from exc
        except StopAsyncIteration:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Stop following the session (closes the connection)."""
        await self._response.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


def open_tail(http: httpx.Client, session_id: str) -> Tail:
    """Open the session's tail on ``http``.

    Raises:
        what the daemon answers (``SessionNotFound``, ``TooManyWatchers``...);
        DaemonUnavailable when it cannot be reached.
    """
    path, headers = tail_target(session_id)
    try:
        response = http.send(http.build_request("GET", path, headers=headers), stream=True)
    except httpx.TransportError as exc:
        raise _cut(path, exc, started=False) from exc
    if response.status_code >= 400:
        try:
            response.read()
        finally:
            response.close()
        raise error_for_response(response, session_id=session_id)
    return Tail(response, session_id, path)


async def aopen_tail(http: httpx.AsyncClient, session_id: str) -> AsyncTail:
    """``open_tail`` on an ``httpx.AsyncClient``."""
    path, headers = tail_target(session_id)
    try:
        response = await http.send(http.build_request("GET", path, headers=headers), stream=True)
    except httpx.TransportError as exc:
        raise _cut(path, exc, started=False) from exc
    if response.status_code >= 400:
        try:
            await response.aread()
        finally:
            await response.aclose()
        raise error_for_response(response, session_id=session_id)
    return AsyncTail(response, session_id, path)


def _cut(path: str, exc: httpx.TransportError, *, started: bool) -> DaemonUnavailable:
    where = "mid-tail" if started else "before the tail opened"
    return DaemonUnavailable(
        f"GET {path}: connection lost {where} ({type(exc).__name__}: {exc}); open the "
        "tail again (events in between are not replayed: read the session's revisions)",
        maybe_applied=False,
    )
