"""Joining a cluster: a Redis- or PostgreSQL-backed runtime holds a lease on every session
live in it.

Several daemons on one Redis or one PostgreSQL database share sessions, and each
session must be live in at most one of them (docs/cluster.md). ``Cluster.join`` is
the one place that wires it: for a ``RedisStore`` it makes this node's
``LeaseManager`` (for a ``PostgresStore`` a ``PostgresLeaseManager`` over the
store's pool; node id from the config, or generated; ``advertise``;
``lease_ttl``) and wraps the store
in a ``FencedStore``, so that activating a session takes its lease and every
save is fenced by it. ``attach`` then connects the leases to the actors: a
lease is renewed while its session is live here (or still stopping) and
released after, and a lost lease kills the session's actor at once, with a log
line saying why.

The daemon's forwarder asks the ``Cluster`` (never the store or Redis itself)
who holds a session (``holder_of``), pins a forwarded request to the epoch it
was forwarded under (``bind``), and fences off a holder that stopped answering
(``fence_off``) before it answers "outcome unknown".
"""

from __future__ import annotations

import sys
import uuid
from typing import TYPE_CHECKING

from actors._services import ActorServices
from actors.messages import PassivateRequest
from flow._logging import get_logger
from flow.stores._fenced import FencedStore
from flow.stores._lease import AsyncLeaseReader, Holder, Lease, LeaseManager
from flow.stores._protocol import SessionStore
from flow.stores._redis import RedisStore
from runtime._config import RuntimeConfig

if TYPE_CHECKING:
    from flow.stores._postgres import PostgresStore

__all__ = ["Cluster", "Holder", "new_node_id"]

_log = get_logger("actorflow.cluster")

_LOST_ACTIONS = {
    "taken": "killing the live actor; its unsaved state is dropped and the session is "
    "served by the node holding the newer lease",
    "lapsed": "killing the live actor; nobody took the lease over, so the next request "
    "for the session activates it again (here or on another node) from the store",
    "expired": "killing the live actor; Redis could not be reached while the lease ran "
    "out; the session is reloaded from Redis on its next request",
}


def new_node_id() -> str:
    """A fresh node id (12 hex digits): unique per process start."""
    return uuid.uuid4().hex[:12]


class Cluster:
    """This process's membership of a cluster of daemons sharing one Redis or PostgreSQL.

    Args:
        store: the Redis or PostgreSQL store the runtime opened (or was handed).
        config: the runtime's configuration (``node_id``, ``advertise``, ``lease_ttl``).

    Attributes:
        store: the fenced store the runtime hands its actors.
        node_id: this node's id in the cluster.
        lease_ttl: seconds a lease lasts unless renewed.
        renew_interval: seconds between lease renewals (``lease_ttl / 3``).
    """

    def __init__(self, store: RedisStore | PostgresStore, config: RuntimeConfig) -> None:
        node_id = config.node_id or new_node_id()
        if isinstance(store, RedisStore):
            self._leases = LeaseManager(
                store.client,
                node_id,
                config.advertise,
                config.lease_ttl,
                key_prefix=store.key_prefix,
            )
            # the forwarder's lookups on its own asyncio Redis client
            self._reader = AsyncLeaseReader(self._leases, store.url)
        else:
            from flow.stores._postgres_lease import PostgresLeaseManager

            self._leases = PostgresLeaseManager(
                store.pool, store.where, node_id, config.advertise, config.lease_ttl
            )
            # the forwarder's lookups run the manager's own on a worker thread
            self._reader = AsyncLeaseReader(self._leases, None)
        self.store = FencedStore(store, self._leases)
        self.node_id = self._leases.node_id
        self.lease_ttl = config.lease_ttl
        self.renew_interval = self._leases.renew_interval
        _log.info(
            "cluster_joined",
            node_id=self.node_id,
            advertise=config.advertise,
            lease_ttl=config.lease_ttl,
            store=repr(store),
        )

    @classmethod
    def join(cls, store: SessionStore, config: RuntimeConfig) -> Cluster | None:
        """The cluster ``store`` makes this runtime a member of: None unless it is Redis or
        PostgreSQL."""
        if isinstance(store, RedisStore):
            return cls(store, config)
        # a PostgresStore exists only once its module is imported: an SQLite runtime
        # does not pay for importing psycopg here
        postgres = sys.modules.get("flow.stores._postgres")
        if postgres is not None and isinstance(store, postgres.PostgresStore):
            return cls(store, config)
        return None

    def attach(self, services: ActorServices) -> None:
        """Renew the leases of sessions live here only; kill an actor whose lease is lost."""
        index = services.index

        def in_use(session_id: str) -> bool:
            return index.get(session_id) is not None or index.stopping(session_id)

        def lost(lease: Lease, reason: str) -> None:
            _log.warning(
                "session_lease_lost",
                session_id=lease.name,
                node_id=lease.node_id,
                epoch=lease.epoch,
                reason=reason,
                action=_LOST_ACTIONS.get(reason, _LOST_ACTIONS["taken"]),
            )
            services.tell_supervisor(PassivateRequest(lease.name, "lease lost", kill=True))

        self._leases.in_use = in_use
        self._leases.on_lost = lost

    def close(self) -> None:
        """Stop renewing and release every lease (once the runtime's actors have stopped)."""
        self._leases.close()

    def holds(self, session_id: str) -> bool:
        """Whether this node holds the session's lease (as far as it knows)."""
        return self._leases.lease_for(session_id) is not None

    async def holder_of(self, session_id: str) -> Holder | None:
        """Who holds the session's lease in the store (this node included), or None.

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        return await self._reader.holder(session_id)

    def bind(self, session_id: str, epoch: int) -> bool:
        """Pin the session to this node's grant ``epoch`` for one forwarded request;
        False when this node does not hold that grant (the request must not run).
        Each ``True`` needs an ``unbind``."""
        return self._leases.bind(session_id, epoch)

    def unbind(self, session_id: str) -> None:
        """End one ``bind``."""
        self._leases.unbind(session_id)

    async def fence_off(self, holder: Holder) -> bool:
        """Make sure ``holder``'s grant can commit nothing any more (see docs/cluster.md).

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        return await self._reader.fence_off(holder)

    async def aclose(self) -> None:
        """Close the event loop's Redis connection (the daemon's, at shutdown)."""
        await self._reader.aclose()
