"""Joining a cluster: a Redis-backed runtime holds a lease on every session live in it.

Several daemons on one Redis share sessions, and each session must be live in
at most one of them. ``fence_store`` wraps a ``RedisStore`` in a
``FencedStore`` with this node's ``LeaseManager`` (node id from the config, or
generated; ``advertise``; ``lease_ttl``), so that activating a session takes
its lease and every save is fenced by it. ``attach_cluster`` then connects the
lease manager to the actors: a lease is renewed while its session is live here
(or still stopping) and released after, and a lost lease kills the session's
actor at once, with a log line saying so. See docs/cluster.md.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable

import structlog

from actors._services import ActorServices
from actors.messages import PassivateRequest
from flow.stores._fenced import FencedStore
from flow.stores._lease import Lease, LeaseManager
from flow.stores._protocol import SessionStore
from runtime._config import RuntimeConfig

__all__ = ["attach_cluster", "fence_store", "new_node_id"]

_log = structlog.get_logger("actorflow.cluster")


def new_node_id() -> str:
    """A fresh node id (12 hex digits): unique per process start."""
    return uuid.uuid4().hex[:12]


def fence_store(store: SessionStore, config: RuntimeConfig) -> SessionStore:
    """``store`` wrapped in a ``FencedStore`` when it is a ``RedisStore``; else unchanged."""
    # The Redis store's module is imported only when a Redis store was opened: if it
    # is not loaded, ``store`` cannot be one (and SQLite runtimes never import redis).
    redis_module = sys.modules.get("flow.stores._redis")
    if redis_module is None or not isinstance(store, redis_module.RedisStore):
        return store
    leases = LeaseManager(
        store.client,
        config.node_id or new_node_id(),
        config.advertise,
        config.lease_ttl,
        key_prefix=store.key_prefix,
    )
    _log.info(
        "cluster_joined",
        node_id=leases.node_id,
        advertise=config.advertise,
        lease_ttl=config.lease_ttl,
        store=repr(store),
    )
    return FencedStore(store, leases)


def attach_cluster(store: SessionStore, services: ActorServices) -> Callable[[], None]:
    """Renew leases of sessions live here only; kill a session's actor when its lease is lost.

    Returns:
        What the runtime calls once its actors have stopped: stop renewing and
        release every lease (nothing to do when ``store`` is not clustered).
    """
    if not isinstance(store, FencedStore):
        return _nothing
    index = services.index
    leases = store.leases

    def in_use(session_id: str) -> bool:
        return index.get(session_id) is not None or index.stopping(session_id)

    def lost(lease: Lease) -> None:
        _log.warning(
            "session_lease_lost",
            session_id=lease.name,
            node_id=lease.node_id,
            epoch=lease.epoch,
            action="killing the live actor; its unsaved state is dropped and "
            "the session is served by the new lease holder",
        )
        services.tell_supervisor(PassivateRequest(lease.name, "lease lost", kill=True))

    leases.in_use = in_use
    leases.on_lost = lost
    return leases.close


def _nothing() -> None:
    return None
