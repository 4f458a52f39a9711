"""Leases with fencing epochs: at most one live copy of a session across daemons.

A daemon takes a session's lease in Redis before it activates the session, and
keeps it by renewing it every ``ttl / 3``. Each grant gets an epoch from a
per-session counter that only grows, and every save carries the epoch as its
fence (``RedisStore.save(..., fence=lease.fence)``): Redis refuses a save whose
epoch is older than the newest one granted, so a paused or partitioned daemon
whose lease was taken over cannot overwrite the new holder's work, whatever it
believes. See docs/cluster.md for the whole protocol.

Keys (``prefix`` defaults to ``actorflow:``):

- ``<prefix>lease:<session_id>``: a hash ``node``, ``adv`` (advertised URL),
  ``epoch``, with a PX expiry of the lease ttl; absent when the lease is free.
- ``<prefix>epoch:<session_id>``: the epoch counter (INCR on every grant); it
  never expires, so an epoch is never granted twice.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aredis

from flow._errors import InvalidInput, Misdirected, StoreUnavailable
from flow._logging import get_logger
from flow.stores._redis_client import LuaScript, connect, connect_async, unavailable

__all__ = [
    "FENCE_OFF_SCRIPT",
    "HOLDER_SCRIPT",
    "LOST_REASONS",
    "AsyncLeaseReader",
    "EpochPinned",
    "Holder",
    "Lease",
    "LeaseHeldElsewhere",
    "LeaseLost",
    "LeaseManager",
    "epoch_key",
    "holder_from",
    "lease_key",
]

_log = get_logger("actorflow.lease")

LOST_REMEMBERED = 10_000
"""How many lost leases a manager remembers (for ``lost_lease``)."""

LOST_REASONS = {
    0: "lapsed",
    -1: "taken",
}
"""A renewal's verdict -> why the lease is lost: ``lapsed`` (it expired in Redis and nobody
holds it: this process did not renew it in time), ``taken`` (a newer grant holds it).
``expired`` is the third reason: Redis could not be reached until the lease ran out."""

_ACQUIRE = LuaScript(
    """
local value = false
if #KEYS == 3 then
  value = redis.call('HGET', KEYS[3], ARGV[4])
  if not value then
    return {2}
  end
end
local cur = redis.call('HMGET', KEYS[1], 'node', 'adv', 'epoch')
if cur[1] and cur[1] ~= ARGV[1] then
  return {0, cur[1], cur[2], tonumber(cur[3]), redis.call('PTTL', KEYS[1])}
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'adv', ARGV[2], 'epoch', epoch)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, epoch, value}
"""
)

_KEEP = LuaScript(
    """
local cur = redis.call('HMGET', KEYS[1], 'node', 'epoch')
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then
  return {3}
end
local value = false
if #KEYS == 2 then
  value = redis.call('HGET', KEYS[2], ARGV[4])
  if not value then
    return {2}
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, tonumber(ARGV[2]), value}
"""
)
"""Activate under the grant a forwarded request is bound to: KEYS the lease key (and the
hash to read), ARGV node, epoch, ttl ms (and the field). 1 kept, 2 nothing to read,
3 this grant no longer holds the lease."""

_RENEW = LuaScript(
    """
local cur = redis.call('HMGET', KEYS[1], 'node', 'epoch')
if cur[1] == ARGV[1] and cur[2] == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
if cur[1] then
  return -1
end
return 0
"""
)
"""Renew one lease: 1 renewed, 0 lapsed (nobody holds it), -1 another grant holds it."""

_RELEASE = LuaScript(
    """
local cur = redis.call('HMGET', KEYS[1], 'node', 'epoch')
if cur[1] == ARGV[1] and cur[2] == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""
)


_RENEW_MANY = LuaScript(
    """
local out = {}
for i = 1, #KEYS do
  local cur = redis.call('HMGET', KEYS[i], 'node', 'epoch')
  if cur[1] == ARGV[1] and cur[2] == ARGV[i + 2] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    out[i] = 1
  elseif cur[1] then
    out[i] = -1
  else
    out[i] = 0
  end
end
return out
"""
)
"""Renew a chunk of leases in one call: KEYS lease keys, ARGV node, ttl ms, epochs; one
verdict per lease, as ``_RENEW``'s."""

