"""RedisStore: sessions in Redis, shared by several daemons.

Keys (``prefix`` defaults to ``actorflow:``):

- ``<prefix>s:<session_id>``: a hash per session: ``snap`` (the msgpack snapshot
  from ``flow._codec.encode``), ``rev``, ``wid`` (the id of the write that put
  it there), ``owner``, and ``meta``: what ``list`` answers from without
  decoding the snapshot (msgpack ``[graph, task, status, created_at,
  last_accessed, expires_at, size]``). Its expiry is the session's
  ``expires_at`` (PEXPIREAT), so Redis drops expired sessions itself and no
  sweep is needed.
- ``<prefix>ids``: every session id (a sorted set, all scores 0, read in
  lexical order); ``<prefix>o:<owner>``: the same per owner; ``<prefix>exp``:
  ids scored by ``expires_at``. Ids whose hash has expired linger in them
  until ``list``, ``count`` or ``delete`` meets them and removes them.
- ``<prefix>quarantine``: a list of snapshots that failed to decode (msgpack
  ``[session_id, raw, error, quarantined_at]``), newest first; never trimmed.

A save is one Lua script (compare-and-set on ``rev``, the optional lease fence,
the write and the index updates, atomically). ``save`` queues the snapshot for
a writer thread, which sends everything queued in one pipeline of EVALSHA calls
(group commit) in the order it was saved, then completes the futures.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import msgpack
import redis
import structlog

from flow._codec import decode, encode
from flow._errors import InvalidInput, RevisionConflict, SnapshotDecodeError, StoreUnavailable
from flow._session import Session
from flow.stores._lease import LeaseLost, epoch_key
from flow.stores._protocol import QuarantinedRow, SessionPage, StoredSessionInfo
from flow.stores._redis_client import LuaScript, connect, describe, unavailable

__all__ = ["RedisStore"]

_log = structlog.get_logger("actorflow.store.redis")

MAX_BATCH = 512
"""Most saves sent in one pipeline."""

_PRUNE_BATCH = 1000

_WRITE = LuaScript(
    """
if ARGV[1] == 'delete' then
  local owner = redis.call('HGET', KEYS[1], 'owner')
  local existed = redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[2])
  if owner then
    redis.call('ZREM', ARGV[3] .. owner, ARGV[2])
  end
  return {'deleted', existed}
end
if ARGV[5] ~= '' then
  local current = tonumber(redis.call('GET', KEYS[5]) or '0')
  if current > tonumber(ARGV[5]) then
    return {'fenced', tostring(current)}
  end
end
local stored = redis.call('HMGET', KEYS[1], 'rev', 'wid', 'owner')
if stored[2] == ARGV[4] then
  return {'ok'}
end
if ARGV[2] == '' then
  if stored[1] then
    return {'conflict', stored[1]}
  end
elseif stored[1] ~= ARGV[2] then
  return {'conflict', stored[1] or ''}
end
if stored[3] and stored[3] ~= ARGV[9] then
  local owner_prefix = string.sub(KEYS[4], 1, #KEYS[4] - #ARGV[9])
  redis.call('ZREM', owner_prefix .. stored[3], ARGV[8])
end
redis.call('HSET', KEYS[1], 'rev', ARGV[3], 'wid', ARGV[4], 'owner', ARGV[9],
  'snap', ARGV[10], 'meta', ARGV[11])
if ARGV[6] ~= '0' then
  redis.call('PEXPIREAT', KEYS[1], ARGV[6])
else
  redis.call('PERSIST', KEYS[1])
end
redis.call('ZADD', KEYS[2], 0, ARGV[8])
redis.call('ZADD', KEYS[3], ARGV[7], ARGV[8])
redis.call('ZADD', KEYS[4], 0, ARGV[8])
return {'ok'}
"""
)
"""One script for every write, so that one pipeline uses one script: after a Redis
restart every call of a pipeline is refused with NOSCRIPT alike, and running them
again keeps their order."""

_QUARANTINE = LuaScript(
    """
local current = redis.call('HMGET', KEYS[1], 'snap', 'owner')
if current[1] ~= ARGV[1] then
  return 0
end
redis.call('LPUSH', KEYS[4], ARGV[2])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[3])
if current[2] then
  redis.call('ZREM', ARGV[4] .. current[2], ARGV[3])
