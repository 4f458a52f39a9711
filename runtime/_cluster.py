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
was forwarded under (``bind``, and ``accepted_under`` for the step it sends),
fences off a holder that stopped answering (``fence_off``) before it answers
"outcome unknown", and signs the marks of a forwarded request (``peer_mark``)
with a secret only the daemons sharing the Redis know, so that a client cannot
pass its own request off as forwarded.

Every step a session actor runs in a cluster carries the lease epoch it was
accepted under (``ActorServices.grant_of``, ``Step.epoch``): the epoch it was
forwarded under, or else the one this node held when the step reached the
actor. The actor refuses (``Misdirected``) a step whose epoch this node no
longer holds, so a step queued here across a lease loss is never run by the
next grant.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import hashlib
import hmac
import secrets
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import redis

from actors._services import ActorServices
from actors.messages import PassivateRequest
from flow._errors import StoreUnavailable
from flow._logging import get_logger
from flow.stores._fenced import FencedStore
from flow.stores._lease import AsyncLeaseReader, Holder, Lease, LeaseManager
from flow.stores._protocol import SessionStore
from flow.stores._redis import RedisStore
from runtime._config import RuntimeConfig

if TYPE_CHECKING:
    from flow.stores._postgres import PostgresStore

__all__ = ["Cluster", "Holder", "forwarded_grant", "new_node_id"]

_log = get_logger("actorflow.cluster")

_FORWARDED: contextvars.ContextVar[tuple[int, float | None] | None] = contextvars.ContextVar(
    "actorflow_forwarded_grant", default=None
)

SECRET_KEY = "cluster-secret"
"""The Redis key (after the prefix) of the secret forwarded requests are signed with."""


def forwarded_grant() -> tuple[int, float | None] | None:
    """The lease epoch and deadline of the forwarded request being served, if any (the
    runtime puts them in the ``Step`` it sends)."""
    return _FORWARDED.get()


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
            self._load_secret: Callable[[], bytes] = functools.partial(
                _redis_secret, store.client, store.key_prefix + SECRET_KEY
            )
        else:
            from flow.stores._postgres_lease import PostgresLeaseManager

            self._leases = PostgresLeaseManager(
                store.pool, store.where, node_id, config.advertise, config.lease_ttl
            )
            # the forwarder's lookups run the manager's own on a worker thread
            self._reader = AsyncLeaseReader(self._leases, None)
            self._load_secret = functools.partial(_postgres_secret, store)
        self.store = FencedStore(store, self._leases)
        self.node_id = self._leases.node_id
        self.lease_ttl = config.lease_ttl
        self.renew_interval = self._leases.renew_interval
        self._secret: bytes | None = None
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

        def grant_of(session_id: str) -> int | None:
            lease = self._leases.lease_for(session_id)
            return None if lease is None else lease.epoch

        self._leases.in_use = in_use
        self._leases.on_lost = lost
        services.grant_of = grant_of

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

    @staticmethod
    @contextlib.contextmanager
    def accepted_under(epoch: int, deadline: float | None) -> Iterator[None]:
        """Within it, a step sent by this task carries ``epoch`` and ``deadline`` (a forwarded
        request's): its actor runs it only under that grant, and only before the deadline."""
        token = _FORWARDED.set((epoch, deadline))
        try:
            yield
        finally:
            _FORWARDED.reset(token)

    async def peer_mark(self, *fields: bytes) -> bytes:
        """The mark a forwarded request carries: an HMAC of ``fields`` with the cluster's
        secret (made once in Redis by the first daemon that needs it, read by the others).

        Raises:
            StoreUnavailable: Redis could not be reached to read the secret.
        """
        secret = self._secret
        if secret is None:
            secret = self._secret = await asyncio.to_thread(self._load_secret)
        return hmac.new(secret, b"\n".join(fields), hashlib.sha256).hexdigest().encode()

    async def is_peer_mark(self, mark: bytes, *fields: bytes) -> bool:
        """Whether ``mark`` was made by ``peer_mark`` over ``fields`` (by a daemon of this
        cluster); False when Redis cannot be reached to read the secret."""
        try:
            expected = await self.peer_mark(*fields)
        except StoreUnavailable:
            return False
        return hmac.compare_digest(mark, expected)

    async def fence_off(self, holder: Holder) -> bool:
        """Make sure ``holder``'s grant can commit nothing any more (see docs/cluster.md).

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        return await self._reader.fence_off(holder)

    async def aclose(self) -> None:
        """Close the event loop's Redis connection (the daemon's, at shutdown)."""
        await self._reader.aclose()


def _redis_secret(client: redis.Redis, key: str) -> bytes:
    """The cluster's secret in Redis (made by the first daemon that needs it)."""
    try:
        client.set(key, secrets.token_hex(32), nx=True)
        value = client.get(key)
    except redis.exceptions.RedisError as exc:
        raise StoreUnavailable(f"cluster secret: {type(exc).__name__}: {exc}") from exc
    if not isinstance(value, bytes):
        raise StoreUnavailable("cluster secret: Redis answered no value")
    return value


def _postgres_secret(store: PostgresStore) -> bytes:
    """The cluster's secret in PostgreSQL (a one-row table made by the first daemon)."""
    import psycopg

    try:
        with store.pool.connection() as conn, conn.transaction():
            # Two daemons forwarding for the first time at once: CREATE TABLE IF NOT
            # EXISTS is not safe against a concurrent one (one of them failed with a
            # unique violation in the catalog, and its request waited out the forwarding
            # timeout), so the first is made under a lock.
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':cluster-secret'))"
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS cluster_secret "
                "(id INT PRIMARY KEY, secret TEXT NOT NULL)"
            )
            conn.execute(
                "INSERT INTO cluster_secret (id, secret) VALUES (1, %s) "
                "ON CONFLICT (id) DO NOTHING",
                (secrets.token_hex(32),),
            )
            row = conn.execute("SELECT secret FROM cluster_secret WHERE id = 1").fetchone()
    except psycopg.Error as exc:
        raise StoreUnavailable(f"cluster secret: {type(exc).__name__}: {exc}") from exc
    if row is None:
        raise StoreUnavailable("cluster secret: PostgreSQL answered no row")
    return str(row[0]).encode()