_RELEASE_MANY = LuaScript(
    """
for i = 1, #KEYS do
  local cur = redis.call('HMGET', KEYS[i], 'node', 'epoch')
  if cur[1] == ARGV[1] and cur[2] == ARGV[i + 2] then
    redis.call('DEL', KEYS[i])
  end
end
return #KEYS
"""
)
"""Release a chunk of leases in one call (same arguments as ``_RENEW_MANY``)."""

HOLDER_SCRIPT = LuaScript(
    """
local cur = redis.call('HMGET', KEYS[1], 'node', 'adv', 'epoch')
if not cur[1] then
  return false
end
return {cur[1], cur[2], cur[3], redis.call('PTTL', KEYS[1])}
"""
)
"""Who holds a lease, in one command: KEYS the lease key; nil, or node, adv, epoch, pttl
(read it with ``holder_from``)."""

FENCE_OFF_SCRIPT = LuaScript(
    """
local cur = redis.call('HMGET', KEYS[1], 'node', 'epoch')
if cur[1] and not (cur[1] == ARGV[1] and cur[2] == ARGV[2]) then
  return 0
end
local counter = tonumber(redis.call('GET', KEYS[2]) or '0')
if counter <= tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], tonumber(ARGV[2]) + 1)
end
if cur[1] then
  redis.call('DEL', KEYS[1])
end
return 1
"""
)
"""Fence off one grant for good: KEYS the lease key and the epoch key, ARGV its node and
epoch. Unless a newer grant holds the lease already (which fences it off by itself), the
epoch counter is moved past it and the grant, if it still holds the lease, is revoked:
from then on Redis refuses every save fenced with that epoch. 1 when this call did it."""

CHUNK = 500
"""Leases per renewal or release call: one call per lease would cost redis-py's
per-command overhead for every live session, every ``ttl / 3``."""


def lease_key(prefix: str, name: str) -> str:
    """The Redis key of the lease on ``name`` (a session id)."""
    return f"{prefix}lease:{name}"


def epoch_key(prefix: str, name: str) -> str:
    """The Redis key of the epoch counter of the lease on ``name``."""
    return f"{prefix}epoch:{name}"


class LeaseLost(StoreUnavailable):
    """A fenced save was refused: a newer lease epoch was granted to someone else.

    The writer no longer owns the session; it must drop its live copy (its
    state is stale) and let the current holder serve the session.
    """

    def __init__(self, name: str, epoch: int | None, current: int | None) -> None:
        if epoch is None:
            message = f"lease on {name!r} lost: this process holds no lease on the session"
        else:
            message = (
                f"lease on {name!r} lost: save fenced with epoch {epoch}, but epoch {current} "
                "has been granted since; this process no longer owns the session"
            )
        super().__init__(message)
        self.name = name
        self.epoch = epoch
        self.current = current


class EpochPinned(Misdirected):
    """The session cannot be activated here: a request forwarded under a grant no longer held runs.

    A forwarded request may run only under the lease epoch it was forwarded to
    (``LeaseManager.bind``); while it runs, the session is activated here only
    under that same grant, and when Redis says the grant is gone the
    activation is refused, and nothing was run (421: the forwarder asks Redis
    again and sends the request to the session's holder).
    """

    def __init__(self, name: str, epoch: int) -> None:
        super().__init__(
            name,
            f"it was forwarded to this daemon under lease epoch {epoch}, which it no longer holds",
        )
        self.name = name
        self.epoch = epoch


