"""SupervisorActor: activates, passivates, caps, restarts and expires session actors.

Threads: every method runs in the supervisor's own turn (see
`actors._ownership`). It never waits on the store or on user tasks: snapshot
reads, expiry scans and deletes, and mark-error saves run on its own small
store pool (`actors._store_jobs`, never the user task pool), and their results
come back as messages (``Loaded``, ``ExpiredFound``). A stuck user task can
therefore delay only its own session.

The supervisor is the only writer of the live index's membership, and it is one
actor, so everything that changes which sessions are live is serial: two
concurrent first uses of one id activate it once, and an activation of a
session whose previous actor is still stopping waits until that actor has
stopped (and its last save has completed) before loading it from the store.
While a store job about an id is under way (a load, an expiry delete, a
mark-error save), the id is in ``_loading`` and its activations wait there.

The pieces: activation and eviction are here; restart intensity is the pure
`RestartIntensity`; sweep decisions are the pure functions of `actors._sweeps`,
and each removal re-checks its condition under the index lock.

It keeps its own index (``LiveIndex``) and stops its actors itself; pykka's
``ActorRegistry`` is never used (its removal is O(n)).
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pykka

from actors._live_index import LiveEntry
from actors._ownership import Owned
from actors._restarts import RestartIntensity
from actors._services import ActorServices
from actors._session_actor import SessionActor
from actors._store_jobs import delete_expired, find_expired, is_expired, load_sessions, mark_error
from actors._sweeps import expired_and_unused, idle_horizon, idle_passivations
from actors.dispatcher import DispatcherActor
from actors.messages import (
    Activate,
    ActorCrashed,
    ActorStopped,
    ExpiredFound,
    Forget,
    Hibernate,
    Inspect,
    Kill,
    Loaded,
    LoadedMany,
    Passivate,
    PassivateRequest,
    Reply,
    Retire,
    Shutdown,
    Snapshot,
    Step,
    Sweep,
    ViewSession,
)
from flow._errors import (
    ActorflowError,
    RuntimeClosed,
    SessionNotFound,
    StoreUnavailable,
)
from flow._session import Session, SessionStatus
from flow._sharing import allows

__all__ = ["SupervisorActor"]

#: Snapshot reads handed to the store pool as one job (one ``load_many``) at most
#: (see `_flush_loads`; at most the stores' ``LOAD_MANY_LIMIT``).
LOAD_BATCH = 128

#: Why a session is live when a request activated it.
ACTIVATED = "activated by a request"


class SupervisorActor(DispatcherActor, Owned):
    """The registry of live sessions (one per runtime, started by the runtime).

    Args:
        services: the runtime's shared resources; ``services.index`` is the
            live index this supervisor maintains.
    """

    def __init__(self, services: ActorServices) -> None:
        super().__init__()
        self._services = services
        self._settings = services.settings
        self._index = services.index
        self._incarnations = 0
        self._waiting: defaultdict[str, list[Activate]] = defaultdict(list)
        self._loading: dict[str, list[Activate]] = {}
        self._reasons: dict[str, str] = {}
        # Sessions being marked ``error``, by the incarnation that crashed: each
        # counts as stopping until its mark is stored, as a passivation does.
        self._marking: dict[str, int] = {}
        self._restarts = RestartIntensity(
            services.settings.max_restarts, services.settings.restart_window
        )
        self._deleting: set[str] = set()
        self._shutdown: Shutdown | None = None
        self._shutdown_replies: list[Reply] = []
        self._stopping_refs: dict[str, pykka.ActorRef[Any]] = {}
        self._to_load: list[str] = []

    def on_receive(self, message: Any) -> Any:
        """Handle one message; the supervisor itself never dies of a bad one."""
        try:
            self._handle(message)
        except Exception as exc:
            self._services.log.exception("supervisor_error", message=type(message).__name__)
            self._answer_failure(message, exc)
        # Reads wait while more messages are queued (they may be activations too),
        # so that a burst of activations is read by one store job, not one each.
        # A non-empty mailbox means this runs again, so no read is left behind.
        if self._to_load and (len(self._to_load) >= LOAD_BATCH or self.actor_inbox.empty()):
            self._flush_loads()
        return None

    def _answer_failure(self, message: Any, exc: Exception) -> None:
        """Answer whoever waits on ``message`` after it failed unexpectedly (nobody hangs)."""
        error = StoreUnavailable(f"the supervisor failed: {type(exc).__name__}: {exc}")
        if isinstance(message, Activate):
            self._fail(message, error)
        elif isinstance(message, ActorStopped):
            for step in message.steps:
                step.reply(error)
        elif isinstance(message, PassivateRequest | Sweep | Forget | Shutdown | ExpiredFound):
            reply = message.reply
            if reply is not None:
                reply(error)

    def _handle(self, message: Any) -> None:
        if isinstance(message, Activate):
            self._activate(message)
        elif isinstance(message, LoadedMany):
            for loaded in message.loaded:
                self._loaded(loaded)
        elif isinstance(message, Loaded):
            self._loaded(message)
        elif isinstance(message, ActorStopped):
            self._stopped(message)
        elif isinstance(message, ActorCrashed):
            self._crashed(message)
        elif isinstance(message, PassivateRequest):
            self._passivate_request(message)
        elif isinstance(message, Sweep):
            self._sweep(message)
        elif isinstance(message, ExpiredFound):
            self._expired_found(message)
        elif isinstance(message, Forget):
            self._forget(message)
        elif isinstance(message, Shutdown):
            self._begin_shutdown(message)
        else:
            raise TypeError(f"supervisor got an unknown message {message!r}")

    # --- store jobs ------------------------------------------------------------------------

    def _submit(self, job: Callable[..., None], *args: Any) -> bool:
        """Run ``job(services, *args)`` on the store pool; False if the pool is shut down."""
        try:
            self._services.store_pool.submit(job, self._services, *args)
        except RuntimeError:  # the pool is shut down: the runtime is closing
            return False
        return True

    def _begin_job(self, session_id: str, waiting: list[Activate]) -> None:
        """Hold ``session_id``'s activations until a store job about it reports ``Loaded``."""
        self._loading.setdefault(session_id, []).extend(waiting)

    def _job_refused(self, session_ids: list[str]) -> None:
        closed = RuntimeClosed("the runtime is closing")
        for sid in session_ids:
            self._reasons.pop(sid, None)
            for activation in self._loading.pop(sid, []):
                self._fail(activation, closed)
        self._maybe_finish_shutdown()

    # --- activation --------------------------------------------------------------------

    def _activate(self, message: Activate) -> None:
        sid = message.session_id
        if self._shutdown is not None:
            self._fail(message, RuntimeClosed("the runtime is closing"))
            return
        if sid in self._deleting:
            self._fail(message, SessionNotFound(sid))
            return
        if self._index.stopping(sid):
            self._waiting[sid].append(message)
            return
        loading = self._loading.get(sid)
        if loading is not None:
            loading.append(message)
            return
        entry = self._index.get(sid)
        if entry is not None and entry.ref is None and self._wake(sid):
            self._deliver(message)
            return
        if entry is not None and entry.ref is not None and entry.ref.is_alive():
            self._deliver(message)
            return
        if entry is not None:  # its actor died without telling: forget it
            self._index.remove(sid, when=lambda _: True)
            self._forget_stopped(sid, entry.incarnation)
        preloaded = message.preloaded
        if (
            preloaded is not None
            and message.epoch == self._index.epoch
            and not is_expired(self._services, preloaded)
        ):
            self._loading[sid] = [message]
            self._loaded(Loaded(sid, preloaded))
            return
        self._load(sid, [message], ACTIVATED)

    def _load(self, session_id: str, waiting: list[Activate], reason: str) -> None:
        """Queue a snapshot read of ``session_id``; ``waiting`` get the session once started."""
        self._begin_job(session_id, waiting)
        self._reasons[session_id] = reason
        self._to_load.append(session_id)

    def _flush_loads(self) -> None:
        """Hand the queued snapshot reads to the store pool, ``LOAD_BATCH`` ids a job
        (each job one store read and one ``LoadedMany`` back)."""
        queued, self._to_load = self._to_load, []
        for start in range(0, len(queued), LOAD_BATCH):
            batch = queued[start : start + LOAD_BATCH]
            if not self._submit(load_sessions, batch):
                self._job_refused(batch)

    def _loaded(self, message: Loaded) -> None:
        sid = message.session_id
        waiting = self._loading.pop(sid, [])
        reason = self._reasons.pop(sid, ACTIVATED)
        marked = self._marking.pop(sid, None)
        if marked is not None:
            self._forget_stopped(sid, marked)
            waiting.extend(self._waiting.pop(sid, []))
        outcome = message.outcome
        error: BaseException | None = None
        if self._shutdown is not None:
            error = RuntimeClosed("the runtime is closing")
        elif sid in self._deleting or outcome is None:
            error = SessionNotFound(sid)
        elif isinstance(outcome, ActorflowError):
            error = outcome
        elif isinstance(outcome, BaseException):
            error = StoreUnavailable(f"session {sid!r} could not be loaded: {outcome}")
        else:
            try:
                self._start(sid, reason, outcome)
            except ActorflowError as exc:
                error = exc
            except RuntimeError as exc:  # the dispatcher is shut down: the runtime is closing
                error = RuntimeClosed(f"the runtime is closing ({exc})")
        for activation in waiting:
            if error is None:
                self._deliver(activation)
            else:
                self._fail(activation, error)
        self._maybe_finish_shutdown()

    def _start(self, session_id: str, reason: str, session: Session) -> LiveEntry:
        """Start the actor of a loaded session; evict LRU beyond max_live."""
        graph = self._services.graphs.find(session.graph_id, session.graph_version)
        if graph is None:
            # Migrations run where the snapshot is read (`pin_version`), never here.
            raise self._services.graphs.unavailable(session)
        self._evict_for_one()
        self._incarnations += 1
        now = self._services.clock()
        entry = LiveEntry(
            session_id=session_id,
            incarnation=self._incarnations,
            owner=session.metadata.owner,
            graph_id=session.graph_id,
            graph_version=graph.version,
            last_used=now,
            status=session.status._value_,
            current_task=session.current_task,
            revision=session.revision,
            request_count=session.metadata.request_count,
            expires_at=session.metadata.expires_at,
            members=session.metadata.members,
            activated_at=now,
            reason=reason,
        )
        entry.ref = self._services.dispatcher.spawn(
            SessionActor, self._services, session, graph, entry
        )
        self._index.add(entry)
        self._services.counters.add("activations")
        self._services.log.debug("session_activated", session_id=session_id, reason=reason)
        return entry

    # --- hibernation ---------------------------------------------------------------------

    def _wake(self, session_id: str) -> bool:
        """Give a hibernated session a new actor (it decodes the bytes in its own turn);
        False if it is not hibernated. A session whose graph version is no longer
        served is passivated instead, so that its activation migrates it."""
        entry = self._index.hibernated(session_id)
        if entry is None or entry.frozen is None:
            return False
        graph = self._services.graphs.find(entry.graph_id, entry.graph_version)
        if graph is None:
            if self._remove_and_tell(session_id, Passivate("version unserved"), lambda _: True):
                self._passivated(session_id, "version unserved")
            return False
        self._incarnations += 1
        woken = self._index.waking(entry)
        ref = self._services.dispatcher.spawn(
            SessionActor, self._services, entry.frozen, graph, woken
        )
        self._index.wake(woken, ref, self._incarnations)
        self._services.counters.add("wakes")
        return True

    def _hibernate_idle(self, now: float) -> None:
        """Tell the actors idle for ``hibernate_after`` to hibernate (each re-checks)."""
        after = self._settings.hibernate_after
        if after <= 0:
            return
        for entry in self._index.awake_since(now - after):
            ref = entry.ref
            if entry.pending == 0 and ref is not None:
                try:
                    ref.tell(Hibernate(entry.last_used))
                except pykka.ActorDeadError:
                    continue

    # --- eviction ------------------------------------------------------------------------

    def _evict_for_one(self) -> None:
        excess = len(self._index) + 1 - self._settings.max_live
        if excess <= 0:
            return
        for entry in self._index.eviction_candidates(excess):
            if self._remove_and_tell(entry.session_id, Passivate("evicted"), lambda _: True):
                self._services.counters.add("evictions")
                self._services.log.info("session_evicted", session_id=entry.session_id)

    def _deliver(self, message: Activate) -> None:
        """Send an activation's step (or answer its reply) now that the session is live."""
        if message.ask is not None:
            self._send_ask(message.session_id, message.ask, message.owner)
            return
        if message.step is None:
            if message.reply is not None:
                entry = self._index.get(message.session_id)
                if (
                    entry is not None
                    and message.owner is not None
                    and not allows(entry.owner, entry.members, message.owner, "read")
                ):
                    message.reply(SessionNotFound(message.session_id))
                else:
                    message.reply(True)
            return
        self._send_step(message.step, message.owner, message.on_busy == "reject")

    def _send_step(self, step: Step, owner: str | None, reject: bool) -> None:
        # A second try: the actor may have hibernated since the activation saw it live.
        for _ in range(2):
            try:
                entry = self._index.send(
                    step.session_id,
                    step,
                    now=self._services.clock(),
                    owner=owner,
                    step=True,
                    reject_if_busy=reject,
                    max_pending=self._settings.max_pending,
                )
            except ActorflowError as exc:
                step.reply(exc)
                return
            if entry is not None or not self._wake(step.session_id):
                break
        if entry is None:
            step.reply(StoreUnavailable(f"session {step.session_id!r} could not be started"))

    def _send_ask(
        self, session_id: str, ask: Inspect | ViewSession | Snapshot, owner: str | None
    ) -> None:
        """Send a question to a live session (woken if it hibernated meanwhile)."""
        for _ in range(2):
            try:
                entry = self._index.send(session_id, ask, owner=owner)
            except ActorflowError as exc:
                ask.reply(exc)
                return
            if entry is not None:
                return
            if not self._wake(session_id):
                break
        ask.reply(StoreUnavailable(f"session {session_id!r} could not be started"))

    @staticmethod
    def _fail(message: Activate, error: BaseException) -> None:
        if message.step is not None:
            message.step.reply(error)
        elif message.ask is not None:
            message.ask.reply(error)
        elif message.reply is not None:
            message.reply(error)

    # --- stopping and restarting ----------------------------------------------------------

    def _remove_and_tell(
        self,
        session_id: str,
        message: Any,
        when: Callable[[LiveEntry], bool],
        incarnation: int | None = None,
    ) -> bool:
        """Take the session out of the index if ``when`` holds (under the index lock), then
        tell its actor ``message`` (to stop it).

        Every request sent to the actor before the removal is ahead of
        ``message`` in its mailbox, and none can be sent after it.
        """
        entry = self._index.remove(session_id, incarnation=incarnation, when=when)
        if entry is None:
            return False
        if entry.ref is None:
            # hibernated: no actor, and its bytes are committed, so it has stopped
            self._index.stopped(session_id, entry.incarnation)
            if isinstance(message, Passivate) and message.reason != "shutdown":
                # at rest in the store now (as an actor's passivation tells it): the
                # compactor's queue, never a wait on the store
                self._services.store.passivated(session_id)
            return entry.frozen is not None
        try:
            entry.ref.tell(message)
        except pykka.ActorDeadError:
            self._index.stopped(session_id, entry.incarnation)
            return False
        self._stopping_refs[session_id] = entry.ref
        return True

    def _passivate_request(self, message: PassivateRequest) -> None:
        sid = message.session_id
        if message.kill:
            error = StoreUnavailable(f"session {sid!r} was killed; its step was not committed")
            done = self._remove_and_tell(sid, Kill(True, error), lambda _: True)
        elif message.reason == "completed":
            done = self._remove_and_tell(
                sid,
                Passivate("completed"),
                lambda e: e.pending == 0 and e.status == SessionStatus.COMPLETED.value,
            )
        else:
            done = self._remove_and_tell(sid, Passivate(message.reason), lambda _: True)
        if done and not message.kill:
            self._passivated(sid, message.reason)
        if message.reply is not None:
            message.reply(done)

    def _passivated(self, session_id: str, reason: str) -> None:
        self._services.counters.add("passivations")
        self._services.log.debug("session_passivated", session_id=session_id, reason=reason)

    def _crashed(self, message: ActorCrashed) -> None:
        self._remove_and_tell(
            message.session_id, Retire(), lambda _: True, incarnation=message.incarnation
        )

    def _stopped(self, message: ActorStopped) -> None:
        sid = message.session_id
        waiting = [Activate(sid, None, step) for step in message.steps]
        waiting.extend(self._waiting.pop(sid, []))
        if self._shutdown is not None:
            self._forget_stopped(sid, message.incarnation)
            closed = RuntimeClosed("the runtime is closing")
            for activation in waiting:
                self._fail(activation, closed)
            self._maybe_finish_shutdown()
            return
        if message.crashed is not None:
            # Decided before the id stops counting as stopping, so that nobody
            # loads the snapshot before it is restarted or marked ``error``.
            if self._restart(sid, message.crashed, waiting):
                self._forget_stopped(sid, message.incarnation)
            else:
                self._marking[sid] = message.incarnation
            return
        self._forget_stopped(sid, message.incarnation)
        for activation in waiting:
            self._activate(activation)

    def _forget_stopped(self, session_id: str, incarnation: int) -> None:
        self._index.stopped(session_id, incarnation)
        if not self._index.stopping(session_id):
            self._stopping_refs.pop(session_id, None)

    def _restart(self, session_id: str, error: BaseException, waiting: list[Activate]) -> bool:
        """Restart a crashed session within the intensity limit (True), else mark it ``error``."""
        allowed, restarts = self._restarts.allow(session_id, time.monotonic())
        if not allowed:
            why = (
                f"session actor crashed {restarts + 1} times within "
                f"{self._settings.restart_window:g} s (last: {type(error).__name__}: {error})"
            )
            self._services.log.error("session_failed", session_id=session_id, detail=why)
            self._begin_job(session_id, waiting)
            if not self._submit(mark_error, session_id, why):
                self._job_refused([session_id])
                return True
            return False
        self._load(session_id, waiting, f"restarted after {type(error).__name__}: {error}")
        self._services.counters.add("restarts")
        self._services.log.warning(
            "session_restarted",
            session_id=session_id,
            error=type(error).__name__,
            detail=str(error),
            restarts_in_window=restarts,
        )
        return True

    # --- sweeping ------------------------------------------------------------------------

    def _sweep(self, message: Sweep) -> None:
        if self._shutdown is not None:
            if message.reply is not None:
                message.reply(True)
            return
        now = self._services.clock()
        horizon = idle_horizon(now, self._settings)
        for decision in idle_passivations(self._index.least_recent(horizon), now, self._settings):
            passivate = Passivate(decision.reason)
            if self._remove_and_tell(decision.session_id, passivate, decision.condition()):
                self._passivated(decision.session_id, decision.reason)
        self._hibernate_idle(now)
        if not self._submit(find_expired, now, message.reply) and message.reply is not None:
            message.reply(True)

    def _expired_found(self, message: ExpiredFound) -> None:
        found = message.session_ids
        if isinstance(found, BaseException):
            raise found
        gone: list[str] = []
        for sid in found:
            if sid in self._loading or sid in self._deleting or self._index.stopping(sid):
                continue  # a store job or a stopping actor's last save is under way
            if self._index.get(sid) is not None:
                error = SessionNotFound(sid, f"session {sid!r} expired")
                unused = functools.partial(expired_and_unused, message.now)
                if not self._remove_and_tell(sid, Kill(False, error), unused):
                    continue  # refreshed, or a request is in hand: it lives on
            gone.append(sid)
        if not gone:
            if message.reply is not None:
                message.reply(True)
            return
        for sid in gone:
            self._begin_job(sid, [])
        # One job deletes them all, so that the store commits them in one group.
        if not self._submit(delete_expired, gone, message.reply):
            self._job_refused(gone)
            if message.reply is not None:
                message.reply(RuntimeClosed("the runtime is closing"))

    # --- deleting and shutting down ------------------------------------------------------

    def _forget(self, message: Forget) -> None:
        sid = message.session_id
        if message.release:
            self._deleting.discard(sid)
            message.reply(True)
            return
        self._deleting.add(sid)
        error = SessionNotFound(sid, f"session {sid!r} was deleted")
        self._remove_and_tell(sid, Kill(False, error), lambda _: True)
        for activation in self._waiting.pop(sid, []):
            self._fail(activation, error)
        message.reply(True)

    def _begin_shutdown(self, message: Shutdown) -> None:
        self._shutdown = message
        self._shutdown_replies.append(message.reply)
        closed = RuntimeClosed("the runtime is closing")
        for waiting in self._waiting.values():
            for activation in waiting:
                self._fail(activation, closed)
        self._waiting.clear()
        error = message.force_error
        passivate = Passivate("shutdown", force=error is not None, error=error)
        if error is not None:
            # A forced shutdown also cuts short actors that were already stopping.
            for ref in list(self._stopping_refs.values()):
                try:
                    ref.tell(passivate)
                except pykka.ActorDeadError:
                    continue
        for entry in self._index.entries():
            if self._remove_and_tell(entry.session_id, passivate, lambda _: True):
                self._passivated(entry.session_id, "shutdown")
        self._maybe_finish_shutdown()

    def _maybe_finish_shutdown(self) -> None:
        """Answer every ``Shutdown`` received once no actor is live, stopping or loading."""
        if self._shutdown is None or not self._shutdown_replies:
            return
        if len(self._index) or self._index.stopping_count() or self._loading:
            return
        replies, self._shutdown_replies = self._shutdown_replies, []
        for reply in replies:
            reply(True)
