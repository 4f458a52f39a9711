"""RedisStore: sessions in Redis, shared by several daemons.

Keys (``prefix`` defaults to ``actorflow:``):

- ``<prefix>s:<session_id>``: a hash per session: ``rev``, ``wid`` (the id of
  the write that put it there), ``owner``, ``meta``: what ``list`` answers
  from without decoding anything (msgpack ``[graph, task, status, created_at,
  last_accessed, expires_at, size]``), and where its log stands: ``brev`` (the
  newest base's revision), ``bsize``, and ``tb``/``tc`` (bytes and count of the
  records after that base). Its expiry is the session's ``expires_at``
  (PEXPIREAT), so Redis drops expired sessions itself and no sweep is needed.
- The session log (``flow.stores._log``), with the same expiry:
  ``<prefix>b:<session_id>``, the base snapshots (a sorted set scored by
  revision); ``<prefix>r:<session_id>``, the step records (likewise);
  ``<prefix>m:<session_id>``, archived chat messages (scored by number).
- ``<prefix>ids``: every session id (a sorted set, all scores 0, read in
  lexical order); ``<prefix>o:<owner>``: the same per owner; ``<prefix>exp``:
  ids scored by ``expires_at``. Ids whose hash has expired linger in them
  until ``list``, ``count`` or ``delete`` meets them and removes them.
- ``<prefix>timers``: the due-time index of timers (``flow.stores._timer_index``),
  ids scored by their earliest timer's due time, updated by the save script;
  an id whose hash Redis expired is removed when ``due_timers`` meets it.
- ``<prefix>quarantine``: a list of snapshots that failed to decode (msgpack
  ``[session_id, raw, error, quarantined_at]``), newest first; never trimmed.

A save is one Lua script (compare-and-set on ``rev``, the optional lease fence,
the appended record or the new base, and the index updates, atomically); a
load is one script too (the newest base at or before the revision and the
records after it). ``save`` queues the snapshot for
a writer thread, which sends everything queued in one pipeline of EVALSHA calls
(group commit) in the order it was saved, then completes the futures.
"""

from __future__ import annotations

import itertools
import math
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

from flow._errors import (
    ActorflowError,
    InvalidInput,
    RevisionConflict,
    RevisionNotFound,
    SessionNotFound,
    SnapshotDecodeError,
    StoreUnavailable,
)
from flow._logging import get_logger
from flow._rebase import archived, rebased
from flow._record import decode_record, record_fields
from flow._session import Session
from flow.stores._lease import LeaseLost, epoch_key
from flow.stores._log import (
    Compactor,
    HistoryRange,
    LogPolicy,
    MessagePage,
    RevisionInfo,
    entry_for,
    page_messages,
    rebuild,
    retention_floor,
    revision_info,
)
from flow.stores._protocol import QuarantinedRow, SessionPage, StoredSessionInfo, check_load_many
from flow.stores._redis_client import LuaScript, connect, describe, unavailable
from flow.stores._timer_index import DueTimer, index_change

__all__ = ["RedisStore"]

_log = get_logger("actorflow.store.redis")

MAX_BATCH = 512
"""Most saves sent in one pipeline."""

_PRUNE_BATCH = 1000

_WRITE = LuaScript(
    """
if ARGV[1] == 'delete' then
  local owner = redis.call('HGET', KEYS[1], 'owner')
  local existed = redis.call('DEL', KEYS[1])
  redis.call('DEL', KEYS[4], KEYS[5], KEYS[6])
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[2])
  redis.call('ZREM', KEYS[7], ARGV[2])
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
  'meta', ARGV[11])
if ARGV[10] ~= '' then
  redis.call('ZADD', KEYS[7], ARGV[3], ARGV[10])
end
local tb, tc, bsize
if ARGV[12] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[6], ARGV[3], ARGV[3])
  redis.call('ZADD', KEYS[6], ARGV[3], ARGV[12])
  redis.call('HSET', KEYS[1], 'brev', ARGV[3], 'bsize', #ARGV[12], 'tb', 0, 'tc', 0)
  tb, tc, bsize = 0, 0, #ARGV[12]
else
  tb = redis.call('HINCRBY', KEYS[1], 'tb', #ARGV[10])
  tc = redis.call('HINCRBY', KEYS[1], 'tc', 1)
  bsize = tonumber(redis.call('HGET', KEYS[1], 'bsize') or '0')
end
for _, key in ipairs({KEYS[1], KEYS[6], KEYS[7], KEYS[8]}) do
  if ARGV[6] ~= '0' then
    redis.call('PEXPIREAT', key, ARGV[6])
  else
    redis.call('PERSIST', key)
  end
end
redis.call('ZADD', KEYS[2], 0, ARGV[8])
redis.call('ZADD', KEYS[3], ARGV[7], ARGV[8])
redis.call('ZADD', KEYS[4], 0, ARGV[8])
if ARGV[13] == '-' then
  redis.call('ZREM', KEYS[9], ARGV[8])
elseif ARGV[13] ~= '' then
  redis.call('ZADD', KEYS[9], ARGV[13], ARGV[8])
end
return {'ok', tostring(bsize), tostring(tb), tostring(tc)}
"""
)
"""One script for every write, so that one pipeline uses one script: after a Redis
restart every call of a pipeline is refused with NOSCRIPT alike, and running them
again keeps their order."""

