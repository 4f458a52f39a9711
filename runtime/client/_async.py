"""``AsyncClient``: the asyncio HTTP client of an actorflowd daemon, with AsyncRuntime's methods."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import stamina

from flow._errors import SessionNotFound
from flow._events import StepEvent
from flow._session import Access
from flow._step import StepResult
from flow.stores._log import MessagePage, RevisionInfo
from flow.stores._protocol import SessionPage
from runtime._views import SessionView
from runtime.client._base import DEFAULT_LIMITS, DEFAULT_TIMEOUT, ClientBase
from runtime.client._calls import (
    Call,
    GraphSummary,
    OnBusy,
    StepMode,
    create_call,
    delete_call,
    fork_call,
    get_call,
    graphs_call,
    list_call,
    messages_call,
    revisions_call,
    rollback_call,
    share_call,
    step_call,
    unshare_call,
    update_call,
)
from runtime.client._errors import error_for_response
from runtime.client._retry import RetryPolicy, RetryStatus
from runtime.client._sse import SSE_HEADERS, aevents_of, unavailable
from runtime.client._tail import AsyncRemoteTail, tail_path, tail_unreachable

__all__ = ["AsyncClient"]

T = TypeVar("T")


class AsyncClient(ClientBase):
    """A daemon's sessions through its HTTP API, with the methods of ``AsyncRuntime``.

    Use it from one event loop; it keeps a pool of keep-alive connections.
    Close it with ``await aclose()`` (or use ``async with``) when done.

    Args:
        base_url: the daemon, e.g. ``http://127.0.0.1:8700``.
        token: the bearer token (None: a daemon without a tokens file).
        user: whose token it is, for the ``owner=`` arguments (default ``local``
            without a token, else unknown: ``owner=`` is then refused).
        timeout: per-attempt timeouts (seconds, or an ``httpx.Timeout``).
        retry: how to retry (see ``RetryPolicy``).
        idempotent_server: True when the daemon is known to honour
            ``Idempotency-Key``; None detects it from step answers.
        limits: connection pool limits (default: httpx's, with idle connections
            dropped after 4 s, before the daemon's 5 s keep-alive timeout).
        verify: TLS verification: True, False, or an ``ssl.SSLContext`` (a private CA).
        transport: an ``httpx`` transport to send through (tests).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        user: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        idempotent_server: bool | None = None,
        limits: httpx.Limits | None = None,
        verify: bool | ssl.SSLContext = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, token, user, retry, idempotent_server)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self._headers,
            timeout=timeout,
            limits=limits or DEFAULT_LIMITS,
            verify=verify,
            transport=transport,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections. Idempotent."""
        await self._http.aclose()

    async def _attempt(self, call: Call[T]) -> httpx.Response:
        response = await self._http.request(
            call.method, call.path, content=call.body, headers=call.headers
        )
        return self._raise_if_retryable(response)

    async def _send(self, call: Call[T]) -> T:
        try:
            response = await self._attempt(call)
        except (RetryStatus, httpx.TransportError) as first:
            return await self._retry(call, first)
        return self._read(call, response, None)

    async def _retry(self, call: Call[T], first: Exception) -> T:
        retrier = self._retrier(call)
        policy = self.retry
        pending: Exception | None = first
        try:
            async for attempt in stamina.retry_context(
                on=retrier,
                attempts=policy.attempts,
                timeout=max(retrier.remaining(), 0.001),
                wait_initial=policy.wait_initial,
                wait_max=policy.wait_max,
                wait_jitter=policy.wait_jitter,
            ):
                with attempt:
                    if pending is not None:
                        failed, pending = pending, None
                        raise failed  # lets the retrier judge the first attempt too
                    response = await self._attempt(call)
        except RetryStatus as exc:
            response = exc.response
        except httpx.TransportError as exc:
            raise self._unavailable(call, exc, retrier) from exc
        return self._read(call, response, retrier)

    async def create_session(
        self,
        graph_id: str,
        *,
        owner: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> str:
        """Create a session of ``graph_id``; its id (revision 0 is committed).

        It belongs to the token's user; ``owner``, when given, must be that user.
        A create is retried only where it surely did not reach the daemon.

        Raises:
            GraphNotFound, InvalidInput, StoreUnavailable, DaemonUnavailable, Unauthorized.
        """
        self._check_creator(owner)
        return await self._send(create_call(graph_id, context))

    async def step(
        self,
        session_id: str,
        input: Any = None,
        *,
        mode: StepMode = "step",
        on_busy: OnBusy = "enqueue",
        owner: str | None = None,
        idempotency_key: str | None = None,
    ) -> StepResult:
        """Run one step (``mode="run"``: until the session waits or ends), as ``Runtime.step``.

        The request carries ``idempotency_key`` (default a fresh UUID) as its
        ``Idempotency-Key`` header, the same on every retry.

        Raises:
            SessionNotFound, SessionBusy, SessionCompleted, TaskFailed, StepTimeout,
            StoreUnavailable, InvalidInput, RuntimeClosed, DaemonUnavailable, Unauthorized.
        """
        if not self._owner_matches(owner):
            raise SessionNotFound(session_id)
        return await self._send(step_call(session_id, input, mode, on_busy, idempotency_key))

    async def run(
        self,
        session_id: str,
        input: Any = None,
        *,
        on_busy: OnBusy = "enqueue",
        owner: str | None = None,
        idempotency_key: str | None = None,
    ) -> StepResult:
        """Step until the session waits for input, completes or cannot move (``mode="run"``)."""
        return await self.step(
            session_id, input, mode="run", on_busy=on_busy, owner=owner,
            idempotency_key=idempotency_key,
        )  # fmt: skip

    async def stream(
        self,
        session_id: str,
        input: Any = None,
        *,
        mode: StepMode = "step",
        on_busy: OnBusy = "enqueue",
        owner: str | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncIterator[StepEvent]:
        """Run one step and ``async for`` over its events (see ``Client.stream``)."""
        if not self._owner_matches(owner):
            raise SessionNotFound(session_id)
        call = step_call(session_id, input, mode, on_busy, idempotency_key)
        headers = {**call.headers, **SSE_HEADERS}
        started = False
        try:
            async with self._http.stream(
                call.method, call.path, content=call.body, headers=headers
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_for_response(response, session_id=session_id)
                started = True
                async for event in aevents_of(response, session_id):
                    yield event
        except httpx.TransportError as exc:
            raise unavailable(call.path, exc, started) from exc

    async def tail(self, session_id: str, *, owner: str | None = None) -> AsyncRemoteTail:
        """Every event of the session from now on (see ``Client.tail``): ``async for`` it,
        ``await aclose()`` it (or use ``async with``).

        Raises:
            SessionNotFound: no such session, or not the token's user's (nor shared).
            TooManyWatchers: the session or the daemon has as many tails as allowed.
            DaemonUnavailable: the daemon could not be reached.
        """
        if not self._owner_matches(owner):
            raise SessionNotFound(session_id)
        path = tail_path(session_id)
        try:
            response = await self._http.send(
                self._http.build_request("GET", path, headers=SSE_HEADERS), stream=True
            )
        except httpx.TransportError as exc:
            raise tail_unreachable(session_id, exc) from exc
        if response.status_code >= 400:
            await response.aread()
            await response.aclose()
            raise error_for_response(response, session_id=session_id)
        return AsyncRemoteTail(response, session_id)

    async def get_session(
        self, session_id: str, *, owner: str | None = None, revision: int | None = None
    ) -> SessionView:
        """The session as of its latest step, or as of revision ``revision``.

        Raises:
            SessionNotFound: no such session, or not ``owner``'s (or the token's user's).
            RevisionNotFound: ``revision`` is outside the retained history.
        """
        if not self._owner_matches(owner):
            raise SessionNotFound(session_id)
        return await self._send(get_call(session_id, revision))

    async def delete_session(self, session_id: str, *, owner: str | None = None) -> None:
        """Delete a session (a retry that finds it gone counts as done).

        Raises:
            SessionNotFound: no such session, or not ``owner``'s.
        """
        if not self._owner_matches(owner):
            raise SessionNotFound(session_id)
        await self._send(delete_call(session_id))

    async def list_sessions(
        self, owner: str | None = None, cursor: str | None = None, limit: int = 100
    ) -> SessionPage:
        """A page of the token's user's sessions, by id (another ``owner``'s: none).

        Unlike ``Runtime.list_sessions``, ``owner=None`` lists the caller's own
        sessions, never every owner's: the daemon shows a user only their own.
        """
        if not self._owner_matches(owner):
            return SessionPage([], None)
        return await self._send(list_call(cursor, limit, self.user or ""))

    async def graphs(self) -> list[GraphSummary]:
        """The graphs the daemon serves."""
        return await self._send(graphs_call())

    async def revisions(
        self,
        session_id: str,
        *,
        owner: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[RevisionInfo]:
        """The session's retained revisions below ``before``, newest first, at most ``limit``
        (as ``Runtime.revisions``).

        Raises:
            SessionNotFound: no such session, or not ``owner``'s.
        """
        if not self._owner_matches(owner):
            raise SessionNotFound(session_id)
        return await self._send(revisions_call(session_id, limit, before))

    async def messages(
        self,
        session_id: str,
        *,
        owner: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> MessagePage:
        """The whole chat history, one page: the newest ``limit`` messages numbered below
        ``before``, oldest first (as ``Runtime.messages``).

        Raises:
            SessionNotFound: no such session, or not ``owner``'s.
        """
        if not self._owner_matches(owner):
            raise SessionNotFound(session_id)
        return await self._send(messages_call(session_id, limit, before))

    async def fork(
        self, session_id: str, *, revision: int | None = None, owner: str | None = None
    ) -> str:
        """A new session (same owner, its own id) whose state is revision ``revision``'s
        (the newest when None); its id. Sent again only where it surely did not arrive.

        Raises:
            SessionNotFound: no such session, or not ``owner``'s.
            RevisionNotFound: ``revision`` is outside the retained history.
        """
        if not self._owner_matches(owner):
            raise SessionNotFound(session_id)
        return await self._send(fork_call(session_id, revision))

    async def share(
        self, session_id: str, user: str, access: Access, *, owner: str | None = None
    ) -> dict[str, str]:
        """Give ``user`` ``read`` or ``write`` access (``POST .../members``, as
        ``Runtime.share``); the members after. Only the owner's token (or an admin's)
        may share. Granting an access the member has changes nothing, so it is retried
        like a read.

        Raises:
            SessionNotFound: no such session, or not the token user's own.
            InvalidInput: ``user`` is not a user name or is the owner, or ``access``
                is not ``read``/``write``.
        """
        if not self._owner_matches(owner):
            raise SessionNotFound(session_id)
        return await self._send(share_call(session_id, user, access))

    async def unshare(
        self, session_id: str, user: str, *, owner: str | None = None
    ) -> dict[str, str]:
        """Take ``user``'s access away (``DELETE .../members/{user}``); the members after."""
        if not self._owner_matches(owner):
            raise SessionNotFound(session_id)
        return await self._send(unshare_call(session_id, user))

    async def update_session(
        self,
        session_id: str,
        *,
        set: dict[str, Any] | None = None,
        unset: Iterable[str] = (),
        goto: str | None = None,
        owner: str | None = None,
    ) -> StepResult:
        """Repair a session from outside (``PATCH``, as ``Runtime.update_session``): set or
        remove context keys, move it to a task, as one revision naming the token's user.
        Sent again only where it surely did not arrive.

        Raises:
            SessionNotFound: no such session, or not ``owner``'s.
            InvalidInput: nothing to change, a value cannot be stored, or ``goto``
                names a task the session's graph version lacks.
        """
        if not self._owner_matches(owner):
            raise SessionNotFound(session_id)
        keys = [unset] if isinstance(unset, str) else list(unset)
        return await self._send(update_call(session_id, set, keys, goto))

    async def rollback(
        self, session_id: str, *, revision: int, owner: str | None = None
    ) -> SessionView:
        """Append a new revision whose state equals revision ``revision``'s; the session as
        it now is. Sent again only where it surely did not arrive.

        Raises:
            SessionNotFound: no such session, or not ``owner``'s.
            RevisionNotFound: ``revision`` is outside the retained history.
        """
        if not self._owner_matches(owner):
            raise SessionNotFound(session_id)
        return await self._send(rollback_call(session_id, revision))
