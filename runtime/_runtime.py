"""``Runtime`` (sync) and ``AsyncRuntime`` (asyncio): the in-process API for host apps.

Both are thin facades over one ``RuntimeCore``. A step never goes through the
supervisor for a live session: the caller finds the session's actor in the
live index and sends it a ``Step`` carrying a reply callable. The sync facade
waits on a ``concurrent.futures.Future``; the async one awaits an asyncio
future completed with ``loop.call_soon_threadsafe``, so the event loop never
blocks on an actor. Calls that only touch the store (listing, loading a
passivated session, deleting) run on a worker thread in the async facade.
"""

from __future__ import annotations

import asyncio
import functools
import math
import threading
from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from actors._event_hub import StreamStats, Subscriber
from actors.messages import Edit
from flow._context import DEFAULT_MAX_MESSAGES
from flow._errors import InvalidInput
from flow._graph import Graph
from flow._session import Access, Session
from flow._sharing import check_member
from flow._step import StepResult
from flow._versions import GraphRegistry, Migration
from flow.stores._log import MessagePage, RevisionInfo
from flow.stores._protocol import SessionPage, SessionStore
from flow.stores._timer_index import DueTimer
from runtime import _history as history
from runtime._bridge import AsyncReply, SyncReply
from runtime._cluster import Cluster
from runtime._config import RuntimeConfig
from runtime._core import RuntimeCore, session_view
from runtime._live_page import LivePage, LiveSort
from runtime._streams import AsyncEventStream, EventStream, StreamReply, async_waker
from runtime._views import LiveSessionInfo, RuntimeStats, SessionView, StoredPage

__all__ = ["AsyncRuntime", "Runtime"]

OnBusy = Literal["enqueue", "reject"]
StepMode = Literal["step", "run"]
#: Where an ``AsyncRuntime`` runs async tasks: its own loop thread, or the opening loop.
TaskLoop = Literal["own", "caller"]


class _Facade:
    """What both facades share: attributes and the non-blocking views."""

    def __init__(self, core: RuntimeCore) -> None:
        self._core = core

    @property
    def config(self) -> RuntimeConfig:
        """The runtime's configuration."""
        return self._core.config

    @property
    def store(self) -> SessionStore:
        """The session store."""
        return self._core.store

    @property
    def store_name(self) -> str:
        """The kind of store sessions live in (``SqliteStore``, ``RedisStore``, ``FencedStore``
        in a cluster, ...)."""
        return type(self._core.store).__name__

    @property
    def cluster(self) -> Cluster | None:
        """This runtime's cluster membership (leases, forwarding): None unless on Redis."""
        return self._core.cluster

    @property
    def data_dir(self) -> Path:
        """Where the runtime keeps its files (``sessions.db`` by default)."""
        return self._core.data_dir

    @property
    def draining(self) -> bool:
        """True once ``begin_drain`` or ``close`` was called: new requests are refused."""
        return self._core.draining

    @property
    def closed(self) -> bool:
        """True once the runtime is closed."""
        return self._core.closed

    def begin_drain(self) -> None:
        """Refuse new requests (``RuntimeClosed``) while running steps finish (for SIGTERM)."""
        self._core.begin_drain()

    def graphs(self) -> list[Graph]:
        """The registered graphs."""
        return self._core.graphs()

    def graph(self, graph_id: str, version: str | None = None) -> Graph:
        """The registered graph ``graph_id`` at ``version`` (default: the newest given).

        Raises:
            GraphNotFound: no graph has that id, or that version of it is not served.
        """
        return self._core.graph(graph_id, version)

    @property
    def registry(self) -> GraphRegistry:
        """The graphs served, every version, and the migrations (thread-safe)."""
        return self._core.registry

    def graph_versions(self, graph_id: str) -> list[str]:
        """The versions of ``graph_id`` served, oldest given first (the last is the default)."""
        return self._core.registry.versions(graph_id)

    def migrations(self) -> list[Migration]:
        """The registered migrations."""
        return self._core.registry.migrations()

    def reload(self, graphs: Iterable[Graph], migrations: Iterable[Migration] = ()) -> None:
        """Serve these graphs and migrations too, without a restart.

        Versions served before stay served (live and stored sessions keep the
        version they are pinned to); the last version given of each id becomes
        the default for new sessions. Steps in flight are not disturbed.

        Raises:
            InvalidInput: two graphs share an id and version, or two migrations a start.
        """
        self._core.reload(graphs, migrations)

    def stream_stats(self) -> StreamStats:
        """Streams and tails: readers attached now, events handed out, readers dropped."""
        return self._core.services.events.stats()

    def _stream(
        self,
        session_id: str,
        input: Any,
        mode: StepMode,
        on_busy: OnBusy,
        owner: str | None,
        request_id: str | None,
        wake: Callable[[], None],
        *,
        preload: bool,
    ) -> Subscriber:
        """Subscribe a stream and send its step; the subscriber."""
        core = self._core
        hub = core.services.events
        sub = hub.subscribe(str(session_id), tail=False, wake=wake)
        reply = StreamReply(core.index, hub, sub)
        try:
            core.submit_step(
                session_id,
                input,
                mode,
                on_busy,
                owner,
                reply,
                preload=preload,
                key=request_id,
                stream=sub,
            )
        except BaseException:
            sub.close()  # the step was not sent: nothing will end the stream
            raise
        return sub


