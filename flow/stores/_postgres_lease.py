"""Leases with fencing epochs in PostgreSQL: the ``LeaseManager`` protocol over the leases table.

The bookkeeping (held leases, renewal thread, binding a forwarded request to
its grant, lost leases) is ``LeaseManager``'s; this class only says how a
grant, a renewal, a release, a lookup and a fence-off are done in SQL, each one
statement (so atomic) on the store's connection pool. A row per session holds
the holder (NULL when free), its advertised URL, its expiry by the database's
clock (so daemons' clocks need not agree) and the epoch, which only grows: a
grant sets it to one more than before, and the row is never deleted.

A fenced save (``PostgresStore.save(..., fence=lease.fence)``) reads the epoch
``FOR SHARE`` in its commit's transaction and is refused when it is newer than
the save's, so a paused daemon's late write is refused by the database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import psycopg_pool

from flow._errors import StoreUnavailable
from flow.stores._lease import Holder, Lease, LeaseManager
from flow.stores._postgres_gate import ServerGate

__all__ = ["PostgresLeaseManager"]

_GRANT = """
WITH s AS (SELECT revision FROM sessions WHERE session_id = %(sid)s),
g AS (
    INSERT INTO leases AS l (session_id, node, advertise, epoch, expires_at)
    SELECT %(sid)s, %(node)s, %(adv)s, 1, clock_timestamp() + %(ttl)s * interval '1 second'
    WHERE %(always)s OR EXISTS (SELECT 1 FROM s)
    ON CONFLICT (session_id) DO UPDATE
        SET node = excluded.node, advertise = excluded.advertise,
            epoch = l.epoch + 1, expires_at = excluded.expires_at
        WHERE l.node IS NULL OR l.node = excluded.node OR l.expires_at < clock_timestamp()
    RETURNING epoch
)
SELECT (SELECT epoch FROM g), (SELECT revision FROM s), l.node, l.advertise, l.epoch,
       extract(epoch FROM l.expires_at - clock_timestamp())::float8
FROM (SELECT 1) AS one LEFT JOIN leases l ON l.session_id = %(sid)s
"""
"""Take the lease (a new epoch) unless another live node holds it; the session's revision;
and the holder as it was before this statement (who to forward to when not taken)."""

_KEEP = """
WITH k AS (
    UPDATE leases SET expires_at = clock_timestamp() + %(ttl)s * interval '1 second'
    WHERE session_id = %(sid)s AND node = %(node)s AND epoch = %(epoch)s
      AND expires_at >= clock_timestamp()
    RETURNING epoch
)
SELECT (SELECT epoch FROM k), (SELECT revision FROM sessions WHERE session_id = %(sid)s)
"""

_FENCE_OFF = """
INSERT INTO leases AS l (session_id, node, advertise, epoch, expires_at)
VALUES (%(sid)s, NULL, NULL, %(epoch)s + 1, NULL)
ON CONFLICT (session_id) DO UPDATE
    SET node = NULL, advertise = NULL, expires_at = NULL,
        epoch = greatest(l.epoch, %(epoch)s + 1)
    WHERE l.node IS NULL OR l.expires_at < clock_timestamp()
       OR (l.node = %(node)s AND l.epoch = %(epoch)s)
RETURNING 1
"""
"""Fence off one grant for good (as ``FENCE_OFF_SCRIPT``): unless a newer grant holds the
lease, the epoch moves past it and the grant is revoked; a row is returned when it did."""

_RENEW_MANY = """
WITH u AS (SELECT * FROM unnest(%(sids)s::text[], %(epochs)s::bigint[]) AS u(sid, ep)),
up AS (
    UPDATE leases l SET expires_at = clock_timestamp() + %(ttl)s * interval '1 second'
    FROM (SELECT x.session_id FROM leases x JOIN u ON x.session_id = u.sid
          WHERE x.node = %(node)s AND x.epoch = u.ep AND x.expires_at >= clock_timestamp()
          ORDER BY x.session_id FOR NO KEY UPDATE OF x) k
    WHERE l.session_id = k.session_id
    RETURNING l.session_id
)
SELECT u.sid,
       CASE WHEN up.session_id IS NOT NULL THEN 1
            WHEN l.node IS NOT NULL AND l.expires_at >= clock_timestamp() THEN -1
            ELSE 0 END
FROM u LEFT JOIN up ON up.session_id = u.sid LEFT JOIN leases l ON l.session_id = u.sid
"""

_RELEASE_MANY = """
UPDATE leases l SET node = NULL, advertise = NULL, expires_at = NULL
FROM (SELECT x.session_id FROM leases x
      JOIN unnest(%(sids)s::text[], %(epochs)s::bigint[]) AS u(sid, ep) ON x.session_id = u.sid
      WHERE x.node = %(node)s AND x.epoch = u.ep
      ORDER BY x.session_id FOR NO KEY UPDATE OF x) k
