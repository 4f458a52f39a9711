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

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import structlog

from flow._errors import InvalidInput, StoreUnavailable
from flow.stores._redis_client import LuaScript, connect, unavailable

__all__ = [
    "HOLDER_SCRIPT",
    "Holder",
    "Lease",
    "LeaseHeldElsewhere",
    "LeaseLost",
    "LeaseManager",
    "epoch_key",
    "holder_from",
    "lease_key",
]

_log = structlog.get_logger("actorflow.lease")

LOST_REMEMBERED = 10_000
"""How many lost leases a manager remembers (for ``lost_lease``)."""

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

_RENEW = LuaScript(
    """
local cur = redis.call('HMGET', KEYS[1], 'node', 'epoch')
if cur[1] == ARGV[1] and cur[2] == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
"""
)

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
  else
    out[i] = 0
  end
end
return out
"""
)
"""Renew a chunk of leases in one call: KEYS lease keys, ARGV node, ttl ms, epochs."""

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
        on_lost: Callable[[Lease], None] | None = None,
        in_use: Callable[[str], bool] | None = None,
    ) -> None:
        if ttl <= 0:
            raise InvalidInput(f"lease ttl must be positive, got {ttl!r}")
        if not node_id:
            raise InvalidInput("a lease manager's node_id must not be empty")
        if isinstance(client_or_url, str):
            self._client = connect(client_or_url)
            self._owns_client = True
        else:
            self._client = client_or_url
            self._owns_client = False
        self.node_id = node_id
        self.advertise = advertise
        self.ttl = ttl
        self.key_prefix = key_prefix
        self.on_lost = on_lost
        self.in_use = in_use
        self.renew_interval = ttl / 3
        self._ttl_ms = max(1, round(ttl * 1000))
        self._held: dict[str, _Held] = {}
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
        keys = [lease_key(self.key_prefix, session_id), epoch_key(self.key_prefix, session_id)]
        args: list[Any] = [self.node_id, self.advertise, self._ttl_ms]
        if read is not None:
            keys.append(read[0])
            args.append(read[1])
        reply = self._call(_ACQUIRE, keys, args, "acquire")
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
        value = reply[2] if len(reply) > 2 and isinstance(reply[2], bytes) else None
        return lease, value

    def renew(self, lease: Lease) -> bool:
        """Renew one lease now; False (and ``on_lost``) when it is no longer this grant.

        Raises:
            StoreUnavailable: Redis could not be reached (the lease may still hold).
        """
        started = time.monotonic()
        ok = self._call(
            _RENEW, [lease_key(self.key_prefix, lease.name)], self._args(lease), "renew"
        )
        if int(ok) == 1:
            self._extend(lease, started + self.ttl)
            return True
        self._lost(lease, "taken")
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
        results: list[Any] = []
        try:
            for answer in _RENEW_MANY.run_many(self._client, self._chunks(held)):
                if isinstance(answer, BaseException):
                    raise answer
                results.extend(answer)
        except redis.exceptions.RedisError as exc:
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
                self._lost(lease, "taken")
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
        ok = self._call(
            _RELEASE, [lease_key(self.key_prefix, lease.name)], self._args(lease), "release"
        )
        return int(ok) == 1

    def holder(self, session_id: str) -> Holder | None:
        """Who holds the lease on ``session_id`` (this node included), or None.

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        key = lease_key(self.key_prefix, session_id)
        reply = self._call(HOLDER_SCRIPT, [key], [], "lookup")
        return holder_from(session_id, reply)

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
        if self._owns_client:
            self._client.close()

    def _renewable(self) -> list[Lease]:
        """The held leases still needed; those ``in_use`` says are not are released."""
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
            with self._lock:
                for lease in drop:
                    current = self._held.get(lease.name)
                    if current is not None and current.lease == lease:
                        del self._held[lease.name]
            try:
                _RELEASE_MANY.run_many(self._client, self._chunks(drop))
            except redis.exceptions.RedisError as exc:
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
                callback(lease)
            except Exception:  # a failing callback must not stop the other leases' reports
                _log.exception("lease_lost_callback_failed", session_id=lease.name)


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