class LeaseHeldElsewhere(StoreUnavailable):
    """Another node holds the session's lease: the session is live there.

    Attributes:
        holder: who holds it and where to forward requests (``holder.advertise``).
    """

    def __init__(self, holder: Holder) -> None:
        where = f" at {holder.advertise}" if holder.advertise else ""
        super().__init__(
            f"session {holder.name!r} is live on node {holder.node_id!r}{where} "
            f"(lease epoch {holder.epoch}, expires in {holder.expires_in:.3g} s)"
        )
        self.holder = holder


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease this node holds.

    Attributes:
        name: what the lease covers (a session id).
        node_id: the holder (this node).
        advertise: the base URL other nodes forward requests to.
        epoch: the fencing epoch of this grant.
    """

    name: str
    node_id: str
    advertise: str
    epoch: int

    @property
    def fence(self) -> tuple[str, int]:
        """What ``RedisStore.save(..., fence=...)`` takes: ``(name, epoch)``."""
        return (self.name, self.epoch)


@dataclass(frozen=True, slots=True)
class Holder:
    """Another node's lease, as seen in Redis.

    Attributes:
        name: what the lease covers (a session id).
        node_id: the node holding it.
        advertise: that node's base URL (where to forward requests).
        epoch: the epoch of its grant.
        expires_in: seconds until it expires unless renewed.
    """

    name: str
    node_id: str
    advertise: str
    epoch: int
    expires_in: float


@dataclass(slots=True)
class _Held:
    lease: Lease
    valid_until: float  # time.monotonic() by which the last renewal will have expired
    acquired_at: float  # time.monotonic() when it was granted


class LeaseManager:
    """Takes, renews and releases this node's leases on sessions.

    A renewal thread renews every held lease every ``ttl / 3`` in one pipeline
    (one script call per ``CHUNK`` leases).
    A lease that cannot be renewed (another node holds it now, or Redis could
    not be reached until the lease ran out) is dropped and reported to
    ``on_lost`` (called on the renewal thread; it must not block), so the
    runtime can passivate that session at once. When ``in_use`` is set, a lease
    it says is no longer needed (the session is not live here) is released at
    the next renewal instead of renewed, once it is older than one renewal
    interval (so that a lease taken just before activation is kept).

    Args:
        client_or_url: a redis-py client (``decode_responses=False``) or a URL.
        node_id: this node's id, unique in the cluster.
        advertise: this node's base URL for forwarded requests.
        ttl: lease lifetime in seconds.
        key_prefix: prefix of every key (the store's ``key_prefix``).
        on_lost: called with each lease lost; settable later as ``on_lost``.
        in_use: says whether a session still needs its lease; settable later.
    """

    def __init__(
        self,
        client_or_url: redis.Redis | str,
        node_id: str,
        advertise: str,
        ttl: float,
        *,
        key_prefix: str = "actorflow:",
        on_lost: Callable[[Lease, str], None] | None = None,
        in_use: Callable[[str], bool] | None = None,
    ) -> None:
        if isinstance(client_or_url, str):
            self._client = connect(client_or_url)
            self._owns_client = True
        else:
            self._client = client_or_url
            self._owns_client = False
        self._setup(node_id, advertise, ttl, key_prefix, on_lost, in_use)

    def _setup(
        self,
        node_id: str,
        advertise: str,
        ttl: float,
        key_prefix: str,
        on_lost: Callable[[Lease, str], None] | None,
        in_use: Callable[[str], bool] | None,
    ) -> None:
        """The bookkeeping every backend shares, and the renewal thread (started last)."""
        if ttl <= 0:
            raise InvalidInput(f"lease ttl must be positive, got {ttl!r}")
        if not node_id:
            raise InvalidInput("a lease manager's node_id must not be empty")
        self.node_id = node_id
        self.advertise = advertise
        self.ttl = ttl
        self.key_prefix = key_prefix
        self.on_lost = on_lost
        self.in_use = in_use
        self.renew_interval = ttl / 3
        self._ttl_ms = max(1, round(ttl * 1000))
        self._held: dict[str, _Held] = {}
        self._bound: dict[str, tuple[int, int]] = {}  # session -> (epoch, requests)
        self._lost_leases: OrderedDict[str, Lease] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._renew_loop, name=f"actorflow-lease-{node_id}", daemon=True
        )
        self._thread.start()

    def acquire(self, session_id: str) -> Lease | Holder:
        """Take the lease on ``session_id``, or say who holds it.

        Free or expired: taken with a new epoch. Already held by this node:
        granted again with a new epoch (the older grant is fenced off). Held by
        another node: that node's ``Holder``.

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        taken, _ = self._acquire(session_id, None)
        if taken is None:  # only a read of an absent field answers None
            raise StoreUnavailable(f"lease on {session_id!r}: unexpected empty answer")
        return taken

    def acquire_reading(
        self, session_id: str, key: str, field: str
    ) -> tuple[Lease | Holder | None, bytes | None]:
        """``acquire``, and read field ``field`` of hash ``key``, in one round trip.

        Returns ``(None, None)`` without taking the lease when the field is
        absent (nothing to lease); ``(Lease, value)`` when the lease was taken;
        ``(Holder, None)`` when another node holds it.

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        return self._acquire(session_id, (key, field))

    def _acquire(
        self, session_id: str, read: tuple[str, str] | None
    ) -> tuple[Lease | Holder | None, bytes | None]:
        started = time.monotonic()
        with self._lock:
            bound = self._bound.get(session_id)
        if bound is not None:
            return self._keep_reading(session_id, bound[0], read, started)
        reply = self._grant(session_id, read)
        verdict = int(reply[0])
        if verdict == 2:
            return None, None
        if verdict == 0:
            holder = Holder(
                name=session_id,
                node_id=_text(reply[1]),
                advertise=_text(reply[2]),
                epoch=int(reply[3]),
                expires_in=max(0, int(reply[4])) / 1000,
            )
            return holder, None
        lease = Lease(session_id, self.node_id, self.advertise, int(reply[1]))
        with self._lock:
            self._held[session_id] = _Held(lease, started + self.ttl, started)
            self._lost_leases.pop(session_id, None)
        # bound while Redis granted it: the grant is kept (renewed or released as any
        # other), but the session is not activated on it
        self._check_unbound(session_id)
        value = reply[2] if len(reply) > 2 and isinstance(reply[2], bytes) else None
        return lease, value

    def _keep_reading(
        self, session_id: str, epoch: int, read: tuple[str, str] | None, started: float
    ) -> tuple[Lease | Holder | None, bytes | None]:
        """``_acquire`` while bound to ``epoch``: the same grant, if Redis still has it."""
        reply = self._keep(session_id, epoch, read)
        verdict = int(reply[0])
        if verdict == 2:
            return None, None
        with self._lock:
            held = self._held.get(session_id)
            lease = None if held is None or held.lease.epoch != epoch else held.lease
        if verdict != 1 or lease is None:
            raise EpochPinned(session_id, epoch)
        self._extend(lease, started + self.ttl)
        value = reply[2] if len(reply) > 2 and isinstance(reply[2], bytes) else None
        return lease, value

    def bind(self, session_id: str, epoch: int) -> bool:
        """Pin ``session_id`` to this node's grant ``epoch`` while a request forwarded under
        it runs; False (nothing pinned) when this node does not hold that grant now, or
        its last renewal has run out (the process was paused or starved past it).

        While pinned, no new grant on the session is taken here: ``acquire`` keeps
        this grant if Redis still has it, and raises ``EpochPinned`` if not. The
        forwarded request runs under ``epoch`` or not at all, so once the forwarder
        has fenced that epoch off (``FENCE_OFF_SCRIPT``) it can never be committed.
        Every successful ``bind`` needs one ``unbind``.
        """
        now = time.monotonic()
        with self._lock:
            held = self._held.get(session_id)
            if held is None or held.lease.epoch != epoch or now >= held.valid_until:
                # not this grant, or not renewed in time (this process was paused or
                # starved): Redis may have let it lapse or fenced it off
                return False
            bound = self._bound.get(session_id)
            if bound is not None and bound[0] != epoch:
                return False
            self._bound[session_id] = (epoch, 1 if bound is None else bound[1] + 1)
            return True

    def unbind(self, session_id: str) -> None:
        """End one ``bind`` of ``session_id``."""
        with self._lock:
            bound = self._bound.get(session_id)
            if bound is None:
                return
            if bound[1] <= 1:
                del self._bound[session_id]
            else:
                self._bound[session_id] = (bound[0], bound[1] - 1)

    def _check_unbound(self, session_id: str) -> None:
        with self._lock:
            bound = self._bound.get(session_id)
        if bound is not None:
            raise EpochPinned(session_id, bound[0])

    def fence_off(self, holder: Holder) -> bool:
        """Make ``holder``'s grant unable to commit anything from now on (see
        ``FENCE_OFF_SCRIPT``); True when this call did it, False when a newer grant
        holds the lease already.

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        return self._fence(holder)

    def renew(self, lease: Lease) -> bool:
        """Renew one lease now; False (and ``on_lost``) when it is no longer this grant.

        Raises:
            StoreUnavailable: Redis could not be reached (the lease may still hold).
        """
        started = time.monotonic()
        ok = self._renew_one(lease)
        if ok == 1:
            self._extend(lease, started + self.ttl)
            return True
        self._lost(lease, LOST_REASONS[ok])
        return False

    def renew_all(self) -> list[Lease]:
        """Renew every held lease in one pipeline (one script call per 500); the leases lost.

        A lease is lost when Redis says it is no longer this grant, or when
        Redis could not be reached and the lease has run out meanwhile.
        """
        held = self._renewable()
        if not held:
            return []
        started = time.monotonic()
        results: list[Any]
        try:
            results = self._renew_many(held)
        except StoreUnavailable as exc:
            _log.warning("lease_renewal_failed", node_id=self.node_id, error=str(exc))
            results = [exc] * len(held)
        lost: list[Lease] = []
        now = time.monotonic()
        for lease, result in zip(held, results, strict=True):
            if isinstance(result, BaseException):
                if self._expired_locally(lease, now):
                    self._lost(lease, "expired")
                    lost.append(lease)
            elif int(result) == 1:
                self._extend(lease, started + self.ttl)
            else:
                self._lost(lease, LOST_REASONS[int(result)])
                lost.append(lease)
        return lost

    def release(self, lease: Lease) -> bool:
        """Give the lease up (only if it is still this grant); True if it was.

        Raises:
            StoreUnavailable: Redis could not be reached (the lease will expire).
        """
        with self._lock:
            held = self._held.get(lease.name)
            if held is not None and held.lease == lease:
                del self._held[lease.name]
        return self._release_one(lease)

    def holder(self, session_id: str) -> Holder | None:
        """Who holds the lease on ``session_id`` (this node included), or None.

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        return self._lookup(session_id)

    def held(self) -> list[Lease]:
        """The leases this node holds now."""
        with self._lock:
            return [h.lease for h in self._held.values()]

    def lost_lease(self, session_id: str) -> Lease | None:
        """This node's last lease on ``session_id`` if it was lost (not released), else None.

        A save from a process that lost its lease still carries that lease's
        fence, so that Redis, not this process, decides whether the write is stale.
        The most recent ``LOST_REMEMBERED`` losses are remembered.
        """
        with self._lock:
            return self._lost_leases.get(session_id)

    def lease_for(self, session_id: str) -> Lease | None:
        """This node's lease on ``session_id``, or None."""
        with self._lock:
            held = self._held.get(session_id)
            return None if held is None else held.lease

    def close(self, *, release: bool = True) -> None:
        """Stop renewing; release every held lease (best effort) unless ``release`` is False."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=max(5.0, self.ttl))
        if release:
            for lease in self.held():
                try:
                    self.release(lease)
                except StoreUnavailable:
                    break  # Redis is down: the leases expire after ttl anyway
        with self._lock:
            self._held.clear()
        self._close_backend()

    def _renewable(self) -> list[Lease]:
        """The held leases still needed; those ``in_use`` says are not (and no forwarded
        request is bound to) are released."""
        in_use = self.in_use
        with self._lock:
            held = list(self._held.values())
        if in_use is None:
            return [h.lease for h in held]
        settled = time.monotonic() - self.renew_interval
        keep: list[Lease] = []
        drop: list[Lease] = []
        for h in held:
            needed = h.acquired_at > settled or in_use(h.lease.name)
            (keep if needed else drop).append(h.lease)
        if drop:
            released: list[Lease] = []
            with self._lock:
                for lease in drop:
                    current = self._held.get(lease.name)
                    if lease.name in self._bound:
                        keep.append(lease)  # a forwarded request is about to activate it
                    elif current is not None and current.lease == lease:
                        del self._held[lease.name]
                        released.append(lease)
            try:
                if released:
                    self._release_many(released)
            except StoreUnavailable as exc:
                # Redis is down: the released leases simply expire after ttl
                _log.warning("lease_release_failed", node_id=self.node_id, error=str(exc))
        return keep

    def _renew_loop(self) -> None:
        interval = self.renew_interval
        while not self._stop.wait(interval):
            try:
                self.renew_all()
            except Exception:  # the renewal thread must survive anything a callback does
                _log.exception("lease_renewal_crashed", node_id=self.node_id)

    # -- the backend: Redis here; PostgresLeaseManager overrides these ------------------

    def _grant(self, session_id: str, read: tuple[str, str] | None) -> Any:
        """Take the lease unless another node holds it: ``[1, epoch, value]``,
        ``[0, node, advertise, epoch, pttl ms]`` (held elsewhere) or ``[2]`` (``read``'s
        field is absent: nothing taken)."""
        keys = [lease_key(self.key_prefix, session_id), epoch_key(self.key_prefix, session_id)]
        args: list[Any] = [self.node_id, self.advertise, self._ttl_ms]
        if read is not None:
            keys.append(read[0])
            args.append(read[1])
        return self._call(_ACQUIRE, keys, args, "acquire")

    def _keep(self, session_id: str, epoch: int, read: tuple[str, str] | None) -> Any:
        """Extend grant ``epoch`` if it still holds the lease: ``[1, epoch, value]``, ``[2]``
        (nothing to read) or ``[3]`` (the grant is gone)."""
        keys = [lease_key(self.key_prefix, session_id)]
        args: list[Any] = [self.node_id, str(epoch), self._ttl_ms]
        if read is not None:
            keys.append(read[0])
            args.append(read[1])
        return self._call(_KEEP, keys, args, "acquire")

    def _fence(self, holder: Holder) -> bool:
        keys = [lease_key(self.key_prefix, holder.name), epoch_key(self.key_prefix, holder.name)]
        done = self._call(FENCE_OFF_SCRIPT, keys, [holder.node_id, str(holder.epoch)], "fence-off")
        return int(done) == 1

    def _renew_one(self, lease: Lease) -> int:
        """1 renewed, 0 lapsed, -1 taken (``LOST_REASONS``)."""
        key = lease_key(self.key_prefix, lease.name)
        return int(self._call(_RENEW, [key], self._args(lease), "renew"))

    def _renew_many(self, leases: list[Lease]) -> list[int]:
        """One verdict per lease, as ``_renew_one``'s.

        Raises:
            StoreUnavailable: the backend could not be reached.
        """
        results: list[int] = []
        try:
            for answer in _RENEW_MANY.run_many(self._client, self._chunks(leases)):
                if isinstance(answer, BaseException):
                    raise answer
                results.extend(int(v) for v in answer)
        except redis.exceptions.RedisError as exc:
            raise unavailable(self._client, "lease renewal", exc) from exc
        return results

    def _release_one(self, lease: Lease) -> bool:
        key = lease_key(self.key_prefix, lease.name)
        return int(self._call(_RELEASE, [key], self._args(lease), "release")) == 1

    def _release_many(self, leases: list[Lease]) -> None:
        try:
            _RELEASE_MANY.run_many(self._client, self._chunks(leases))
        except redis.exceptions.RedisError as exc:
            raise unavailable(self._client, "lease release", exc) from exc

    def _lookup(self, session_id: str) -> Holder | None:
        key = lease_key(self.key_prefix, session_id)
        return holder_from(session_id, self._call(HOLDER_SCRIPT, [key], [], "lookup"))

    def _close_backend(self) -> None:
        if self._owns_client:
            self._client.close()

    def _chunks(self, leases: list[Lease]) -> list[tuple[list[str], list[Any]]]:
        """``(keys, args)`` of ``_RENEW_MANY`` / ``_RELEASE_MANY`` calls covering ``leases``."""
        calls: list[tuple[list[str], list[Any]]] = []
        for start in range(0, len(leases), CHUNK):
            chunk = leases[start : start + CHUNK]
            keys = [lease_key(self.key_prefix, x.name) for x in chunk]
            calls.append((keys, [self.node_id, self._ttl_ms, *(str(x.epoch) for x in chunk)]))
        return calls

    def _args(self, lease: Lease) -> list[Any]:
        return [self.node_id, str(lease.epoch), self._ttl_ms]

    def _call(self, script: LuaScript, keys: list[str], args: list[Any], what: str) -> Any:
        try:
            return script.run(self._client, keys, args)
        except redis.exceptions.RedisError as exc:
            raise unavailable(self._client, f"lease {what} on {keys[0]!r}", exc) from exc

    def _extend(self, lease: Lease, valid_until: float) -> None:
        with self._lock:
            held = self._held.get(lease.name)
            if held is not None and held.lease == lease:
                held.valid_until = max(held.valid_until, valid_until)

    def _expired_locally(self, lease: Lease, now: float) -> bool:
        with self._lock:
            held = self._held.get(lease.name)
            return held is not None and held.lease == lease and now >= held.valid_until

    def _lost(self, lease: Lease, reason: str) -> None:
        with self._lock:
            held = self._held.get(lease.name)
            if held is None or held.lease != lease:
                return
            del self._held[lease.name]
            self._lost_leases[lease.name] = lease
            while len(self._lost_leases) > LOST_REMEMBERED:
                self._lost_leases.popitem(last=False)
        _log.warning(
            "lease_lost",
            session_id=lease.name,
            node_id=self.node_id,
            epoch=lease.epoch,
            reason=reason,
        )
        callback = self.on_lost
        if callback is not None:
            try:
                callback(lease, reason)
            except Exception:  # a failing callback must not stop the other leases' reports
                _log.exception("lease_lost_callback_failed", session_id=lease.name)


class AsyncLeaseReader:
    """Who holds a lease, and fencing a grant off, awaited on an event loop.

    For the daemon's forwarder, which must not block its loop on Redis. With a
    URL it keeps one asyncio client (made on first use, on the loop that uses
    it); without one (the store was handed a client) each call runs the
    ``LeaseManager``'s own on a worker thread.

    Args:
        leases: this node's lease manager (its key prefix and sync fallback).
        url: the Redis URL, or None.
    """

    def __init__(self, leases: LeaseManager, url: str | None) -> None:
        self._leases = leases
        self._url = url
        self._client: aredis.Redis | None = None

    async def holder(self, session_id: str) -> Holder | None:
        """Who holds the lease on ``session_id`` (this node included), or None.

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        if self._url is None:
            return await asyncio.to_thread(self._leases.holder, session_id)
        key = lease_key(self._leases.key_prefix, session_id)
        reply = await self._run(HOLDER_SCRIPT, [key], [], f"lease lookup on {session_id!r}")
        return holder_from(session_id, reply)

    async def fence_off(self, holder: Holder) -> bool:
        """``LeaseManager.fence_off``, awaited.

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        if self._url is None:
            return await asyncio.to_thread(self._leases.fence_off, holder)
        prefix = self._leases.key_prefix
        keys = [lease_key(prefix, holder.name), epoch_key(prefix, holder.name)]
        args = [holder.node_id, str(holder.epoch)]
        done = await self._run(FENCE_OFF_SCRIPT, keys, args, f"fence-off on {holder.name!r}")
        return int(done) == 1

    async def aclose(self) -> None:
        """Close the asyncio client (if one was made)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _run(self, script: LuaScript, keys: list[str], args: list[Any], what: str) -> Any:
        client = self._client
        if client is None:
            assert self._url is not None
            client = self._client = connect_async(self._url)
        try:
            return await script.run_async(client, keys, args)
        except (redis.exceptions.RedisError, RuntimeError) as exc:
            # RuntimeError: redis-py's asyncio connection writing to a transport uvloop has
            # already closed (the server went away mid-connect), not a RedisError
            raise StoreUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc


def holder_from(name: str, reply: Any) -> Holder | None:
    """The ``Holder`` in a ``HOLDER_SCRIPT`` answer about the lease on ``name``."""
    if not reply:
        return None
    node, adv, epoch, pttl = reply
    return Holder(name, _text(node), _text(adv), int(epoch), max(0, int(pttl)) / 1000)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)