_QUARANTINE = LuaScript(
    """
local owner = redis.call('HGET', KEYS[1], 'owner')
if not redis.call('ZSCORE', KEYS[5], ARGV[1]) and not redis.call('ZSCORE', KEYS[6], ARGV[1]) then
  return 0
end
redis.call('LPUSH', KEYS[4], ARGV[2])
redis.call('DEL', KEYS[1], KEYS[5], KEYS[6], KEYS[7])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[3])
if owner then
  redis.call('ZREM', ARGV[4] .. owner, ARGV[3])
end
return 1
"""
)

_LOAD = LuaScript(
    """
local rev = redis.call('HGET', KEYS[1], 'rev')
if not rev then
  return {'none'}
end
local target = rev
if ARGV[1] ~= '' then
  target = ARGV[1]
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if #oldest == 0 or tonumber(target) > tonumber(rev) or tonumber(target) < tonumber(oldest[2]) then
    return {'range', oldest[2] or rev, rev}
  end
end
local base = redis.call('ZREVRANGEBYSCORE', KEYS[2], target, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
if #base == 0 then
  return {'none'}
end
local records = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. base[2], target)
return {'ok', base[1], records}
"""
)
"""The newest base at or before the revision asked for (ARGV[1], '' for the
newest) and the records after it, in one atomic read."""

_COMPACT_READ = LuaScript(
    """
local state = redis.call('HMGET', KEYS[1], 'rev', 'brev')
if not state[1] then
  return {}
end
local base = redis.call('ZRANGEBYSCORE', KEYS[2], state[2], state[2])
local scores = {}
local all = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = 2, #all, 2 do
  scores[#scores + 1] = all[i]
end
local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
local tail = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. state[2], '+inf')
return {state[1], state[2], base[1] or '', scores, tail, oldest[2] or state[1]}
"""
)
"""What compaction reads: revision, base revision, that base, every base's
revision (not its bytes), the records after the base, the oldest record's revision."""

_COMPACT = LuaScript(
    """
if redis.call('ZSCORE', KEYS[3], ARGV[1]) ~= ARGV[2] then
  return 0
end
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  if tonumber(redis.call('HGET', KEYS[1], 'brev')) < tonumber(ARGV[2]) then
    local tail = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. ARGV[2], '+inf')
    local bytes = 0
    for _, record in ipairs(tail) do
      bytes = bytes + #record
    end
    redis.call('HSET', KEYS[1], 'brev', ARGV[2], 'bsize', #ARGV[3], 'tb', bytes, 'tc', #tail)
  end
end
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[4])
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[4], ttl)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[6])
return 1
"""
)
"""A compaction, if the newest record read (ARGV[1], at revision ARGV[2]) is
still there: the new base, the archived messages, the retention cut."""

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

_DUE = LuaScript(
    """
local found = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[4], ARGV[1], 'WITHSCORES',
  'LIMIT', 0, ARGV[2])
local due = {}
for i = 1, #found, 2 do
  if redis.call('EXISTS', ARGV[3] .. found[i]) == 0 then
    redis.call('ZREM', KEYS[1], found[i])
  else
    due[#due + 1] = found[i]
    due[#due + 1] = found[i + 1]
  end
end
return due
"""
)
"""Up to ARGV[2] ids of the timer index due by ARGV[1] (and from ARGV[4]), soonest first, dropping
the ids whose session hash Redis has expired."""