class Runtime(_Facade):
    """The sync in-process runtime. Open it with ``Runtime.open(...)``, use it as a context manager.

    Every method may raise ``RuntimeClosed`` after ``close()`` (or during a drain).
    """

    @classmethod
    def open(
        cls,
        data_dir: str | Path = "./var",
        graphs: Iterable[Graph] = (),
        config: RuntimeConfig | None = None,
        store: SessionStore | None = None,
        migrations: Iterable[Migration] = (),
    ) -> Runtime:
        """Open a runtime.

        Args:
            data_dir: its data directory (created if missing; holds ``sessions.db``
                unless ``config.store`` or ``store`` says otherwise).
            graphs: the graphs sessions may run. Several versions of one id may be
                served; the last one given is the default for new sessions.
            config: tunables (default ``RuntimeConfig()``).
            store: a store to use instead of opening ``config.store`` (it is
                flushed, not closed, by ``close()``).
            migrations: move stored sessions from a version no longer served to
                a served one, at activation (see ``Migration``).

        Raises:
            InvalidInput: two graphs share an id and version, two migrations of
                a graph start at one version, or a config value is invalid.
            StoreUnavailable: the store could not be opened.
        """
        return cls(RuntimeCore(data_dir, graphs, config or RuntimeConfig(), store, migrations))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Refuse new requests, let running steps finish (up to ``drain_timeout``),
        save every live session and stop every actor, thread and the store. Idempotent."""
        self._core.close()

    def _reply(self) -> SyncReply:
        return SyncReply(self._core.index)

    def create_session(
        self,
        graph_id: str,
        *,
        owner: str,
        context: dict[str, Any] | None = None,
        client_addr: str | None = None,
        max_messages: int | None = DEFAULT_MAX_MESSAGES,
        session_id_key: str | None = None,
        version: str | None = None,
    ) -> str:
        """Create a session at its graph's start task; returns its id.

        Its revision 0 is committed to the store before this returns. The session
        is pinned to ``version`` (default: the newest version given).

        Args:
            graph_id: the graph to start.
            owner: who owns the session.
            context: initial context values (msgpack-safe).
            client_addr: the creating client's address, if known.
            max_messages: how many chat messages the session keeps (graph-flow's
                ``with_max_chat_messages``; None: all).
            session_id_key: a context key to store the new session's id under
                (graph-flow services read it from ``session_id``).

        Raises:
            GraphNotFound: no graph ``graph_id``, or no such version served.
            InvalidInput: a context value cannot be stored, or ``owner`` is empty.
            StoreUnavailable: the store could not write it.
        """
        core = self._core
        core.index.begin()
        try:
            session, saved = core.new_session(
                graph_id,
                owner,
                context,
                client_addr,
                max_messages=max_messages,
                session_id_key=session_id_key,
                version=version,
            )
            saved.result()
        finally:
            core.index.end()
        return session.session_id

    def step(
        self,
        session_id: str,
        input: Any = None,
        *,
        mode: StepMode = "step",
        on_busy: OnBusy = "enqueue",
        owner: str | None = None,
        request_id: str | None = None,
    ) -> StepResult:
        """Run one step of a session (or, with ``mode="run"``, run until it waits or ends).

        Args:
            session_id: the session.
            input: this step's input (msgpack-safe).
            mode: ``step`` or ``run``.
            on_busy: ``enqueue`` waits its turn; ``reject`` fails at once with
                ``SessionBusy`` if a step of this session is running or queued.
            owner: when given, a session of another owner is ``SessionNotFound``.
            request_id: the step's idempotency key (1 to 255 printable ASCII
                characters): a retry with the key of a step the session committed
                is answered with that step's result (``replayed`` True) without
                running; one arriving while that step is queued or running waits
                for it. Keys are per session; see docs/concepts.md.

        Raises:
            SessionNotFound, SessionBusy, SessionCompleted, TaskFailed, StepTimeout,
            StoreUnavailable, InvalidInput, RuntimeClosed.
            IdempotencyKeyReused: ``request_id`` named an earlier step with another
                input or mode (an ``InvalidInput``).
        """
        reply = SyncReply(self._core.index, counted=False)  # the index counts a step
        self._core.submit_step(
            session_id, input, mode, on_busy, owner, reply, preload=True, key=request_id
        )
        result: StepResult = reply.wait()
        return result

    def run(
        self,
        session_id: str,
        input: Any = None,
        *,
        on_busy: OnBusy = "enqueue",
        owner: str | None = None,
    ) -> StepResult:
        """Step until the session waits for input, completes or cannot move (``mode="run"``)."""
        return self.step(session_id, input, mode="run", on_busy=on_busy, owner=owner)

    def stream(
        self,
        session_id: str,
        input: Any = None,
        *,
        mode: StepMode = "step",
        on_busy: OnBusy = "enqueue",
        owner: str | None = None,
        request_id: str | None = None,
    ) -> EventStream:
        """Run one step (as ``step`` does: same arguments, mailbox, deadline) and iterate
        over its events as they happen: ``StepStarted``, per task ``TaskStarted``, its
        ``Token``/``CustomEvent`` emits and ``TaskFinished``, then ``Committed`` once the
        step is durable, or ``StepError`` (``runtime.events``).

        Leaving the loop early (``close()``) does not cancel the step. A reader
        more than ``stream_buffer`` events behind gets ``Overflow`` and is dropped.

        Raises (from the first ``next``): whatever ``step`` raises before the step
        starts (``SessionNotFound``, ``SessionBusy``, ``RuntimeClosed``...).
        """
        wake = threading.Event()
        sub = self._stream(
            session_id, input, mode, on_busy, owner, request_id, wake.set, preload=True
        )
        return EventStream(sub, wake, raise_first_error=True)

    def tail(self, session_id: str, *, owner: str | None = None) -> EventStream:
        """Every event of the session from its next event on, until ``close()``: the
        events of each step, whoever runs it (``next(timeout)`` waits at most so long).

        In a cluster (a Redis or PostgreSQL store) a session live on no daemon is
        activated here first, taking its lease, so that steps made through other
        daemons are forwarded here and seen (docs/cluster.md).

        Raises:
            SessionNotFound: no such session, or ``owner`` neither owns it nor is a member.
            StoreUnavailable: in a cluster, the session is live on another daemon.
        """
        core = self._core
        core.check_open()
        core.check_owner(session_id, owner, "read")  # members with read access may watch
        if core.cluster is not None:
            reply = SyncReply(core.index)
            core.activate_in_cluster(session_id, owner, reply)
            reply.wait()
        wake = threading.Event()
        sub = core.services.events.subscribe(session_id, tail=True, wake=wake.set)
        return EventStream(sub, wake, raise_first_error=False)

    def update_session(
        self,
        session_id: str,
        *,
        set: dict[str, Any] | None = None,
        unset: Iterable[str] = (),
        goto: str | None = None,
        owner: str | None = None,
        by: str | None = None,
    ) -> StepResult:
        """Repair a session from outside: set/remove context keys, move it to a task.

        Recorded as one new revision whose status message says who did it (``by``,
        default ``owner`` or "admin"). It queues behind the session's running and
        queued steps like any request. ``goto`` pauses the session at that task,
        even a completed or failed one.

        Raises:
            SessionNotFound: no such session, or not ``owner``'s.
            InvalidInput: nothing to change, a value cannot be stored, or ``goto``
                names a task the session's graph version lacks.
            GraphVersionUnavailable, StoreUnavailable, RuntimeClosed.
        """
        reply = SyncReply(self._core.index, counted=False)  # the index counts a step
        message = _edit_message(set, unset, goto, by or owner or "admin")
        self._core.submit_step(
            session_id, None, "step", "enqueue", owner, reply, preload=True, edit=message
        )
        result: StepResult = reply.wait()
        return result

    def migrate_session(self, session_id: str, version: str, *, by: str = "admin") -> StepResult:
        """Move a session to graph ``version`` through the registered migrations, now.

        Queued in the mailbox like a step; one new revision ("migrated g 1 → 2"),
        or none when it is on ``version`` already.

        Raises:
            GraphNotFound: ``version`` is not served.
            GraphVersionUnavailable: no chain of migrations leads there.
            MigrationFailed: a migration failed (the session is untouched).
        """
        reply = SyncReply(self._core.index, counted=False)  # the index counts a step
        message = Edit({}, (), None, by, migrate_to=version)
        self._core.submit_step(
            session_id, None, "step", "enqueue", None, reply, preload=True, edit=message
        )
        result: StepResult = reply.wait()
        return result

    def share(
        self, session_id: str, user: str, access: Access, *, owner: str | None = None
    ) -> dict[str, str]:
        """Give ``user`` ``access`` to the session: ``read`` (read it, its history and
        messages) or ``write`` (step it too); the members after.

        Only the session's owner (``owner``; None: the host app or an admin) may
        share. The change is one revision, queued in the session's mailbox like a
        step and committed before this returns; giving the access a member has
        already writes nothing.

        Raises:
            SessionNotFound: no such session, or ``owner`` does not own it.
            InvalidInput: ``user`` is not a user name, is the owner, the session has
                100 members already, or ``access`` is not ``read``/``write``.
        """
        if access is None:
            raise InvalidInput("access must be 'read' or 'write' (unshare takes access away)")
        return self._change_member(session_id, user, access, owner)

    def unshare(self, session_id: str, user: str, *, owner: str | None = None) -> dict[str, str]:
        """Take ``user``'s access away (see ``share``); the members after."""
        return self._change_member(session_id, user, None, owner)

    def _change_member(
        self, session_id: str, user: str, access: Access | None, owner: str | None
    ) -> dict[str, str]:
        core = self._core
        core.check_open()
        message = _share_message(user, access, owner)
        core.check_owner(session_id, owner)
        reply = SyncReply(core.index, counted=False)  # the index counts a step
        core.submit_step(
            session_id, None, "step", "enqueue", None, reply, preload=True, edit=message
        )
        reply.wait()
        return dict(self._session(session_id, None).metadata.members)

    def _session(self, session_id: str, owner: str | None) -> Session:
        core = self._core
        core.check_open()
        reply = self._reply()
        if core.ask_live(session_id, core.view_message(reply), reply, owner):
            session: Session = reply.wait()
            return session
        return core.load(session_id, owner, "read")

    def get_session(
        self, session_id: str, *, owner: str | None = None, revision: int | None = None
    ) -> SessionView:
        """The session as of its latest step (asks its actor when it is live), or as of
        revision ``revision``.

        Raises:
            SessionNotFound: no such session, or not ``owner``'s.
            RevisionNotFound: ``revision`` is outside the retained history.
        """
        if revision is not None:
            return session_view(history.session_at(self._core, session_id, owner, revision))
        return session_view(self._session(session_id, owner))

    def revisions(
        self,
        session_id: str,
        *,
        owner: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[RevisionInfo]:
        """The session's retained revisions below ``before``, newest first, at most ``limit``.

        Each says its revision, time, task, input, response and status.

        Raises:
            SessionNotFound: no such session, or not ``owner``'s.
        """
        return history.revisions(self._core, session_id, owner, limit, before)

    def messages(
        self,
        session_id: str,
        *,
        owner: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> MessagePage:
        """The whole chat history, one page: the newest ``limit`` messages numbered
        below ``before``, oldest first (the task's context holds only the newest
        ``max_messages``; the log keeps them all).

        Raises:
            SessionNotFound: no such session, or not ``owner``'s.
        """
        return history.messages(self._core, session_id, owner, limit, before)

    def fork(
        self, session_id: str, *, revision: int | None = None, owner: str | None = None
    ) -> str:
        """A new session (same owner, its own id) whose state is revision ``revision``'s
        (the newest when None); returns its id once committed.

        Raises:
            SessionNotFound: no such session, or not ``owner``'s.
            RevisionNotFound: ``revision`` is outside the retained history.
        """
        return history.fork(self._core, session_id, owner, revision)

    def rollback(self, session_id: str, *, revision: int, owner: str | None = None) -> SessionView:
        """Append a new revision whose state equals revision ``revision``'s (a rollback
        is itself a revision, so it can be undone); returns the session as it now is.

        Raises:
            SessionNotFound: no such session, or not ``owner``'s.
            RevisionNotFound: ``revision`` is outside the retained history.
            RevisionConflict: steps kept reactivating the session; retry.
        """
        return session_view(history.rollback(self._core, session_id, owner, revision))

    def delete_session(self, session_id: str, *, owner: str | None = None) -> None:
        """Delete a session: its actor stops without saving, then its row goes.

        Raises:
            SessionNotFound: no such session, or not ``owner``'s.
        """
        self._core.delete_session(session_id, owner)

    def list_sessions(
        self, owner: str | None, cursor: str | None = None, limit: int = 100
    ) -> SessionPage:
        """A page of stored sessions of ``owner`` (every owner when None), by id."""
        return self._core.list_sessions(owner, cursor, limit)

    def stored_page(
        self,
        owner: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
        *,
        quarantined: int = 20,
    ) -> StoredPage:
        """How many sessions are stored, a page of them (``owner``'s, after ``cursor``),
        and the ``quarantined`` newest snapshots that failed to decode (also while draining)."""
        return self._core.stored_page(owner, cursor, limit, quarantined)

    def ready(self) -> None:
        """Return when the runtime serves requests (for a readiness probe).

        Raises:
            RuntimeClosed: it is draining or closed.
            StoreUnavailable: its store did not answer.
        """
        self._core.ready()

    def passivate(self, session_id: str) -> bool:
        """Save (if needed) and stop a session's actor; False if it was not live."""
        core = self._core
        core.check_open()
        reply = self._reply()
        core.tell_supervisor(core.passivate_message(session_id, reply, kill=False), reply)
        return bool(reply.wait())

    def kill(self, session_id: str) -> bool:
        """Stop a session's actor without saving; the next request reactivates it from
        its last committed snapshot. False if it was not live."""
        core = self._core
        core.check_open()
        reply = self._reply()
        core.tell_supervisor(core.passivate_message(session_id, reply, kill=True), reply)
        return bool(reply.wait())

    def snapshot(self, session_id: str) -> int:
        """Save a live session now; the snapshot's size in bytes (0 if it is not live).

        Raises:
            SessionNotFound: no such session.
        """
        core = self._core
        core.check_open()
        reply = self._reply()
        if core.ask_live(session_id, core.snapshot_message(reply), reply, None):
            size: int = reply.wait()
            return size
        return core.snapshot_stored(session_id)

    def inspect(self, session_id: str, *, revision: int | None = None) -> dict[str, Any]:
        """What a session holds, its actor's state and why it is live; with ``revision``,
        what that retained revision held.

        Raises:
            SessionNotFound: no such session.
            RevisionNotFound: ``revision`` is outside the retained history.
        """
        core = self._core
        core.check_open()
        if revision is not None:
            return core.stored_inspect(session_id, revision)
        reply = self._reply()
        if core.ask_live(session_id, core.inspect_message(reply), reply, None):
            info: dict[str, Any] = reply.wait()
            info["live"] = True
            return info
        return core.stored_inspect(session_id)

    def live_sessions(self) -> list[LiveSessionInfo]:
        """The live session actors, least recently used first."""
        self._core.check_open()
        return self._core.live_sessions()

    def live_page(
        self,
        *,
        sort: LiveSort = "mailbox_depth",
        descending: bool = True,
        graph: str | None = None,
        owner: str | None = None,
        status: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> LivePage:
        """One page of the live actors in ``sort`` order (ties by session id), filtered by
        graph, owner and status (a session status, or ``running``/``idle``), with the
        number matching: a page of 100,000 live actors without building them all.

        Raises:
            InvalidInput: an unknown sort, a negative offset, a limit outside 1-1000.
        """
        self._core.check_open()
        return self._core.live_page(
            sort=sort,
            descending=descending,
            graph=graph,
            owner=owner,
            status=status,
            offset=offset,
            limit=limit,
        )

    def stats(self) -> RuntimeStats:
        """Counters since the runtime opened, and the store's counts."""
        self._core.check_open()
        return self._core.stats()

    def sweep_now(self) -> None:
        """Run the periodic sweep now and wait for it (for tests, with a manual clock)."""
        core = self._core
        core.check_open()
        reply = self._reply()
        core.tell_supervisor(core.sweep_message(reply), reply)
        reply.wait()

    def fire_due_timers(self, timeout: float = 10.0) -> int:
        """Fire every timer due by the runtime's clock now and wait for their steps.

        For tests with a ``ManualClock`` (advance it, then call this); the runtime
        fires due timers on its own thread anyway. Returns how many timer steps it
        started (a session whose timer another firing took is not counted).
        """
        self._core.check_open()
        return self._core.timer_firing.fire_now(timeout)

    def due_timers(self, limit: int = 20) -> list[DueTimer]:
        """The sessions whose timers are due next, soonest first (one entry per session)."""
        self._core.check_open()
        return self._core.store.due_timers(math.inf, limit)


class _AsyncOpen:
    """``AsyncRuntime.open(...)``: await it, or use it with ``async with``."""

    def __init__(self, args: tuple[Any, ...], *, caller_loop: bool = False) -> None:
        self._args = args
        self._caller_loop = caller_loop
        self._runtime: AsyncRuntime | None = None

    async def _open(self) -> AsyncRuntime:
        loop = asyncio.get_running_loop() if self._caller_loop else None
        data_dir, graphs, config, store, migrations = self._args
        core = await asyncio.to_thread(
            functools.partial(
                RuntimeCore, data_dir, graphs, config, store, migrations, task_loop=loop
            )
        )
        self._runtime = AsyncRuntime(core)
        return self._runtime

    def __await__(self) -> Generator[Any, None, AsyncRuntime]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncRuntime:
        return await self._open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runtime is not None:
            await self._runtime.aclose()


class AsyncRuntime(_Facade):
    """The asyncio runtime: the same methods as ``Runtime``, as coroutines.

    Open it with ``await AsyncRuntime.open(...)`` or ``async with AsyncRuntime.open(...)``;
    close it with ``await aclose()``. A step's answer completes an asyncio future
    via ``loop.call_soon_threadsafe``: nothing blocks the event loop.
    """

    @classmethod
    def open(
        cls,
        data_dir: str | Path = "./var",
        graphs: Iterable[Graph] = (),
        config: RuntimeConfig | None = None,
        store: SessionStore | None = None,
        migrations: Iterable[Migration] = (),
        *,
        task_loop: TaskLoop = "own",
    ) -> _AsyncOpen:
        """Open a runtime (see ``Runtime.open`` for the arguments and errors).

        ``task_loop`` says where async tasks run: ``"own"`` (the default), on an event
        loop of the runtime's own thread; ``"caller"``, on the loop that opens the
        runtime, so that what a task emits reaches a reader on that loop without a
        hand-over between threads (the daemon does this: tokens arrive sooner). With
        ``"caller"`` a task that blocks stalls that loop and everything on it, and the
        loop must keep running until the runtime is closed.
        """
        if task_loop not in ("own", "caller"):
            raise ValueError(f"task_loop must be 'own' or 'caller', not {task_loop!r}")
        return _AsyncOpen(
            (data_dir, list(graphs), config or RuntimeConfig(), store, list(migrations)),
            caller_loop=task_loop == "caller",
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
        """Close the runtime as ``Runtime.close`` does, off the event loop."""
        await asyncio.to_thread(self._core.close)

    def _reply(self) -> AsyncReply:
        return AsyncReply(self._core.index)

    async def create_session(
        self,
        graph_id: str,
        *,
        owner: str,
        context: dict[str, Any] | None = None,
        client_addr: str | None = None,
        max_messages: int | None = DEFAULT_MAX_MESSAGES,
        session_id_key: str | None = None,
        version: str | None = None,
    ) -> str:
        """Create a session; returns its id once revision 0 is committed (see ``Runtime``)."""
        core = self._core
        if core.quota.count_due(owner):
            await asyncio.to_thread(core.quota.count, owner)
        core.index.begin()
        try:
            session, saved = core.new_session(
                graph_id,
                owner,
                context,
                client_addr,
                max_messages=max_messages,
                session_id_key=session_id_key,
                version=version,
            )
            await asyncio.wrap_future(saved)
        finally:
            core.index.end()
        return session.session_id

    async def step(
        self,
        session_id: str,
        input: Any = None,
        *,
        mode: StepMode = "step",
        on_busy: OnBusy = "enqueue",
        owner: str | None = None,
        request_id: str | None = None,
    ) -> StepResult:
        """Run one step (see ``Runtime.step``)."""
        reply = AsyncReply(self._core.index, counted=False)  # the index counts a step
        self._core.submit_step(session_id, input, mode, on_busy, owner, reply, key=request_id)
        result: StepResult = await reply.wait()
        return result

    async def run(
        self,
        session_id: str,
        input: Any = None,
        *,
        on_busy: OnBusy = "enqueue",
        owner: str | None = None,
    ) -> StepResult:
        """Step until the session waits for input, completes or cannot move."""
        return await self.step(session_id, input, mode="run", on_busy=on_busy, owner=owner)

    def stream(
        self,
        session_id: str,
        input: Any = None,
        *,
        mode: StepMode = "step",
        on_busy: OnBusy = "enqueue",
        owner: str | None = None,
        request_id: str | None = None,
    ) -> AsyncEventStream:
        """Run one step and ``async for`` over its events (see ``Runtime.stream``).

        Call it from the event loop that iterates it; the step is sent at once.
        """
        wake = asyncio.Event()
        waker = async_waker(asyncio.get_running_loop(), wake)
        sub = self._stream(
            session_id, input, mode, on_busy, owner, request_id, waker, preload=False
        )
        return AsyncEventStream(sub, wake, raise_first_error=True)

    async def tail(self, session_id: str, *, owner: str | None = None) -> AsyncEventStream:
        """Every event of the session from its next event on (see ``Runtime.tail``)."""
        core = self._core
        core.check_open()
        if core.index.get(session_id) is None or owner is not None:
            await asyncio.to_thread(core.check_owner, session_id, owner, "read")
        if core.cluster is not None:
            reply = AsyncReply(core.index)
            core.activate_in_cluster(session_id, owner, reply)
            await reply.wait()
        wake = asyncio.Event()
        waker = async_waker(asyncio.get_running_loop(), wake)
        sub = core.services.events.subscribe(session_id, tail=True, wake=waker)
        return AsyncEventStream(sub, wake, raise_first_error=False)

    async def update_session(
        self,
        session_id: str,
        *,
        set: dict[str, Any] | None = None,
        unset: Iterable[str] = (),
        goto: str | None = None,
        owner: str | None = None,
        by: str | None = None,
    ) -> StepResult:
        """Repair a session from outside (see ``Runtime.update_session``)."""
        reply = AsyncReply(self._core.index, counted=False)  # the index counts a step
        message = _edit_message(set, unset, goto, by or owner or "admin")
        self._core.submit_step(session_id, None, "step", "enqueue", owner, reply, edit=message)
        result: StepResult = await reply.wait()
        return result

    async def migrate_session(
        self, session_id: str, version: str, *, by: str = "admin"
    ) -> StepResult:
        """Move a session to graph ``version`` now (see ``Runtime.migrate_session``)."""
        reply = AsyncReply(self._core.index, counted=False)  # the index counts a step
        message = Edit({}, (), None, by, migrate_to=version)
        self._core.submit_step(session_id, None, "step", "enqueue", None, reply, edit=message)
        result: StepResult = await reply.wait()
        return result

    async def share(
        self, session_id: str, user: str, access: Access, *, owner: str | None = None
    ) -> dict[str, str]:
        """Give ``user`` ``access`` to the session (see ``Runtime.share``)."""
        if access is None:
            raise InvalidInput("access must be 'read' or 'write' (unshare takes access away)")
        return await self._change_member(session_id, user, access, owner)

    async def unshare(
        self, session_id: str, user: str, *, owner: str | None = None
    ) -> dict[str, str]:
        """Take ``user``'s access away (see ``Runtime.unshare``)."""
        return await self._change_member(session_id, user, None, owner)

    async def _change_member(
        self, session_id: str, user: str, access: Access | None, owner: str | None
    ) -> dict[str, str]:
        core = self._core
        core.check_open()
        message = _share_message(user, access, owner)
        await asyncio.to_thread(core.check_owner, session_id, owner)
        reply = AsyncReply(core.index, counted=False)  # the index counts a step
        core.submit_step(session_id, None, "step", "enqueue", None, reply, edit=message)
        await reply.wait()
        view = await self.get_session(session_id)
        return dict(view.metadata.members)

    async def get_session(
        self, session_id: str, *, owner: str | None = None, revision: int | None = None
    ) -> SessionView:
        """The session as of its latest step, or of ``revision`` (see ``Runtime.get_session``)."""
        core = self._core
        if revision is not None:
            past = await asyncio.to_thread(history.session_at, core, session_id, owner, revision)
            return session_view(past)
        core.check_open()
        reply = self._reply()
        if core.ask_live(session_id, core.view_message(reply), reply, owner):
            session: Session = await reply.wait()
        else:
            session = await asyncio.to_thread(core.load, session_id, owner, "read")
        return session_view(session)

    async def revisions(
        self,
        session_id: str,
        *,
        owner: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[RevisionInfo]:
        """The session's retained revisions, newest first (see ``Runtime.revisions``)."""
        return await asyncio.to_thread(
            history.revisions, self._core, session_id, owner, limit, before
        )

    async def messages(
        self,
        session_id: str,
        *,
        owner: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> MessagePage:
        """One page of the whole chat history (see ``Runtime.messages``)."""
        return await asyncio.to_thread(
            history.messages, self._core, session_id, owner, limit, before
        )

    async def fork(
        self, session_id: str, *, revision: int | None = None, owner: str | None = None
    ) -> str:
        """A new session from revision ``revision`` (see ``Runtime.fork``)."""
        return await asyncio.to_thread(history.fork, self._core, session_id, owner, revision)

    async def rollback(
        self, session_id: str, *, revision: int, owner: str | None = None
    ) -> SessionView:
        """Append a revision equal to revision ``revision``'s (see ``Runtime.rollback``)."""
        back = await asyncio.to_thread(history.rollback, self._core, session_id, owner, revision)
        return session_view(back)

    async def delete_session(self, session_id: str, *, owner: str | None = None) -> None:
        """Delete a session (see ``Runtime.delete_session``)."""
        self._core.check_open()
        await asyncio.to_thread(self._core.delete_session, session_id, owner)

    async def list_sessions(
        self, owner: str | None, cursor: str | None = None, limit: int = 100
    ) -> SessionPage:
        """A page of stored sessions of ``owner`` (every owner when None), by id."""
        return await asyncio.to_thread(self._core.list_sessions, owner, cursor, limit)

    async def stored_page(
        self,
        owner: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
        *,
        quarantined: int = 20,
    ) -> StoredPage:
        """How many sessions are stored, a page of them (``owner``'s, after ``cursor``),
        and the ``quarantined`` newest snapshots that failed to decode (also while draining)."""
        return await asyncio.to_thread(self._core.stored_page, owner, cursor, limit, quarantined)

    async def ready(self) -> None:
        """Return when the runtime serves requests (for a readiness probe).

        Raises:
            RuntimeClosed: it is draining or closed.
            StoreUnavailable: its store did not answer.
        """
        await asyncio.to_thread(self._core.ready)

    async def passivate(self, session_id: str) -> bool:
        """Save (if needed) and stop a session's actor; False if it was not live."""
        core = self._core
        core.check_open()
        reply = self._reply()
        core.tell_supervisor(core.passivate_message(session_id, reply, kill=False), reply)
        return bool(await reply.wait())

    async def kill(self, session_id: str) -> bool:
        """Stop a session's actor without saving; False if it was not live."""
        core = self._core
        core.check_open()
        reply = self._reply()
        core.tell_supervisor(core.passivate_message(session_id, reply, kill=True), reply)
        return bool(await reply.wait())

    async def snapshot(self, session_id: str) -> int:
        """Save a live session now; its snapshot's size in bytes (0 if not live)."""
        core = self._core
        core.check_open()
        reply = self._reply()
        if core.ask_live(session_id, core.snapshot_message(reply), reply, None):
            size: int = await reply.wait()
            return size
        return await asyncio.to_thread(core.snapshot_stored, session_id)

    async def inspect(self, session_id: str, *, revision: int | None = None) -> dict[str, Any]:
        """What a session holds, its actor's state and why it is live (see ``Runtime.inspect``)."""
        core = self._core
        core.check_open()
        if revision is not None:
            return await asyncio.to_thread(core.stored_inspect, session_id, revision)
        reply = self._reply()
        if core.ask_live(session_id, core.inspect_message(reply), reply, None):
            info: dict[str, Any] = await reply.wait()
            info["live"] = True
            return info
        return await asyncio.to_thread(core.stored_inspect, session_id)

    async def live_sessions(self) -> list[LiveSessionInfo]:
        """The live session actors, least recently used first."""
        self._core.check_open()
        return self._core.live_sessions()

    async def live_page(
        self,
        *,
        sort: LiveSort = "mailbox_depth",
        descending: bool = True,
        graph: str | None = None,
        owner: str | None = None,
        status: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> LivePage:
        """One page of the live actors in ``sort`` order (ties by session id), filtered by
        graph, owner and status (a session status, or ``running``/``idle``), with the
        number matching: a page of 100,000 live actors without building them all.

        Raises:
            InvalidInput: an unknown sort, a negative offset, a limit outside 1-1000.
        """
        self._core.check_open()
        return await asyncio.to_thread(
            functools.partial(
                self._core.live_page,
                sort=sort,
                descending=descending,
                graph=graph,
                owner=owner,
                status=status,
                offset=offset,
                limit=limit,
            )
        )

    async def stats(self) -> RuntimeStats:
        """Counters since the runtime opened, and the store's counts."""
        self._core.check_open()
        return await asyncio.to_thread(self._core.stats)

    async def sweep_now(self) -> None:
        """Run the periodic sweep now and wait for it (for tests)."""
        core = self._core
        core.check_open()
        reply = self._reply()
        core.tell_supervisor(core.sweep_message(reply), reply)
        await reply.wait()

    async def fire_due_timers(self) -> int:
        """Fire every timer due now and wait for their steps (see ``Runtime.fire_due_timers``)."""
        self._core.check_open()
        return await asyncio.to_thread(self._core.timer_firing.fire_now)

    async def due_timers(self, limit: int = 20) -> list[DueTimer]:
        """The sessions whose timers are due next, soonest first (one entry per session)."""
        self._core.check_open()
        return await asyncio.to_thread(self._core.store.due_timers, math.inf, limit)


def _share_message(user: str, access: Access | None, owner: str | None) -> Edit:
    member, checked = check_member(user, access)
    return Edit({}, (), None, owner or "admin", share=(member, checked))


def _edit_message(
    set: dict[str, Any] | None, unset: Iterable[str], goto: str | None, by: str
) -> Edit:
    if set is not None and not isinstance(set, dict):
        raise InvalidInput(f"set must be a dict of context keys to values, got {set!r}")
    if isinstance(unset, str):
        unset = [unset]
    if goto is not None and not isinstance(goto, str):
        raise InvalidInput(f"goto must be a task id (str), got {goto!r}")
    return Edit(dict(set or {}), tuple(unset), goto, by)
