"""SupervisorActor: activates, passivates, caps, restarts and expires session actors.

The supervisor is the only writer of the live index's membership, and it is one
actor, so everything that changes which sessions are live is serial: two
concurrent first uses of one id activate it once, and an activation of a
session whose previous actor is still stopping waits until that actor has
stopped (and its last save has completed) before loading it from the store.

It keeps its own index (``LiveIndex``) and stops its actors itself; pykka's
``ActorRegistry`` is never used (its removal is O(n)).
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pykka

from actors._live_index import LiveEntry
from actors._pinning import pin_version, unserved
from actors._services import ActorServices
from actors._session_actor import SessionActor
from actors.dispatcher import DispatcherActor
from actors.messages import (
    Activate,
    ActorCrashed,
    ActorStopped,
    Forget,
    Kill,
    Loaded,
    Passivate,
    PassivateRequest,
    Reply,
    Retire,
    Shutdown,
    Step,
    Sweep,
)
from flow._errors import (
    ActorflowError,
    RuntimeClosed,
    SessionNotFound,
    StoreUnavailable,
    TaskFailed,
)
from flow._session import Session, SessionStatus

__all__ = ["SupervisorActor"]

#: Snapshot reads handed to the loader pool as one task at most (see `_flush_loads`).
LOAD_BATCH = 32


def _still_idle(last_used: float, entry: LiveEntry) -> bool:
    """Whether ``entry`` has no request in hand and none since ``last_used``."""
    return entry.pending == 0 and entry.last_used == last_used


class SupervisorActor(DispatcherActor):
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
        self._restarts: defaultdict[str, deque[float]] = defaultdict(deque)
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
        # so that a burst of activations is read by one loader task, not one each.
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
        elif isinstance(message, PassivateRequest | Sweep | Forget | Shutdown):
            reply = message.reply
            if reply is not None:
                reply(error)

    def _handle(self, message: Any) -> None:
        if isinstance(message, Activate):
            self._activate(message)
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
        elif isinstance(message, Forget):
            self._forget(message)
        elif isinstance(message, Shutdown):
            self._begin_shutdown(message)
        else:
            raise TypeError(f"supervisor got an unknown message {message!r}")

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
            and not self._expired(preloaded)
        ):
            self._loading[sid] = [message]
            self._loaded(Loaded(sid, preloaded))
            return
        # The read happens on the loader pool (see on_receive and _flush_loads):
        # the supervisor never waits on the store.
        self._loading[sid] = [message]
        self._to_load.append(sid)

    def _flush_loads(self) -> None:
        """Hand the queued snapshot reads to the loader pool as one task."""
        batch, self._to_load = self._to_load, []
        loader = self._services.loader or self._services.task_pool
        try:
            loader.submit(self._load_all, batch)
        except RuntimeError as exc:  # the pool is shut down: the runtime is closing
            closed = RuntimeClosed(f"the runtime is closing ({exc})")
            for sid in batch:
                for activation in self._loading.pop(sid, []):
                    self._fail(activation, closed)
            self._maybe_finish_shutdown()

    def _load_all(self, session_ids: list[str]) -> None:
        """On the loader pool: `_load` each of ``session_ids`` in turn."""
        for session_id in session_ids:
            self._load(session_id)

    def _load(self, session_id: str) -> None:
        """On the loader pool: read the snapshot (deleting it if expired), report back."""
        outcome: Session | BaseException | None
        try:
            outcome = self._services.store.load(session_id)
            if outcome is not None and not self._expired(outcome):
                outcome = pin_version(self._services, outcome)
            if outcome is not None and self._expired(outcome):
                self._services.store.delete(session_id)
                self._index.bump()
                self._services.counters.add("expirations")
                self._services.log.info("session_expired", session_id=session_id)
                outcome = SessionNotFound(session_id, f"session {session_id!r} expired")
        except Exception as exc:
            outcome = exc
        if not self._services.tell_supervisor(Loaded(session_id, outcome)):
            waiting = self._loading.pop(session_id, [])
            for activation in waiting:
                self._fail(activation, RuntimeClosed("the runtime is closed"))

    def _expired(self, session: Session) -> bool:
        expires_at = session.metadata.expires_at
        return expires_at is not None and expires_at < self._services.clock()

    def _loaded(self, message: Loaded) -> None:
        sid = message.session_id
        waiting = self._loading.pop(sid, [])
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
                self._start(sid, "activated by a request", outcome)
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

    def _start(self, session_id: str, reason: str, session: Session | None = None) -> LiveEntry:
        """Load ``session_id`` (unless given) and start its actor; evict LRU beyond max_live."""
        if session is None:
            session = self._services.store.load(session_id)
            if session is None:
                raise SessionNotFound(session_id)
        graph = self._services.graphs.find(session.graph_id, session.graph_version)
        if graph is None:
            # Migrations run where the snapshot is read (`pin_version`), never here.
            raise unserved(self._services.graphs, session)
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
            status=session.status.value,
            current_task=session.current_task,
            revision=session.revision,
            request_count=session.metadata.request_count,
            expires_at=session.metadata.expires_at,
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
        if message.step is None:
            if message.reply is not None:
                entry = self._index.get(message.session_id)
                if entry is not None and message.owner not in (None, entry.owner):
                    message.reply(SessionNotFound(message.session_id))
                else:
                    message.reply(True)
            return
        self._send_step(message.step, message.owner, message.on_busy == "reject")

    def _send_step(self, step: Step, owner: str | None, reject: bool) -> None:
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
        if entry is None:
            step.reply(StoreUnavailable(f"session {step.session_id!r} could not be started"))

    @staticmethod
    def _fail(message: Activate, error: BaseException) -> None:
        if message.step is not None:
            message.step.reply(error)
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
        """Take the session out of the index, then tell its actor ``message`` (to stop it).

        Every request sent to the actor before the removal is ahead of
        ``message`` in its mailbox, and none can be sent after it.
        """
        entry = self._index.remove(session_id, incarnation=incarnation, when=when)
        if entry is None or entry.ref is None:
            return False
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
        steps = list(message.steps)
        waiting = self._waiting.pop(sid, [])
        if self._shutdown is not None:
            self._forget_stopped(sid, message.incarnation)
            closed = RuntimeClosed("the runtime is closing")
            for step in steps:
                step.reply(closed)
            for activation in waiting:
                self._fail(activation, closed)
            self._maybe_finish_shutdown()
            return
        if message.crashed is not None:
            # Decided before the id stops counting as stopping, so that nobody
            # loads the snapshot before it is restarted or marked ``error``.
            live = self._restart(sid, message.crashed, steps, waiting)
            self._forget_stopped(sid, message.incarnation)
            if not live:
                return
        else:
            self._forget_stopped(sid, message.incarnation)
            if not steps and not waiting:
                return
            if self._index.get(sid) is None:
                try:
                    self._start(sid, "activated by a request")
                except ActorflowError as exc:
                    for step in steps:
                        step.reply(exc)
                    for activation in waiting:
                        self._fail(activation, exc)
                    return
        for step in steps:
            self._send_step(step, None, False)
        for activation in waiting:
            self._activate(activation)

    def _forget_stopped(self, session_id: str, incarnation: int) -> None:
        self._index.stopped(session_id, incarnation)
        if not self._index.stopping(session_id):
            self._stopping_refs.pop(session_id, None)

    def _restart(
        self,
        session_id: str,
        error: BaseException,
        steps: list[Step],
        waiting: list[Activate],
    ) -> bool:
        """Restart a crashed session within the intensity limit; True if it is live again."""
        window = self._settings.restart_window
        now = time.monotonic()
        history = self._restarts[session_id]
        while history and history[0] < now - window:
            history.popleft()
        if len(history) >= self._settings.max_restarts:
            failure = self._mark_error(session_id, error, len(history))
            for step in steps:
                step.reply(failure)
            for activation in waiting:
                self._fail(activation, failure)
            return False
        history.append(now)
        try:
            self._start(session_id, f"restarted after {type(error).__name__}: {error}")
        except ActorflowError as exc:
            for step in steps:
                step.reply(exc)
            for activation in waiting:
                self._fail(activation, exc)
            return False
        self._services.counters.add("restarts")
        self._services.log.warning(
            "session_restarted",
            session_id=session_id,
            error=type(error).__name__,
            detail=str(error),
            restarts_in_window=len(history),
        )
        return True

    def _mark_error(self, session_id: str, error: BaseException, restarts: int) -> ActorflowError:
        """Store the session with status ``error``; later steps fail with a clear message."""
        why = (
            f"session actor crashed {restarts + 1} times within "
            f"{self._settings.restart_window:g} s (last: {type(error).__name__}: {error})"
        )
        self._services.log.error("session_failed", session_id=session_id, detail=why)
        self._restarts.pop(session_id, None)
        try:
            session = self._services.store.load(session_id)
            if session is not None:
                marked = replace(
                    session,
                    status=SessionStatus.ERROR,
                    status_message=why,
                    revision=session.revision + 1,
                )
                # Rare (after max_restarts): waiting here keeps a following
                # activation from loading the snapshot before it is marked.
                self._services.store.save(marked, expected_revision=session.revision).result()
        except ActorflowError as exc:
            self._services.log.error(
                "session_mark_error_failed", session_id=session_id, detail=str(exc)
            )
        return TaskFailed(session_id, RuntimeError(why), session_id)

    # --- sweeping ------------------------------------------------------------------------

    def _sweep(self, message: Sweep) -> None:
        if self._shutdown is None:
            now = self._services.clock()
            self._sweep_idle(now)
            self._sweep_expired(now)
        if message.reply is not None:
            message.reply(True)

    def _sweep_idle(self, now: float) -> None:
        settings = self._settings
        waiting = SessionStatus.WAITING_FOR_INPUT.value
        completed = SessionStatus.COMPLETED.value
        horizon = now - min(settings.wait_timeout, settings.idle_timeout)
        for entry in self._index.least_recent(horizon):
            idle = now - entry.last_used
            if entry.status == completed:
                reason = "completed"
            elif entry.status == waiting and idle > settings.wait_timeout:
                reason = "waiting for input"
            elif idle > settings.idle_timeout:
                reason = "idle"
            else:
                continue
            if self._remove_and_tell(
                entry.session_id, Passivate(reason), functools.partial(_still_idle, entry.last_used)
            ):
                self._passivated(entry.session_id, reason)

    def _sweep_expired(self, now: float) -> None:
        store = self._services.store
        expired = store.expired(now, limit=self._settings.sweep_batch)
        gone: list[str] = []
        for sid in expired:
            entry = self._index.get(sid)
            if entry is not None:
                if entry.expires_at is not None and entry.expires_at >= now:
                    continue  # refreshed in memory since its last save
                error = SessionNotFound(sid, f"session {sid!r} expired")
                self._remove_and_tell(sid, Kill(False, error), lambda _: True)
            elif self._index.stopping(sid):
                continue
            gone.append(sid)
        if not gone:
            return
        # Deletes are submitted together so that the store commits them in one group.
        deleted = list(self._services.task_pool.map(store.delete, gone))
        self._index.bump()
        for sid, _ in zip(gone, deleted, strict=True):
            self._services.counters.add("expirations")
            self._services.log.info("session_expired", session_id=sid)

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