WHERE l.session_id = k.session_id
"""
"""Renewals and releases lock their rows in id order first, as the writers' fence checks
take theirs (``FOR SHARE``, ordered): an update walking the rows in a join's order could
hold one a writer waits for while waiting for one that writer holds, a deadlock the server
breaks only after ``deadlock_timeout`` (1 s), failing one side."""

_LOOKUP = """
SELECT node, advertise, epoch, extract(epoch FROM expires_at - clock_timestamp())::float8
FROM leases WHERE session_id = %s AND node IS NOT NULL AND expires_at > clock_timestamp()
"""

_GRANT_TRIES = 3  # a holder seen gone just after the grant was refused: try again


class PostgresLeaseManager(LeaseManager):
    """This node's leases, kept in the store's ``leases`` table.

    Args:
        pool: the store's connection pool (``PostgresStore.pool``).
        where: the store's description, for error messages.
        node_id, advertise, ttl, on_lost, in_use: as ``LeaseManager``'s.
    """

    def __init__(
        self,
        pool: ServerGate,
        where: str,
        node_id: str,
        advertise: str,
        ttl: float,
        *,
        on_lost: Callable[[Lease, str], None] | None = None,
        in_use: Callable[[str], bool] | None = None,
    ) -> None:
        # not LeaseManager.__init__: that one connects to Redis
        self._pool = pool
        self._where = where
        self._setup(node_id, advertise, ttl, "", on_lost, in_use)

    def _sql(self, what: str, query: str, params: Any) -> list[tuple[Any, ...]]:
        """Run one statement; once more on a fresh connection if the pooled one was dead
        (after a server restart every pooled connection is; each statement is safe to
        repeat: at worst a grant is taken again with a newer epoch)."""
        for attempt in (1, 2):
            try:
                with self._pool.connection() as conn:
                    rows: list[tuple[Any, ...]] = conn.execute(query, params).fetchall()
                    return rows
            except psycopg_pool.PoolTimeout as exc:
                raise StoreUnavailable(f"lease {what} in {self._where}: {exc}") from exc
            except psycopg.OperationalError as exc:
                if attempt == 2:
                    raise StoreUnavailable(f"lease {what} in {self._where}: {exc}") from exc
            except psycopg.Error as exc:
                raise StoreUnavailable(f"lease {what} in {self._where}: {exc}") from exc
        raise AssertionError("unreachable")

    def _grant(self, session_id: str, read: tuple[str, str] | None) -> Any:
        params = {
            "sid": session_id,
            "node": self.node_id,
            "adv": self.advertise,
            "ttl": self.ttl,
            "always": read is None,
        }
        for _ in range(_GRANT_TRIES):
            [(epoch, revision, node, advertise, held_epoch, left)] = self._sql(
                "acquire", _GRANT, params
            )
            value = None if revision is None else str(revision).encode()
            if epoch is not None:
                return [1, epoch, value]
            if read is not None and revision is None:
                return [2]
            if node is not None and left is not None and left > 0:
                return [0, node, advertise or "", held_epoch, round(left * 1000)]
        raise StoreUnavailable(f"lease on {session_id!r}: the holder kept changing; retry")

    def _keep(self, session_id: str, epoch: int, read: tuple[str, str] | None) -> Any:
        params = {"sid": session_id, "node": self.node_id, "epoch": epoch, "ttl": self.ttl}
        [(kept, revision)] = self._sql("acquire", _KEEP, params)
        if kept is None:
            return [3]
        if read is not None and revision is None:
            return [2]
        return [1, kept, None if revision is None else str(revision).encode()]

    def _fence(self, holder: Holder) -> bool:
        params = {"sid": holder.name, "node": holder.node_id, "epoch": holder.epoch}
        return bool(self._sql("fence-off", _FENCE_OFF, params))

    def _renew_one(self, lease: Lease) -> int:
        return self._renew_many([lease])[0]

    def _renew_many(self, leases: list[Lease]) -> list[int]:
        params = {
            "sids": [x.name for x in leases],
            "epochs": [x.epoch for x in leases],
            "node": self.node_id,
            "ttl": self.ttl,
        }
        verdicts = dict(self._sql("renewal", _RENEW_MANY, params))
        return [int(verdicts.get(x.name, 0)) for x in leases]

    def _release_one(self, lease: Lease) -> bool:
        params = {"sids": [lease.name], "epochs": [lease.epoch], "node": self.node_id}
        try:
            with self._pool.connection() as conn:
                released: int = conn.execute(_RELEASE_MANY, params).rowcount
                return released == 1
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise StoreUnavailable(f"lease release in {self._where}: {exc}") from exc

    def _release_many(self, leases: list[Lease]) -> None:
        params = {
            "sids": [x.name for x in leases],
            "epochs": [x.epoch for x in leases],
            "node": self.node_id,
        }
        try:
            with self._pool.connection() as conn:
                conn.execute(_RELEASE_MANY, params)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise StoreUnavailable(f"lease release in {self._where}: {exc}") from exc

    def _lookup(self, session_id: str) -> Holder | None:
        rows = self._sql("lookup", _LOOKUP, (session_id,))
        if not rows:
            return None
        node, advertise, epoch, left = rows[0]
        return Holder(session_id, node, advertise or "", int(epoch), max(0.0, float(left)))

    def _close_backend(self) -> None:
        return  # the pool is the store's: it closes it