# aliases: inside RedisStore, ``list`` names the method
_Ids = list[bytes]
_Strs = list[str]
_Infos = list[StoredSessionInfo]
_Rows = list[QuarantinedRow]
_RevisionInfos = list[RevisionInfo]
_DueTimers = list[DueTimer]

_INFO_FIELDS = ["owner", "rev", "meta", "bsize", "tb"]


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
        policy: history retention and compaction (default: keep 1,000 revisions).

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
        policy: LogPolicy | None = None,
    ) -> None:
        self.url = url if client is None else None
        self.policy = policy or LogPolicy()
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
        self._timers_key = f"{key_prefix}timers"
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
        self.compactor = Compactor(f"redis:{key_prefix}", self.compact, self.policy)

    def load(self, session_id: str, revision: int | None = None) -> Session | None:
        """The stored session (or its revision ``revision``), or None (also once Redis expired it).

        Raises:
            RevisionNotFound: ``revision`` is outside the retained history.
            SnapshotDecodeError: a base or record did not decode; the session has been
                quarantined.
            StoreUnavailable: Redis could not be reached.
        """
        keys = [
            self.session_key(session_id),
            self._key("b", session_id),
            self._key("r", session_id),
        ]
        try:
            reply = _LOAD.run(self.client, keys, ["" if revision is None else str(revision)])
        except redis.exceptions.RedisError as exc:
            raise unavailable(self.client, f"loading session {session_id!r}", exc) from exc
        if reply[0] == b"none":
            return None
        if reply[0] == b"range":
            assert revision is not None
            raise RevisionNotFound(session_id, revision, int(float(reply[1])), int(reply[2]))
        return self.rebuild(session_id, reply[1], reply[2], revision)

    def load_many(self, session_ids: Sequence[str]) -> dict[str, Session | ActorflowError]:
        """Each stored session of ``session_ids``, in one pipeline (one round trip; see
        `SessionStore.load_many`)."""
        ids = check_load_many(session_ids)
        calls = [
            ([self.session_key(sid), self._key("b", sid), self._key("r", sid)], [""]) for sid in ids
        ]
        try:
            replies = _LOAD.run_many(self.client, calls)
        except redis.exceptions.RedisError as exc:
            raise unavailable(self.client, f"loading {len(ids)} sessions", exc) from exc
        loaded: dict[str, Session | ActorflowError] = {}
        for session_id, reply in zip(ids, replies, strict=True):
            if isinstance(reply, redis.exceptions.RedisError):
                raise unavailable(self.client, f"loading session {session_id!r}", reply)
            if reply[0] == b"none":
                continue
            try:
                loaded[session_id] = self.rebuild(session_id, reply[1], reply[2])
            except SnapshotDecodeError as exc:
                loaded[session_id] = exc
        return loaded

    def rebuild(
        self, session_id: str, base: bytes, records: Sequence[bytes], revision: int | None = None
    ) -> Session:
        """The session from a base and its records, read from this store.

        Raises:
            SnapshotDecodeError: one did not decode; the session has been quarantined.
            StoreUnavailable: Redis could not be reached to quarantine it.
        """
        try:
            return rebuild(base, records, revision)
        except SnapshotDecodeError as exc:
            self._quarantine(session_id, exc.raw, str(exc))
            raise SnapshotDecodeError(
                f"session {session_id!r}: {exc}; the snapshot was moved to quarantine", exc.raw
            ) from exc

    def revisions(
        self, session_id: str, limit: int = 100, before: int | None = None
    ) -> _RevisionInfos:
        """The retained revisions below ``before``, newest first, at most ``limit``.

        Raises:
            SessionNotFound: no such session.
            StoreUnavailable: Redis could not be reached.
        """
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, not {limit}")
        top = "+inf" if before is None else f"({before}"
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.exists(self.session_key(session_id))
            pipe.zrevrangebyscore(self._key("r", session_id), top, "-inf", start=0, num=limit)
            exists, rows = pipe.execute()
        except redis.exceptions.RedisError as exc:
            raise unavailable(self.client, f"reading revisions of {session_id!r}", exc) from exc
        if not exists:
            raise SessionNotFound(session_id)
        return [revision_info(decode_record(raw)) for raw in rows]

    def messages(self, session_id: str, limit: int = 100, before: int | None = None) -> MessagePage:
        """The newest ``limit`` chat messages numbered below ``before``, oldest first.

        Raises:
            SessionNotFound: no such session.
            StoreUnavailable: Redis could not be reached.
        """
        try:
            if not self.client.exists(self.session_key(session_id)):
                raise SessionNotFound(session_id)
            rows = _MessageRows(self.client, self._key("r", session_id), self._key("m", session_id))
            return page_messages(rows, limit, before)
        except redis.exceptions.RedisError as exc:
            raise unavailable(self.client, f"reading messages of {session_id!r}", exc) from exc

    def history_range(self, session_id: str) -> HistoryRange | None:
        """The revisions time travel reaches, or None when there is no such session."""
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.hget(self.session_key(session_id), "rev")
            pipe.zrange(self._key("b", session_id), 0, 0, withscores=True)
            rev, oldest = pipe.execute()
        except redis.exceptions.RedisError as exc:
            raise unavailable(self.client, f"reading history of {session_id!r}", exc) from exc
        if rev is None or not oldest:
            return None
        return HistoryRange(int(oldest[0][1]), int(rev))

    def passivated(self, session_id: str) -> None:
        """``session_id`` is at rest: compact it soon if its records outweigh its base."""
        self.compactor.at_rest(session_id)

    def compact(self, session_id: str) -> bool:
        """Write a base for the newest revision and apply retention; False if nothing to do.

        Runs on the compactor thread: one read script, the rebuild here, one write script.
        """
        keys = [
            self.session_key(session_id),
            self._key("b", session_id),
            self._key("r", session_id),
            self._key("m", session_id),
        ]
        try:
            reply = _COMPACT_READ.run(self.client, keys[:3], [])
        except redis.exceptions.RedisError as exc:
            raise unavailable(self.client, f"compacting {session_id!r}", exc) from exc
        if not reply or not reply[2]:
            return False
        newest, oldest = int(reply[0]), int(float(reply[5]))
        bases = sorted(int(float(score)) for score in reply[3])
        tail_raws: list[bytes] = reply[4]
        made = rebased(reply[2], tail_raws) if tail_raws else None
        if made is not None and newest not in bases:
            bases.append(newest)
        young = None
        try:
            if self.policy.keep_seconds is not None:  # the records' times decide
                all_raws: _Ids = _reply(self.client.zrange(keys[2], 0, -1))
                cutoff = time.time() - self.policy.keep_seconds
                young = next(
                    (int(d[1]) for d in map(record_fields, all_raws) if d[2] >= cutoff), None
                )
            floor = retention_floor(self.policy, newest, young)
            cut = max((rev for rev in bases if rev <= floor), default=None)
            dropped: _Ids = []
            if cut is not None and oldest < cut:
                dropped = _reply(self.client.zrangebyscore(keys[2], "-inf", f"({cut}"))
            if made is None and not dropped:
                return False
            # the guard of the write: the newest record, still there unchanged
            newest_raw: bytes = (
                tail_raws[-1]
                if tail_raws
                else _reply(self.client.zrangebyscore(keys[2], newest, newest))[0]
            )
        except redis.exceptions.RedisError as exc:
            raise unavailable(self.client, f"compacting {session_id!r}", exc) from exc
        first, chunk = archived(dropped) or (0, b"")
        args = [
            newest_raw,
            str(newest),
            made or b"",
            chunk,
            str(first),
            str(-1 if cut is None else cut),
        ]
        try:
            return bool(_COMPACT.run(self.client, keys, args))
        except redis.exceptions.RedisError as exc:
            raise unavailable(self.client, f"compacting {session_id!r}", exc) from exc

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
        keys = [
            self.session_key(session_id),
            self._ids_key,
            self._exp_key,
            self._key("b", session_id),
            self._key("r", session_id),
            self._key("m", session_id),
            self._timers_key,
        ]
        args = ["delete", session_id, self._owner_prefix]
        self._submit(_Write(session_id, None, None, keys, args, future))
        return future.result()

    def put_raw(self, session_id: str, data: bytes) -> None:
        """Replace the newest base's bytes of a session (tests use it to corrupt one).

        Raises:
            KeyError: no session ``session_id`` is stored.
            StoreUnavailable: Redis could not be reached.
        """
        key = self.session_key(session_id)
        bases = self._key("b", session_id)
        try:
            found = self.client.hget(key, "brev")
            if found is None:
                raise KeyError(session_id)
            brev = float(found)
            pipe = self.client.pipeline(transaction=True)
            pipe.zremrangebyscore(bases, brev, brev)
            pipe.zadd(bases, {data: float(brev)})
            pipe.execute()
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

    def due_timers(self, until: float, limit: int = 100, since: float | None = None) -> _DueTimers:
        """Sessions whose earliest timer is due in (``since``, ``until``], soonest first.

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        args = [
            "+inf" if until == math.inf else repr(until),
            limit,
            f"{self.key_prefix}s:",
            "-inf" if since is None else f"({since!r}",
        ]
        try:
            found: _Ids = _DUE.run(self.client, [self._timers_key], args)
        except redis.exceptions.RedisError as exc:
            raise unavailable(self.client, "reading the timer index", exc) from exc
        return [DueTimer(found[i].decode(), float(found[i + 1])) for i in range(0, len(found), 2)]

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
        if self._closed:
            return
        self.compactor.close()
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
        """The key of the hash holding ``session_id``'s revision and index fields."""
        return f"{self.key_prefix}s:{session_id}"

    def _key(self, kind: str, session_id: str) -> str:
        return f"{self.key_prefix}{kind}:{session_id}"

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
        entry = entry_for(session, expected)
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
            self._key("b", session_id),
            self._key("r", session_id),
            self._key("m", session_id),
            self._timers_key,
        ]
        timers_changed, next_due = index_change(session, entry)
        # what list() answers from without decoding the snapshot
        info = msgpack.packb(
            [
                session.graph_id,
                session.current_task,
                session.status._value_,
                meta.created_at,
                meta.last_accessed,
                meta.expires_at,
                0,  # the size: _info adds up the log's fields instead
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
            entry.record or b"",
            info,
            entry.base or b"",
            ("-" if next_due is None else repr(next_due)) if timers_changed else "",
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
            if len(result) > 1:  # first: the future's callbacks may tell it the session rests
                self.compactor.offer(
                    write.session_id, int(result[1]), int(result[2]), int(result[3])
                )
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
        keys = [
            self.session_key(session_id),
            self._ids_key,
            self._exp_key,
            self._quarantine_key,
            self._key("b", session_id),
            self._key("r", session_id),
            self._key("m", session_id),
        ]
        args = [raw, envelope, session_id, self._owner_prefix]
        try:
            _QUARANTINE.run(self.client, keys, args)
        except redis.exceptions.RedisError as exc:
            raise unavailable(self.client, f"quarantining session {session_id!r}", exc) from exc


def _reply(value: Any) -> Any:
    """A redis-py reply as what the command returns with ``decode_responses=False``."""
    return value


def _info(session_id: str, values: Sequence[bytes | None]) -> StoredSessionInfo:
    owner, rev, meta, bsize, tb = (b"" if v is None else v for v in values)
    graph, task, status, created, accessed, expires, _ = msgpack.unpackb(meta, raw=False)
    size = int(bsize or 0) + int(tb or 0)  # what a load reads
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


class _MessageRows:
    """A session's records and archive entries for ``page_messages``: each read is one
    ZREVRANGEBYSCORE of at most ``count`` members (``flow.stores._log.MessageSource``).

    The reads are not one transaction: a compaction between them moves records
    into the archive, which is read after the records, so nothing is missed
    (``page_messages`` skips a message seen twice).
    """

    def __init__(self, client: redis.Redis, records_key: str, archive_key: str) -> None:
        self._client = client
        self._records_key = records_key
        self._archive_key = archive_key

    def records(self, upto: int, count: int) -> list[tuple[int, bytes]]:
        """At most ``count`` records at or below revision ``upto``, newest first."""
        return self._read(self._records_key, str(upto), count)

    def chunks(self, below: int, count: int) -> list[tuple[int, bytes]]:
        """At most ``count`` archive entries starting below message ``below``, newest first."""
        return self._read(self._archive_key, f"({below}", count)

    def _read(self, key: str, top: str, count: int) -> list[tuple[int, bytes]]:
        rows: list[tuple[bytes, float]] = _reply(
            self._client.zrevrangebyscore(key, top, "-inf", start=0, num=count, withscores=True)
        )
        return [(int(score), raw) for raw, score in rows]
