"""The machinery behind ``Runtime`` and ``AsyncRuntime``: one instance per open runtime.

It owns the store, the dispatcher, the supervisor, the task pool, the event
loop thread (or uses the loop that opened an ``AsyncRuntime`` with
``task_loop="caller"``) and the timer thread, and turns facade calls into messages. Every
method here returns at once or blocks only on the store (the facades decide
how to wait: a sync caller blocks on a future, an async caller awaits one).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from operator import attrgetter
from pathlib import Path
from typing import Any, Literal

import msgspec

from actors._event_hub import EventHub, Subscriber
from actors._live_index import LiveIndex
from actors._services import ActorServices, Settings
from actors._session_actor import session_document
from actors._store_jobs import pin_version
from actors._supervisor import SupervisorActor
from actors._task_pool import TaskPool
from actors._timers import Timer, Timers
from actors.dispatcher import Dispatcher
from actors.messages import (
    Activate,
    Edit,
    Forget,
    Inspect,
    PassivateRequest,
    Reply,
    Shutdown,
    Snapshot,
    Step,
    Sweep,
    ViewSession,
)
from flow._context import DEFAULT_MAX_MESSAGES
from flow._errors import (
    ActorflowError,
    InvalidInput,
    RuntimeClosed,
    SessionNotFound,
)
from flow._graph import Graph
from flow._idempotency import KeyRetention, check_key, input_digest
from flow._logging import get_logger
from flow._session import Session
from flow._sharing import Need, allows
from flow._step import new_session
from flow._versions import GraphRegistry, Migration
from flow.stores import open_store
from flow.stores._fenced import FencedStore
from flow.stores._log import LogPolicy
from flow.stores._protocol import SessionPage, SessionStore
from runtime._bridge import AsyncReply, HostLoop, LoopThread, SyncReply
from runtime._cluster import Cluster, forwarded_grant
from runtime._config import RuntimeConfig
from runtime._live_page import LivePage, live_info, live_page
from runtime._session_quota import SessionQuota
from runtime._timer_firing import TimerFiring
from runtime._views import (
    LiveSessionInfo,
    RuntimeStats,
    SessionMetadataView,
    SessionView,
    StoredPage,
    TimerView,
)

__all__ = ["RuntimeCore", "open_cores", "session_view"]

_log = get_logger("actorflow.runtime")

OnBusy = Literal["enqueue", "reject"]
StepMode = Literal["step", "run"]

#: Threads of the supervisor's store pool (snapshot reads, expiry, mark-error saves).
STORE_THREADS = 4

#: How many quarantined rows ``stats()`` counts at most.
QUARANTINE_COUNT_LIMIT = 10_000


_OPEN: weakref.WeakSet[RuntimeCore] = weakref.WeakSet()


def open_cores() -> list[RuntimeCore]:
    """Every runtime core of this process that is not closed yet."""
    return [core for core in list(_OPEN) if not core.closed]


def session_view(session: Session) -> SessionView:
    """A frozen, independent view of ``session``."""
    meta = session.metadata
    return SessionView(
        session_id=session.session_id,
        graph=session.graph_id,
        current_task=session.current_task,
        status=session.status._value_,
        context=session.context.to_dict(),
        chat_history=[m.to_dict() for m in session.context.chat_history.messages],
        metadata=SessionMetadataView(
            owner=meta.owner,
            created_at=meta.created_at,
            last_accessed=meta.last_accessed,
            request_count=meta.request_count,
            client_addr=meta.client_addr,
            expires_at=meta.expires_at,
            members=dict(meta.members),
        ),
        revision=session.revision,
        status_message=session.status_message,
        timers=tuple(TimerView(t.name, t.due, t.wake) for t in session.timers),
        graph_version=session.graph_version,
    )


def _check_config(config: RuntimeConfig) -> None:
    positive = (
        "idle_timeout",
        "wait_timeout",
        "session_ttl",
        "step_timeout",
        "restart_window",
        "sweep_interval",
        "timer_poll_interval",
    )
    for name in positive:
        value = getattr(config, name)
        if not value > 0:
            raise InvalidInput(f"RuntimeConfig.{name} must be > 0, got {value!r}")
    at_least_one = ("max_live", "max_pending", "dispatcher_threads", "task_threads", "max_chain")
    for name in (*at_least_one, "sweep_batch", "max_session_bytes", "timer_fire_rate"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise InvalidInput(f"RuntimeConfig.{name} must be an int >= 1, got {value!r}")
    if config.max_restarts < 0:
        raise InvalidInput(f"RuntimeConfig.max_restarts must be >= 0, got {config.max_restarts}")
    if config.max_sessions_per_user < 0:
        raise InvalidInput(
            "RuntimeConfig.max_sessions_per_user must be >= 0 (0: no limit), "
            f"got {config.max_sessions_per_user}"
        )
    if config.drain_timeout < 0:
        raise InvalidInput(f"RuntimeConfig.drain_timeout must be >= 0, got {config.drain_timeout}")
    LogPolicy.parse(config.history_retention)  # raises InvalidInput naming the format
    if config.durability not in ("fsync", "commit", "passivate"):
        raise InvalidInput(
            "RuntimeConfig.durability must be 'fsync', 'commit' or 'passivate', "
            f"got {config.durability!r}"
        )


def _release_if_failed(quota: SessionQuota, owner: str, saved: Future[None]) -> None:
    """On the store writer: a creation that did not commit gives its quota back."""
    if saved.cancelled() or saved.exception() is not None:
        quota.release(owner)


def _key_retention(history_retention: str) -> KeyRetention:
    """How long idempotency keys are remembered: never beyond the history."""
    policy = LogPolicy.parse(history_retention)
    return KeyRetention(policy.keep_revisions, policy.keep_seconds)


class RuntimeCore:
    """Everything one open runtime runs (see the module docstring)."""

    def __init__(
        self,
        data_dir: str | Path,
        graphs: Iterable[Graph],
        config: RuntimeConfig,
        store: SessionStore | None,
        migrations: Iterable[Migration] = (),
        task_loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        _check_config(config)
        self.config = config
        self._task_loop = task_loop
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.registry = GraphRegistry(graphs, migrations)
        if store is not None:
            _check_store(store)
        self._own_store = store is None
        opened = (
            open_store(
                config.store,
                self.data_dir,
                config.durability,
                LogPolicy.parse(config.history_retention),
            )
            if store is None
            else store
        )
        self.cluster = Cluster.join(opened, config)
        self.store: SessionStore = opened if self.cluster is None else self.cluster.store
        self.index = LiveIndex()
        self.quota = SessionQuota(self.store, config.max_sessions_per_user)
        self.draining = False
        self.closed = False
        self._close_lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self._drain_deadline: float | None = None
        self._cleanup: list[Callable[[], object]] = []
        try:
            self._start()
        except BaseException:
            self._teardown()
            raise
        _OPEN.add(self)

    def _start(self) -> None:
        config = self.config
        if self._own_store:
            self._cleanup.append(self.store.close)
        self.timers = Timers()
        self._cleanup.append(self.timers.close)
        self.loop_thread: LoopThread | HostLoop = (
            LoopThread() if self._task_loop is None else HostLoop(self._task_loop)
        )
        self._cleanup.append(self.loop_thread.close)
        self.task_pool = TaskPool(config.task_threads, name="actorflow-task")
        self._cleanup.append(lambda: self.task_pool.shutdown(wait=False, cancel_futures=True))
        self.store_pool = TaskPool(STORE_THREADS, name="actorflow-store")
        self._cleanup.append(lambda: self.store_pool.shutdown(wait=False, cancel_futures=True))
        # One caller at a time reads a snapshot on its own thread; the others leave
        # the read to the store pool (64 threads reading SQLite at once spend more on
        # the GIL than on the reads).
        self._caller_reads = threading.BoundedSemaphore(1)
        self.timer_firing = TimerFiring(
            self.store,
            self._fire_timer,
            config.clock,
            rate=config.timer_fire_rate,
            poll_interval=config.timer_poll_interval,
            shared=self.cluster is not None,
        )
        self._cleanup.append(self.timer_firing.close)
        self.dispatcher = Dispatcher(config.dispatcher_threads, name="actorflow")
        self._cleanup.append(lambda: self.dispatcher.shutdown(timeout=10))
        self.services = ActorServices(
            settings=Settings(
                idle_timeout=config.idle_timeout,
                wait_timeout=config.wait_timeout,
                max_live=config.max_live,
                session_ttl=config.session_ttl,
                max_pending=config.max_pending,
                step_timeout=config.step_timeout,
                max_restarts=config.max_restarts,
                restart_window=config.restart_window,
                durability=config.durability,
                max_chain=config.max_chain,
                sweep_batch=config.sweep_batch,
                max_session_bytes=config.max_session_bytes,
                hibernate_after=config.hibernate_after,
                key_retention=_key_retention(config.history_retention),
            ),
            store=self.store,
            graphs=self.registry,
            index=self.index,
            dispatcher=self.dispatcher,
            task_pool=self.task_pool,
            loop=self.loop_thread.loop,
            timers=self.timers,
            clock=config.clock,
            store_pool=self.store_pool,
            events=EventHub(
                config.stream_buffer,
                max_tails_per_session=config.max_tails_per_session,
                max_tails=config.max_tails,
            ),
            timer_alarm=self.timer_firing.alarm,
        )
        self.supervisor = self.dispatcher.spawn(SupervisorActor, self.services)
        self.services.supervisor = self.supervisor
        if self.cluster is not None:
            self.cluster.attach(self.services)
            self._cleanup.append(self.cluster.close)
        self._sweeper: Timer = self.timers.call_every(config.sweep_interval, self._tick)
        self.timer_firing.start()

    def _fire_timer(self, session_id: str, reply: Reply) -> None:
        """The timer firing's way in: a timer step through the normal path (never blocks)."""
        self.submit_step(session_id, None, "step", "enqueue", None, reply, fire_timer=True)

    def _tick(self) -> None:
        self.services.tell_supervisor(Sweep())

    def _teardown(self) -> None:
        for step in reversed(self._cleanup):
            try:
                step()
            except Exception:
                _log.exception("runtime_teardown_step_failed")
        self._cleanup.clear()

    # --- gates ----------------------------------------------------------------------------

    def check_open(self) -> None:
        """Raise ``RuntimeClosed`` once draining or closed."""
        if self.draining or self.closed:
            raise RuntimeClosed(
                "the runtime is closed" if self.closed else "the runtime is draining"
            )

    def graphs(self) -> list[Graph]:
        """The default version of every graph served."""
        return self.registry.defaults()

    def graph(self, graph_id: str, version: str | None = None) -> Graph:
        """The graph ``graph_id`` at ``version`` (default: the newest given).

        Raises:
            GraphNotFound: no such graph, or no such version of it served.
        """
        return self.registry.get(graph_id, version)

    def reload(self, graphs: Iterable[Graph], migrations: Iterable[Migration]) -> None:
        """Serve ``graphs`` and ``migrations`` too, from the next activation on.

        Every version served so far stays served: live sessions keep their
        graph object, and stored ones keep the version they are pinned to.
        """
        self.check_open()
        self.registry.swap(graphs, migrations)

    # --- requests (non-blocking) -------------------------------------------------------------

    def submit_step(
        self,
        session_id: str,
        input: Any,
        mode: StepMode,
        on_busy: OnBusy,
        owner: str | None,
        reply: Reply,
        *,
        preload: bool = False,
        key: str | None = None,
        fire_timer: bool = False,
        edit: Edit | None = None,
        stream: Subscriber | None = None,
    ) -> None:
        """Send a step to the session's actor (activating it if needed); ``reply`` answers.

        With ``preload`` (a sync caller, which may block), a session that is not
        live is read from the store on the calling thread rather than by the
        supervisor's store pool (one hop less), unless another caller is reading
        one already. A step with an idempotency ``key`` carries it and the digest
        of its mode and input (made here, off the actor), see ``flow._idempotency``.
        A streamed step carries its ``stream`` (`actors._event_hub`).
        A ``fire_timer`` step (the timer firing's) fires the session's due timer.
        """
        try:
            self.check_open()
            if on_busy not in ("enqueue", "reject"):
                raise InvalidInput(f"on_busy must be 'enqueue' or 'reject', got {on_busy!r}")
            if mode not in ("step", "run"):
                raise InvalidInput(f"mode must be 'step' or 'run', got {mode!r}")
            if not isinstance(session_id, str):
                raise SessionNotFound(str(session_id))
            context = contextvars.copy_context()
            if fire_timer:
                message = Step(session_id, None, mode, reply, context, fire_timer=True)
            elif key is None:
                message = Step(session_id, input, mode, reply, context, edit=edit, stream=stream)
            else:
                digest = input_digest(mode, input)
                message = Step(
                    session_id, input, mode, reply, context, check_key(key), digest, stream=stream
                )
            if self.cluster is not None:
                grant = forwarded_grant()  # a forwarded request runs under its forwarder's grant
                if grant is not None:
                    message = msgspec.structs.replace(message, epoch=grant[0], deadline=grant[1])
            entry = self.index.send(
                session_id,
                message,
                now=self.config.clock(),
                owner=owner,
                step=True,
                reject_if_busy=on_busy == "reject",
                max_pending=self.config.max_pending,
            )
        except ActorflowError as exc:
            reply(exc)
            return
        if entry is not None:
            return
        if isinstance(reply, SyncReply | AsyncReply):
            reply.hold()  # in flight while it is activated (the index counts it once live)
        plain = Activate(session_id, owner, message, on_busy)
        activate: Activate | None = plain
        hibernated = preload and self.index.hibernated(session_id) is not None
        if preload and not hibernated and self._caller_reads.acquire(blocking=False):
            try:
                activate = self._preloaded(plain)
            finally:
                self._caller_reads.release()
        if activate is not None and not self.services.tell_supervisor(activate):
            reply(RuntimeClosed("the runtime is closed"))

    def _preloaded(self, activate: Activate) -> Activate | None:
        """Read the snapshot on the caller's thread, so the supervisor need not.

        A read error (an undecodable row, which the store has just quarantined;
        an unreachable store) answers the step at once (None is returned); a
        missing row is left to the supervisor, which reports it.
        """
        epoch = self.index.epoch
        try:
            session = self.store.load(activate.session_id)
            if session is not None:
                session = pin_version(self.services, session)
        except ActorflowError as exc:
            if activate.step is not None:
                activate.step.reply(exc)
            return None
        if session is None:
            return activate
        return msgspec.structs.replace(activate, preloaded=session, epoch=epoch)

    def ask_live(self, session_id: str, message: Any, reply: Reply, owner: str | None) -> bool:
        """Send ``message`` to a live session's actor; False (and ``reply`` ended) if not live."""
        try:
            entry = self.index.send(session_id, message, owner=owner)
        except ActorflowError as exc:
            reply(exc)
            return True
        if entry is None:
            if self.index.hibernated(session_id) is not None and self.services.tell_supervisor(
                Activate(session_id, owner, ask=message)
            ):
                return True  # the supervisor wakes it and sends it ``message``
            reply(None)
            return False
        return True

    def activate_in_cluster(self, session_id: str, owner: str | None, reply: Reply) -> None:
        """In a cluster, make a session that is not live here live (taking its lease) with
        no step: how a tail opened here sees the steps other daemons forward here.
        ``reply`` gets True, or the error (``LeaseHeldElsewhere``: live on another daemon)."""
        if self.cluster is None or self.index.get(session_id) is not None:
            reply(True)
            return
        self.tell_supervisor(Activate(session_id, owner, reply=reply), reply)

    def tell_supervisor(self, message: Any, reply: Reply) -> None:
        """Send ``message`` to the supervisor; ``reply`` gets ``RuntimeClosed`` if it is gone."""
        if not self.services.tell_supervisor(message):
            reply(RuntimeClosed("the runtime is closed"))

    def view_message(self, reply: Reply) -> ViewSession:
        """The message asking a live actor for a copy of its session."""
        return ViewSession(reply)

    def inspect_message(self, reply: Reply) -> Inspect:
        """The message asking a live actor to describe itself."""
        return Inspect(reply)

    def snapshot_message(self, reply: Reply) -> Snapshot:
        """The message asking a live actor to save now."""
        return Snapshot(reply)

    def passivate_message(self, session_id: str, reply: Reply, *, kill: bool) -> PassivateRequest:
        """The message asking the supervisor to passivate (or kill) a session."""
        return PassivateRequest(session_id, "requested", reply, kill=kill)

    def sweep_message(self, reply: Reply) -> Sweep:
        """The message asking the supervisor to sweep now."""
        return Sweep(reply)

    # --- requests (blocking on the store) ---------------------------------------------------

    def new_session(
        self,
        graph_id: str,
        owner: str,
        context: dict[str, Any] | None,
        client_addr: str | None,
        *,
        max_messages: int | None = DEFAULT_MAX_MESSAGES,
        session_id_key: str | None = None,
        version: str | None = None,
    ) -> tuple[Session, Future[None]]:
        """Build a new session and queue its revision 0 (wait on the future for the commit)."""
        self.check_open()
        graph = self.graph(graph_id, version)
        self.quota.reserve(owner)
        now = self.config.clock()
        session = new_session(
            graph,
            owner=owner,
            context=context,
            client_addr=client_addr,
            now=now,
            expires_at=now + self.config.session_ttl,
            max_messages=max_messages,
        )
        if session_id_key is not None:
            session.context.set(session_id_key, session.session_id)
        try:
            saved = self.store.save(session, expected_revision=None)
        except BaseException:
            self.quota.release(owner)
            raise
        saved.add_done_callback(functools.partial(_release_if_failed, self.quota, owner))
        return session, saved

    def load(
        self, session_id: str, owner: str | None, need: Need = "owner", *, lease: bool = False
    ) -> Session:
        """The stored session (after any stopping actor of it has saved).

        ``owner`` is the caller (None: anyone, an admin or the host app); ``need``
        what it must be allowed (``flow._sharing.allows``: the owner may do
        anything, a member what its access says). In a cluster the read takes no
        lease unless ``lease`` (a caller that saves what it read, fenced, needs it).

        Raises:
            SessionNotFound: it does not exist, or ``owner`` may not.
            LeaseHeldElsewhere: (a cluster) the session is live on another node.
        """
        self.index.wait_gone_of_stopping(session_id, self.config.drain_timeout)
        store = self.store
        if not lease and isinstance(store, FencedStore):
            session = store.read(session_id)
        else:
            session = store.load(session_id)
        if session is None or (
            owner is not None
            and not allows(session.metadata.owner, session.metadata.members, owner, need)
        ):
            raise SessionNotFound(session_id)
        return session

    def check_owner(self, session_id: str, owner: str | None, need: Need = "owner") -> None:
        """Raise ``SessionNotFound`` unless the session exists and (if given) ``owner``
        may do what ``need`` says (by default: only the session's owner)."""
        entry = self.index.get(session_id)
        if entry is not None:
            if owner is not None and not allows(entry.owner, entry.members, owner, need):
                raise SessionNotFound(session_id)
            return
        self.load(session_id, owner, need)

    def delete_session(self, session_id: str, owner: str | None) -> None:
        """Stop the session's actor without saving, then delete its row (blocking).

        Raises:
            SessionNotFound: no such session, or not ``owner``'s.
        """
        self.check_open()
        self.check_owner(session_id, owner)
        forgotten = SyncReply(self.index)
        self.tell_supervisor(Forget(session_id, forgotten), forgotten)
        forgotten.wait()
        try:
            existed = self.store.delete(session_id)
        finally:
            self.index.bump()
            released = SyncReply(self.index)
            self.tell_supervisor(Forget(session_id, released, release=True), released)
            released.wait()
        if not existed:
            raise SessionNotFound(session_id)
        if owner is not None:
            self.quota.release(owner)

    def list_sessions(self, owner: str | None, cursor: str | None, limit: int) -> SessionPage:
        """A page of stored sessions of ``owner``."""
        self.check_open()
        if not isinstance(limit, int) or limit < 1:
            raise InvalidInput(f"limit must be an int >= 1, got {limit!r}")
        return self.store.list(owner, cursor, limit)

    def stored_page(
        self, owner: str | None, cursor: str | None, limit: int, quarantined: int
    ) -> StoredPage:
        """How many sessions are stored, one page of them, the latest quarantined rows."""
        if not isinstance(limit, int) or limit < 1:
            raise InvalidInput(f"limit must be an int >= 1, got {limit!r}")
        page = self.store.list(owner, cursor, limit)
        rows = self.store.quarantined(quarantined) if quarantined > 0 else []
        return StoredPage(self.store.count(), page, rows)

    def ready(self) -> None:
        """Return when the runtime serves requests: not draining, and its store answers.

        Raises:
            RuntimeClosed: the runtime is draining or closed.
            StoreUnavailable: the store did not answer.
        """
        self.check_open()
        self.store.list(None, None, 1)

    def stored_inspect(self, session_id: str, revision: int | None = None) -> dict[str, Any]:
        """``inspect`` of a session that is not live (what its snapshot holds), or of one of
        its retained revisions.

        Raises:
            SessionNotFound: no such session.
            RevisionNotFound: ``revision`` is outside the retained history.
        """
        if revision is None:
            session = self.load(session_id, None)
            state, why = "passivated", "passivated (loaded from the store on its next request)"
        else:
            past = self.store.load(session_id, revision)
            if past is None:
                raise SessionNotFound(session_id)
            session, state, why = past, "past revision", f"revision {revision} of its history"
        return {
            **session_document(session, history_tail=10),
            "last_access": session.metadata.last_accessed,
            "live": False,
            "state": state,
            "pending": 0,
            "live_reason": f"not live: {why}",
        }

    def snapshot_stored(self, session_id: str) -> int:
        """``snapshot`` of a session that is not live: nothing to write (0)."""
        self.load(session_id, None)
        return 0

    # --- views -------------------------------------------------------------------------------

    def live_sessions(self) -> list[LiveSessionInfo]:
        """One ``LiveSessionInfo`` per live actor, least recently used first."""
        now = self.config.clock()
        entries = self.index.entries()
        entries.sort(key=attrgetter("last_used"))  # outside the index lock
        return [live_info(e, now) for e in entries]

    def live_page(self, **query: Any) -> LivePage:
        """One sorted, filtered page of the live actors (``runtime._live_page.live_page``)."""
        return live_page(self.index.entries(), self.config.clock(), **query)

    def stats(self) -> RuntimeStats:
        """Counters since open and the store's counts."""
        counters = self.services.counters
        depths = [max(e.pending, 0) for e in self.index.entries()]
        return RuntimeStats(
            live=len(self.index),
            activations=counters.activations,
            passivations=counters.passivations,
            evictions=counters.evictions,
            restarts=counters.restarts,
            expirations=counters.expirations,
            steps=self.index.steps,
            errors=self.index.errors,
            stored=self.store.count(),
            quarantined=len(self.store.quarantined(limit=QUARANTINE_COUNT_LIMIT)),
            mailbox_total=sum(depths),
            mailbox_max=max(depths, default=0),
            timers=self.services.timer_stats.snapshot(),
            hibernated=self.index.hibernated_count(),
            hibernations=counters.hibernations,
            wakes=counters.wakes,
        )

    # --- closing -----------------------------------------------------------------------------

    def begin_drain(self) -> None:
        """Refuse new requests from now on (``RuntimeClosed``); running ones go on.

        The drain timeout counts from here: ``drain_timeout`` seconds later, steps
        still running are answered ``RuntimeClosed`` even if ``close`` has not
        been called yet (a daemon's HTTP server may still be waiting on them).
        """
        with self._drain_lock:
            if self._drain_deadline is not None:
                return
            self.draining = True
            self.services.events.close_tails()
            timeout = self.config.drain_timeout
            self._drain_deadline = time.monotonic() + timeout
            if not self.closed:
                self.timers.call_later(timeout, self._drain_expired)

    def _drain_expired(self) -> None:
        """On the timer thread, ``drain_timeout`` after ``begin_drain``: cut running steps off."""
        if self.closed or self.index.in_flight == 0:
            return
        self.services.tell_supervisor(Shutdown(_completer(Future()), _drain_cut_off()))

    def close(self) -> None:
        """Drain, passivate every session, stop everything; idempotent."""
        self.begin_drain()
        self.timer_firing.close()
        with self._close_lock:
            if self.closed:
                return
            try:
                self._shut_actors()
            finally:
                self.closed = True
                self._sweeper.cancel()
                if not self._own_store:
                    try:
                        self.store.flush()
                    except ActorflowError:
                        _log.exception("store_flush_failed")
                self._teardown()

    def _shut_actors(self) -> None:
        timeout = self.config.drain_timeout
        deadline = self._drain_deadline or time.monotonic() + timeout
        drained = self.index.wait_drained(max(0.0, deadline - time.monotonic()))
        force = None if drained else _drain_cut_off()
        done: Future[Any] = Future()
        if not self.services.tell_supervisor(Shutdown(_completer(done), force)):
            return
        try:
            done.result(timeout=max(timeout, 5.0))
        except TimeoutError:
            forced: Future[Any] = Future()
            error = RuntimeClosed("the runtime closed before the step finished")
            self.services.tell_supervisor(Shutdown(_completer(forced), error))
            try:
                forced.result(timeout=5.0)
            except TimeoutError:
                _log.error("runtime_close_timed_out", live=len(self.index))
        try:
            self.supervisor.stop(block=True, timeout=5.0)
        except Exception:
            _log.exception("supervisor_stop_failed")


def _drain_cut_off() -> RuntimeClosed:
    return RuntimeClosed("the runtime closed before the step finished (drain timeout)")


def _completer(future: Future[Any]) -> Reply:
    def complete(outcome: Any) -> None:
        if future.done():
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    return complete


def _check_store(store: object) -> None:
    """Refuse a given store that lacks a method of ``SessionStore`` (say, one written for an
    earlier release, before ``passivated``), naming what it lacks, before anything opens.

    Raises:
        InvalidInput: a method is missing.
    """
    wanted = [name for name, value in vars(SessionStore).items() if callable(value)]
    missing = sorted(
        name
        for name in wanted
        if not name.startswith("_") and not callable(getattr(store, name, None))
    )
    if missing:
        raise InvalidInput(
            f"store {type(store).__name__} is not a SessionStore: it has no "
            + ", ".join(missing)
            + " (see flow/stores/_protocol.py)"
        )