end
return 1
"""
)

_PRUNE = LuaScript(
    """
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local removed = 0
for _, id in ipairs(ids) do
  if redis.call('EXISTS', ARGV[3] .. id) == 0 then
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    removed = removed + 1
  end
end
return removed
"""
)

# aliases: inside RedisStore, ``list`` names the method
_Ids = list[bytes]
_Strs = list[str]
_Infos = list[StoredSessionInfo]
_Rows = list[QuarantinedRow]

_INFO_FIELDS = ["owner", "rev", "meta"]


@dataclass(slots=True)
class _Write:
    """One save or delete for the writer thread: a call of the ``_WRITE`` script."""

    session_id: str
    expected: int | None
    fence: tuple[str, int] | None
    keys: list[str]
    args: list[Any]
    future: Future[Any]


@dataclass(slots=True)
class _Flush:
    done: threading.Event = field(default_factory=threading.Event)


class RedisStore:
    """The session store for several daemons sharing sessions (see the module docstring).

    Args:
        url: ``redis://host:port/db`` (ignored when ``client`` is given).
        key_prefix: prefix of every key, so several stores can share one database.
        ttl: lifetime in seconds of a session saved without ``expires_at``
            (None: such sessions never expire).
        client: a redis-py client to use instead of connecting to ``url``
            (``decode_responses`` must be False); the store does not close it.

    Attributes:
        url: the URL connected to (None when a client was given).
        client: the redis-py client (shared with a ``LeaseManager``).
        key_prefix: the key prefix.
        pipelines: pipelines the writer has sent (each one group commit).
        saves: saves those pipelines carried.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        key_prefix: str = "actorflow:",
        ttl: float | None = None,
        client: redis.Redis | None = None,
    ) -> None:
        self.url = url if client is None else None
        if client is None:
            if not url:
                raise InvalidInput("RedisStore needs a redis:// URL or a client")
            self.client = connect(url)
            self._owns_client = True
        else:
            self.client = client
            self._owns_client = False
        if ttl is not None and ttl <= 0:
            raise InvalidInput(f"ttl must be positive or None, got {ttl!r}")
        self.key_prefix = key_prefix
        self.ttl = ttl
        self.pipelines = 0
        self.saves = 0
        self._ids_key = f"{key_prefix}ids"
        self._exp_key = f"{key_prefix}exp"
        self._quarantine_key = f"{key_prefix}quarantine"
        self._owner_prefix = f"{key_prefix}o:"
        self._write_ids = itertools.count(1)
        self._write_token = os.urandom(6).hex()
        self._queue: queue.SimpleQueue[_Write | _Flush | None] = queue.SimpleQueue()
        self._closed = False
        self._close_lock = threading.Lock()
        self._writer = threading.Thread(target=self._write_loop, name="actorflow-redis-writer")
        self._writer.daemon = True
        self._writer.start()

    def load(self, session_id: str) -> Session | None:
        """The stored session, or None (also once Redis has expired it).

        Raises:
            SnapshotDecodeError: the snapshot did not decode; it has been quarantined.
            StoreUnavailable: Redis could not be reached.
        """
        key = self.session_key(session_id)
        try:
            raw: bytes | None = _reply(self.client.hget(key, "snap"))
        except redis.exceptions.RedisError as exc:
            raise unavailable(self.client, f"loading session {session_id!r}", exc) from exc
        if raw is None:
            return None
        return self.decode_snapshot(session_id, raw)

    def decode_snapshot(self, session_id: str, raw: bytes) -> Session:
        """Decode a snapshot read from ``session_key(session_id)``'s ``snap`` field.

        Raises:
            SnapshotDecodeError: it did not decode; it has been quarantined.
            StoreUnavailable: Redis could not be reached to quarantine it.
        """
        try:
            return decode(raw)
        except SnapshotDecodeError as exc:
            self._quarantine(session_id, raw, str(exc))
            raise SnapshotDecodeError(
                f"session {session_id!r}: {exc}; the snapshot was moved to quarantine", raw
            ) from exc

    def save(
        self,
        session: Session,
        expected_revision: int | None,
        *,
        fence: tuple[str, int] | None = None,
    ) -> Future[None]:
        """Queue ``session`` for commit if the stored revision is ``expected_revision``.

        Args:
            session: the session to store.
            expected_revision: the revision Redis must hold (None: must not exist).
            fence: ``(lease name, epoch)`` (``Lease.fence``): the save is refused
                with ``LeaseLost`` when a newer epoch of that lease was granted.

        Returns:
            A future completed after the pipeline holding the save, or failed with
            ``RevisionConflict``, ``LeaseLost`` or ``StoreUnavailable``.

        Raises:
            StoreUnavailable: the store is closed.
        """
        future: Future[None] = Future()
        self._submit(self._save_call(session, expected_revision, fence, future))
        return future

    def delete(self, session_id: str) -> bool:
        """Delete a session and its index entries after every save queued before it.

        Returns once the deletion is done: True if the session was stored.

        Raises:
            StoreUnavailable: Redis could not be reached, or the store is closed.
        """
        future: Future[bool] = Future()
        keys = [self.session_key(session_id), self._ids_key, self._exp_key]
        args = ["delete", session_id, self._owner_prefix]
        self._submit(_Write(session_id, None, None, keys, args, future))
        return future.result()

    def put_raw(self, session_id: str, data: bytes) -> None:
        """Replace the stored snapshot bytes of a session (tests use it to corrupt one).

        Raises:
            KeyError: no session ``session_id`` is stored.
            StoreUnavailable: Redis could not be reached.
        """
        key = self.session_key(session_id)
        try:
            if not self.client.exists(key):
                raise KeyError(session_id)
            self.client.hset(key, "snap", data)
        except redis.exceptions.RedisError as exc:
            raise unavailable(self.client, f"writing session {session_id!r}", exc) from exc

    def list(
        self, owner: str | None = None, cursor: str | None = None, limit: int = 100
    ) -> SessionPage:
        """Sessions of ``owner`` (every owner when None), ordered by id, after ``cursor``.

        Raises:
            InvalidInput: ``limit`` is below 1.
            StoreUnavailable: Redis could not be reached.
        """
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        index = self._ids_key if owner is None else f"{self._owner_prefix}{owner}"
        start = b"-" if cursor is None else b"(" + cursor.encode()
        items: _Infos = []
        try:
            # each round either fills the page or removes expired ids from the index
            for _ in range(1000):
                want = limit + 1 - len(items)
                ids: _Ids = _reply(self.client.zrangebylex(index, start, b"+", start=0, num=want))
                if not ids:
                    break
                items.extend(self._infos(index, ids))
                if len(items) > limit or len(ids) < want:
                    break
                start = b"(" + ids[-1]
        except redis.exceptions.RedisError as exc:
            raise unavailable(self.client, "listing sessions", exc) from exc
        next_cursor = items[limit - 1].session_id if len(items) > limit else None
        return SessionPage(items=items[:limit], next_cursor=next_cursor)

    def expired(self, now: float, limit: int = 1000) -> _Strs:
        """Ids of up to ``limit`` sessions whose ``expires_at`` is before ``now``.

        Sessions Redis has already dropped may be among them (``delete`` then
        cleans their index entries and returns False).

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        try:
            ids: _Ids = _reply(
                self.client.zrangebyscore(self._exp_key, "-inf", f"({now!r}", start=0, num=limit)
            )
        except redis.exceptions.RedisError as exc:
            raise unavailable(self.client, "finding expired sessions", exc) from exc
        return [i.decode() for i in ids]

    def count(self) -> int:
        """How many sessions are stored (after dropping ids Redis has expired).

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        keys = [self._ids_key, self._exp_key]
        args = [repr(time.time()), _PRUNE_BATCH, f"{self.key_prefix}s:"]
        try:
            _PRUNE.run(self.client, keys, args)
            return int(self.client.zcard(self._ids_key))
        except redis.exceptions.RedisError as exc:
            raise unavailable(self.client, "counting sessions", exc) from exc

    def quarantined(self, limit: int = 100) -> _Rows:
        """Snapshots that failed to decode, newest first.

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        try:
            entries: _Ids = _reply(self.client.lrange(self._quarantine_key, 0, limit - 1))
        except redis.exceptions.RedisError as exc:
            raise unavailable(self.client, "reading the quarantine", exc) from exc
        rows: _Rows = []
        for entry in entries:
            session_id, raw, error, at = msgpack.unpackb(entry, raw=False)
            rows.append(QuarantinedRow(session_id, bytes(raw), error, float(at)))
        return rows

    def flush(self) -> None:
        """Block until every save queued so far has been committed (or failed)."""
        marker = _Flush()
        with self._close_lock:
            if self._closed:
                return
            self._queue.put(marker)
        marker.done.wait()

    def close(self) -> None:
        """Commit what is queued, stop the writer and close the client (if the store made it)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._writer.join()
        if self._owns_client:
            self.client.close()

    def __repr__(self) -> str:
        return f"RedisStore({describe(self.client)!r}, key_prefix={self.key_prefix!r})"

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def session_key(self, session_id: str) -> str:
        """The key of the hash holding ``session_id`` (its ``snap`` field is the snapshot)."""
        return f"{self.key_prefix}s:{session_id}"

    def _submit(self, write: _Write) -> None:
        with self._close_lock:
            if self._closed:
                raise StoreUnavailable(f"redis store {describe(self.client)} is closed")
            self._queue.put(write)

    def _save_call(
        self,
        session: Session,
        expected: int | None,
        fence: tuple[str, int] | None,
        future: Future[None],
    ) -> _Write:
        meta = session.metadata
        snap = encode(session)
        expires = meta.expires_at
        if expires is None and self.ttl is not None:
            expires = time.time() + self.ttl
        # a session already expired by Redis's clock keeps no TTL (PEXPIREAT in the
        # past would drop it at once): it waits, indexed, for expired() and delete()
        expire_ms = round(expires * 1000) if expires is not None else 0
        if expire_ms <= time.time() * 1000:
            expire_ms = 0
        session_id = session.session_id
        keys = [
            self.session_key(session_id),
            self._ids_key,
            self._exp_key,
            f"{self._owner_prefix}{meta.owner}",
            epoch_key(self.key_prefix, fence[0]) if fence else self.session_key(session_id),
        ]
        # what list() answers from without decoding the snapshot
        info = msgpack.packb(
            [
                session.graph_id,
                session.current_task,
                session.status.value,
                meta.created_at,
                meta.last_accessed,
                meta.expires_at,
                len(snap),
            ],
            use_bin_type=True,
        )
        # few arguments: redis-py's per-argument encoding is most of a save's CPU
        args: list[Any] = [
            "save",
            "" if expected is None else str(expected),
            str(session.revision),
            f"{self._write_token}:{next(self._write_ids)}",
            "" if fence is None else str(fence[1]),
            str(expire_ms),
            "+inf" if expires is None else repr(expires),
            session_id,
            meta.owner,
            snap,
            info,
        ]
        return _Write(session_id, expected, fence, keys, args, future)

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            writes = [w for w in batch if isinstance(w, _Write)]
            self._commit([w for w in writes if w.future.set_running_or_notify_cancel()])
            for item in batch:
                if isinstance(item, _Flush):
                    item.done.set()
                elif item is None:
                    stop = True

    def _commit(self, writes: Sequence[_Write]) -> None:
        if not writes:
            return
        calls = [(w.keys, w.args) for w in writes]
        try:
            results = _WRITE.run_many(self.client, calls)
        except redis.exceptions.RedisError as exc:
            error = unavailable(self.client, f"writing {len(writes)} session(s)", exc)
            for write in writes:
                write.future.set_exception(error)
            return
        except Exception as exc:  # the writer must outlive anything, and answer every caller
            _log.exception("redis_writer_error", saves=len(writes))
            error = unavailable(self.client, f"writing {len(writes)} session(s)", exc)
            for write in writes:
                write.future.set_exception(error)
            return
        self.pipelines += 1
        self.saves += len(writes)
        for write, result in zip(writes, results, strict=True):
            try:
                self._settle(write, result)
            except Exception as exc:  # a malformed reply fails its own save, not the writer
                write.future.set_exception(
                    StoreUnavailable(f"session {write.session_id!r}: bad reply {result!r}: {exc}")
                )

    def _settle(self, write: _Write, result: Any) -> None:
        if isinstance(result, BaseException):
            error = unavailable(self.client, f"writing session {write.session_id!r}", result)
            write.future.set_exception(error)
            return
        verdict = result[0]
        if verdict == b"deleted":
            write.future.set_result(int(result[1]) == 1)
        elif verdict == b"ok":
            write.future.set_result(None)
        elif verdict == b"conflict":
            actual = int(result[1]) if result[1] else None
            write.future.set_exception(RevisionConflict(write.session_id, write.expected, actual))
        elif verdict == b"fenced" and write.fence is not None:
            name, epoch = write.fence
            write.future.set_exception(LeaseLost(name, epoch, int(result[1])))
        else:
            write.future.set_exception(
                StoreUnavailable(f"session {write.session_id!r}: unexpected reply {result!r}")
            )

    def _infos(self, index: str, ids: _Ids) -> _Infos:
        pipe = self.client.pipeline(transaction=False)
        for session_id in ids:
            pipe.hmget(self.session_key(session_id.decode()), _INFO_FIELDS)
        infos: _Infos = []
        gone: _Ids = []
        for session_id, values in zip(ids, pipe.execute(), strict=True):
            if values[0] is None:
                gone.append(session_id)
                continue
            infos.append(_info(session_id.decode(), values))
        if gone:
            self.client.zrem(index, *gone)
        return infos

    def _quarantine(self, session_id: str, raw: bytes, error: str) -> None:
        envelope = msgpack.packb([session_id, raw, error, time.time()], use_bin_type=True)
        keys = [self.session_key(session_id), self._ids_key, self._exp_key, self._quarantine_key]
        args = [raw, envelope, session_id, self._owner_prefix]
        try:
            _QUARANTINE.run(self.client, keys, args)
        except redis.exceptions.RedisError as exc:
            raise unavailable(self.client, f"quarantining session {session_id!r}", exc) from exc


def _reply(value: Any) -> Any:
    """A redis-py reply as what the command returns with ``decode_responses=False``."""
    return value


def _info(session_id: str, values: Sequence[bytes | None]) -> StoredSessionInfo:
    owner, rev, meta = (b"" if v is None else v for v in values)
    graph, task, status, created, accessed, expires, size = msgpack.unpackb(meta, raw=False)
    return StoredSessionInfo(
        session_id=session_id,
        owner=owner.decode(),
        graph_id=graph,
        current_task=task,
        status=status,
        revision=int(rev or 0),
        created_at=float(created),
        last_accessed=float(accessed),
        expires_at=None if expires is None else float(expires),
        size=int(size),
    )
