"""``SessionAPI`` and ``AsyncSessionAPI``: what ``Runtime`` and ``Client`` (and their
asyncio twins) have in common, so that host code written against the protocol
runs in process or against a daemon by changing the one line that builds it.

``stream`` runs a step and yields its events (``runtime.events``) as they happen,
in process or over SSE; ``tail`` follows every event of a session from now on
(``EventTail``/``AsyncEventTail``: iterate it, close it).
The block under ``TYPE_CHECKING`` at the end makes mypy prove that all four
classes satisfy their protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

from flow._events import StepEvent
from flow._session import Access
from flow._step import StepResult
from flow.stores._log import MessagePage, RevisionInfo
from flow.stores._protocol import SessionPage
from runtime._views import SessionView

__all__ = ["AsyncEventTail", "AsyncSessionAPI", "EventTail", "GraphDescription", "SessionAPI"]

StepMode = Literal["step", "run"]
OnBusy = Literal["enqueue", "reject"]


class GraphDescription(Protocol):
    """A graph as both sides can show it: a ``Graph`` in process, a ``GraphSummary`` remote."""

    @property
    def id(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def start(self) -> str: ...
    def describe(self) -> dict[str, Any]: ...


class EventTail(Iterator[StepEvent], Protocol):
    """A session's live tail (``Runtime.tail``, ``Client.tail``): iterate, then close."""

    def close(self) -> None: ...


class AsyncEventTail(Protocol):
    """A session's live tail in asyncio (``AsyncRuntime.tail``, ``AsyncClient.tail``):
    ``async for`` it, then ``await aclose()``."""

    def __aiter__(self) -> AsyncEventTail: ...
    async def __anext__(self) -> StepEvent: ...
    async def aclose(self) -> None: ...


class SessionAPI(Protocol):
    """The sessions interface of ``Runtime`` and ``Client``."""

    def create_session(
        self, graph_id: str, *, owner: str, context: dict[str, Any] | None = None
    ) -> str: ...

    def step(
        self,
        session_id: str,
        input: Any = None,
        *,
        mode: StepMode = "step",
        on_busy: OnBusy = "enqueue",
        owner: str | None = None,
    ) -> StepResult: ...

    def stream(
        self,
        session_id: str,
        input: Any = None,
        *,
        mode: StepMode = "step",
        on_busy: OnBusy = "enqueue",
        owner: str | None = None,
    ) -> Iterator[StepEvent]: ...

    def tail(self, session_id: str, *, owner: str | None = None) -> EventTail: ...

    def get_session(
        self, session_id: str, *, owner: str | None = None, revision: int | None = None
    ) -> SessionView: ...

    def revisions(
        self, session_id: str, *, owner: str | None = None, limit: int = 100,
        before: int | None = None,
    ) -> list[RevisionInfo]: ...  # fmt: skip

    def messages(
        self, session_id: str, *, owner: str | None = None, limit: int = 100,
        before: int | None = None,
    ) -> MessagePage: ...  # fmt: skip

    def fork(
        self, session_id: str, *, revision: int | None = None, owner: str | None = None
    ) -> str: ...

    def rollback(
        self, session_id: str, *, revision: int, owner: str | None = None
    ) -> SessionView: ...

    def update_session(
        self, session_id: str, *, set: dict[str, Any] | None = None,
        unset: Iterable[str] = (), goto: str | None = None, owner: str | None = None,
    ) -> StepResult: ...  # fmt: skip

    def share(
        self, session_id: str, user: str, access: Access, *, owner: str | None = None
    ) -> dict[str, str]: ...

    def unshare(
        self, session_id: str, user: str, *, owner: str | None = None
    ) -> dict[str, str]: ...

    def delete_session(self, session_id: str, *, owner: str | None = None) -> None: ...

    def list_sessions(
        self, owner: str | None, cursor: str | None = None, limit: int = 100
    ) -> SessionPage: ...

    def graphs(self) -> Sequence[GraphDescription]: ...

    def close(self) -> None: ...


class AsyncSessionAPI(Protocol):
    """The sessions interface of ``AsyncRuntime`` and ``AsyncClient``.

    ``graphs`` is not part of it: ``AsyncRuntime.graphs()`` is a plain method
    (the graphs are in memory), ``AsyncClient.graphs()`` a coroutine (they are
    asked of the daemon).
    """

    async def create_session(
        self, graph_id: str, *, owner: str, context: dict[str, Any] | None = None
    ) -> str: ...

    async def step(
        self,
        session_id: str,
        input: Any = None,
        *,
        mode: StepMode = "step",
        on_busy: OnBusy = "enqueue",
        owner: str | None = None,
    ) -> StepResult: ...

    def stream(
        self,
        session_id: str,
        input: Any = None,
        *,
        mode: StepMode = "step",
        on_busy: OnBusy = "enqueue",
        owner: str | None = None,
    ) -> AsyncIterator[StepEvent]: ...

    async def tail(self, session_id: str, *, owner: str | None = None) -> AsyncEventTail: ...

    async def get_session(
        self, session_id: str, *, owner: str | None = None, revision: int | None = None
    ) -> SessionView: ...

    async def revisions(
        self, session_id: str, *, owner: str | None = None, limit: int = 100,
        before: int | None = None,
    ) -> list[RevisionInfo]: ...  # fmt: skip

    async def messages(
        self, session_id: str, *, owner: str | None = None, limit: int = 100,
        before: int | None = None,
    ) -> MessagePage: ...  # fmt: skip

    async def fork(
        self, session_id: str, *, revision: int | None = None, owner: str | None = None
    ) -> str: ...

    async def rollback(
        self, session_id: str, *, revision: int, owner: str | None = None
    ) -> SessionView: ...

    async def update_session(
        self, session_id: str, *, set: dict[str, Any] | None = None,
        unset: Iterable[str] = (), goto: str | None = None, owner: str | None = None,
    ) -> StepResult: ...  # fmt: skip

    async def share(
        self, session_id: str, user: str, access: Access, *, owner: str | None = None
    ) -> dict[str, str]: ...

    async def unshare(
        self, session_id: str, user: str, *, owner: str | None = None
    ) -> dict[str, str]: ...

    async def delete_session(self, session_id: str, *, owner: str | None = None) -> None: ...

    async def list_sessions(
        self, owner: str | None, cursor: str | None = None, limit: int = 100
    ) -> SessionPage: ...

    async def aclose(self) -> None: ...


if TYPE_CHECKING:
    from runtime._runtime import AsyncRuntime, Runtime
    from runtime.client._async import AsyncClient
    from runtime.client._sync import Client

    def _sync_sides(runtime: Runtime, client: Client) -> list[SessionAPI]:
        return [runtime, client]

    def _async_sides(runtime: AsyncRuntime, client: AsyncClient) -> list[AsyncSessionAPI]:
        return [runtime, client]
