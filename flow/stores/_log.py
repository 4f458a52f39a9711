"""What every store's session log shares: the policy, replay, retention, paging and the compactor.

A session is stored as base snapshots (``flow._codec``) and step records
(``flow._record``), one per revision. Loading revision N takes the newest
base at or before N and applies the records after it up to N. A save whose
session carries the record of its step (``Session.record``) appends that
record; any other save writes a whole base and a ``"base"`` record.

Compaction writes a new base for the newest revision when the records since
the last base outweigh it (or pass ``compact_after`` records), so a load reads
at most about twice the session's size however long its history. It runs on
the store's compactor thread, never in ``save``. It also applies retention:
the oldest revision kept is the newest base at or before the retention floor,
so every revision inside retention stays loadable byte for byte; the chat
messages of the records it drops move to the session's message archive, so
the conversation is never lost.
"""

from __future__ import annotations

import builtins
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack
import msgspec

from flow._codec import decode, encode
from flow._context import ChatMessage
from flow._errors import ActorflowError, InvalidInput
from flow._logging import get_logger
from flow._record import (
    StepRecord,
    base_record,
    decode_record,
    encode_record,
    record_fields,
    replay,
)
from flow._session import Session

__all__ = [
    "DEFAULT_MIN_TAIL_BYTES",
    "DEFAULT_RETENTION",
    "MAX_AT_REST_DUE",
    "NEWEST",
    "Compactor",
    "HistoryRange",
    "LogEntry",
    "LogPolicy",
    "MessagePage",
    "MessageSource",
    "RevisionInfo",
    "compaction_due",
    "entry_for",
    "page_messages",
    "rebuild",
    "retention_cut",
    "retention_floor",
    "revision_info",
]

_log = get_logger("actorflow.store.log")

DEFAULT_RETENTION = 1000
"""Revisions time travel reaches by default."""
DEFAULT_MIN_TAIL_BYTES = 4096
"""``LogPolicy.min_tail_bytes`` by default: a small session's live steps write a base
every ~13 steps of ~300 bytes, not every 4-6 (a compaction cost as much as two or three
steps); its load replays at most about this many bytes of records."""


@dataclass(frozen=True, slots=True)
class LogPolicy:
    """How far back history reaches and when a base is rewritten.

    Attributes:
        keep_revisions: revisions kept (None: no count limit).
        keep_seconds: revisions younger than this are kept (None: no age limit).
            With both set, a revision is dropped once it is outside both.
        compact_after: most records after a base before a new base is written.
        min_tail_bytes: while its session is live, the records after a base are
            compacted once they outweigh it and make at least this many bytes; once
            the session is passivated, as soon as they outweigh it (``Compactor.at_rest``).
    """

    keep_revisions: int | None = DEFAULT_RETENTION
    keep_seconds: float | None = None
    compact_after: int = 1000
    min_tail_bytes: int = DEFAULT_MIN_TAIL_BYTES

    def __post_init__(self) -> None:
        if self.keep_revisions is not None and self.keep_revisions < 1:
            raise InvalidInput(
                f"history retention must keep at least 1 revision, not {self.keep_revisions}"
            )
        if self.keep_seconds is not None and self.keep_seconds <= 0:
            raise InvalidInput(f"history retention age must be positive, not {self.keep_seconds}")
        if self.compact_after < 1:
            raise InvalidInput(f"compact_after must be at least 1, not {self.compact_after}")
        if self.min_tail_bytes < 0:
            raise InvalidInput(f"min_tail_bytes must be at least 0, not {self.min_tail_bytes}")

    @classmethod
    def parse(cls, text: str) -> LogPolicy:
        """``"1000"`` (revisions), ``"7d"``/``"12h"``/``"30m"``/``"90s"`` (age) or ``"all"``.

        Raises:
            InvalidInput: the text is none of these.
        """
        text = text.strip().lower()
        if text == "all":
            return cls(keep_revisions=None)
        units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
        try:
            if text and text[-1] in units:
                return cls(keep_revisions=None, keep_seconds=float(text[:-1]) * units[text[-1]])
            return cls(keep_revisions=int(text))
        except ValueError:
            raise InvalidInput(
                f"history retention {text!r}: give a number of revisions (1000), an age "
                "(90s, 30m, 12h, 7d) or 'all'"
            ) from None


@dataclass(frozen=True, slots=True)
class RevisionInfo:
    """One revision of a session's history (``revisions``)."""

    revision: int
    at: float
    task: str
    input: Any
    response: str | None
    status: str
    kind: str


@dataclass(frozen=True, slots=True)
class MessagePage:
    """Chat messages, oldest first, each with its number in the conversation.

    ``next_before``: pass it as ``before`` for the page of older messages (None: no more).
    """

    items: builtins.list[tuple[int, ChatMessage]]
    next_before: int | None


@dataclass(frozen=True, slots=True)
class HistoryRange:
    """The revisions time travel reaches: ``oldest`` to ``newest``, both included."""

    oldest: int
    newest: int


class LogEntry(msgspec.Struct, frozen=True, gc=False):
    """What one save writes: a record, and a whole base when the save is not a step's.

    ``record`` is None for a save of the revision already stored (a snapshot
    on request): its record is there, only a base is added.
    """

    revision: int
    at: float
    record: bytes | None
    base: bytes | None


def entry_for(session: Session, expected: int | None) -> LogEntry:
    """The log entry of saving ``session`` over ``expected`` (encoded on the caller's thread).

    The step's own record when the session carries it and follows ``expected``;
    otherwise a whole base and a ``"base"`` record (a new session's record holds
    its chat history, which starts its conversation).
    """
    record = session.record
    if (
        record is not None
        and expected is not None
        and record.revision == session.revision == expected + 1
    ):
        record = record.settled(session)
        return LogEntry(session.revision, record.at, encode_record(record), None)
    if expected is not None and session.revision == expected:
        return LogEntry(session.revision, session.metadata.last_accessed, None, encode(session))
    messages = tuple(session.context.chat_history.messages) if expected is None else ()
    marker = base_record(session, messages=messages)
    return LogEntry(session.revision, marker.at, encode_record(marker), encode(session))


def revision_info(record: StepRecord) -> RevisionInfo:
    """What ``revisions`` shows of a record."""
    return RevisionInfo(
        record.revision,
        record.at,
        record.task,
        record.input,
        record.response,
        record.status,
        record.kind,
    )


def rebuild(base: bytes, records: Iterable[bytes], revision: int | None = None) -> Session:
    """The session at ``revision`` (None: the newest) from a base and the records after it.

    Records at or before the base's revision are skipped.

    Raises:
        SnapshotDecodeError: the base or a record did not decode.
    """
    session = decode(base)
    applied = replay(session, records, revision)
    session.stored_size = (len(base), len(base) + applied)
    return session


def compaction_due(
    policy: LogPolicy, base_size: int, tail_bytes: int, tail_count: int, *, at_rest: bool = False
) -> bool:
    """Whether the records since the base call for a new base: they are too many, or they
    outweigh it and, unless the session is at rest (passivated), make
    ``policy.min_tail_bytes``."""
    floor = base_size if at_rest else max(base_size, policy.min_tail_bytes)
    return tail_count >= policy.compact_after or (tail_count > 1 and tail_bytes >= floor)


def retention_cut(
    policy: LogPolicy,
    bases: builtins.list[int],
    records: builtins.list[tuple[int, float]],
    now: float,
) -> int:
    """The oldest revision to keep: the newest base at or before the retention floor.

    Args:
        bases: the revisions that have a base, ascending.
        records: ``(revision, at)`` of every record kept, ascending.
    """
    if not bases or not records:
        return bases[0] if bases else 0
    newest = records[-1][0]
    floors: builtins.list[int] = []
    if policy.keep_revisions is not None:
        floors.append(newest - policy.keep_revisions + 1)
    if policy.keep_seconds is not None:
        young = [rev for rev, at in records if at >= now - policy.keep_seconds]
        floors.append(young[0] if young else newest)
    if not floors:
        return bases[0]
    floor = min(floors)  # a revision inside either limit is kept
    cut = bases[0]
    for rev in bases:
        if rev <= floor:
            cut = rev
    return cut


def retention_floor(policy: LogPolicy, newest: int, young: int | None) -> int:
    """The oldest revision retention must keep (every revision from it on stays loadable).

    Args:
        newest: the session's newest revision.
        young: the oldest revision younger than ``policy.keep_seconds`` (None: none is,
            or there is no age limit).
    """
    floors: builtins.list[int] = []
    if policy.keep_revisions is not None:
        floors.append(newest - policy.keep_revisions + 1)
    if policy.keep_seconds is not None:
        floors.append(newest if young is None else young)
    return min(floors) if floors else -1


def _chunk_messages(raw: bytes) -> builtins.list[tuple[int, ChatMessage]]:
    first, messages = msgpack.unpackb(raw, raw=False)
    return [(first + i, ChatMessage(r, c, t)) for i, (r, c, t) in enumerate(messages)]


class MessageSource(Protocol):
    """How ``page_messages`` reads one session's log: a few rows at a time, newest first.

    What a store implements to page its conversation: two bounded, indexed reads.
    """

    def records(self, upto: int, count: int) -> builtins.list[tuple[int, bytes]]:
        """At most ``count`` records at or below revision ``upto``: ``(revision, bytes)``,
        newest first."""
        ...

    def chunks(self, below: int, count: int) -> builtins.list[tuple[int, bytes]]:
        """At most ``count`` archive entries whose first message is numbered below
        ``below``: ``(number, bytes)``, newest first."""
        ...


NEWEST = 2**62
"""Above any revision or message number: "no upper bound" in a read."""
_FIRST_READ, _LARGEST_READ = 8, 256


def page_messages(source: MessageSource, limit: int, before: int | None) -> MessagePage:
    """One page of the conversation, reading only about what the page holds.

    With ``before``, the newest record that starts below it is found by binary
    search over the records' revisions (message numbers only grow with the
    revision), so a page deep in a long history reads ``O(log n)`` records plus
    the page's own, never every record newer than it.
    """
    if limit < 1:
        raise InvalidInput(f"limit must be at least 1, not {limit}")
    found: builtins.list[tuple[int, ChatMessage]] = []
    lowest: int | None = None
    for kind, raw in _newest_first(source, before):
        if kind == "r":
            record = decode_record(raw)
            items = [(record.message_seq + i, m) for i, m in enumerate(record.messages)]
        else:
            items = _chunk_messages(raw)
        for seq, message in reversed(items):
            if lowest is not None and seq >= lowest:
                continue  # a record's messages also in an older archive entry
            lowest = seq
            if before is not None and seq >= before:
                continue
            if len(found) == limit:
                return MessagePage(found[::-1], found[-1][0])
            found.append((seq, message))
    return MessagePage(found[::-1], None)


def _newest_first(source: MessageSource, before: int | None) -> Iterator[tuple[str, bytes]]:
    """The records (``"r"``) that may hold messages below ``before``, then the archive
    entries (``"a"``), newest first, read in batches that grow as the page needs more."""
    upto: int | None = NEWEST if before is None else _last_record_before(source, before)
    count = _FIRST_READ
    while upto is not None:
        rows = source.records(upto, count)
        for _, raw in rows:
            yield "r", raw
        upto = rows[-1][0] - 1 if len(rows) == count else None
        count = min(count * 2, _LARGEST_READ)
    below: int | None = NEWEST if before is None else before
    count = _FIRST_READ
    while below is not None:
        chunks = source.chunks(below, count)
        for _, raw in chunks:
            yield "a", raw
        below = chunks[-1][0] if len(chunks) == count else None
        count = min(count * 2, _LARGEST_READ)


def _last_record_before(source: MessageSource, before: int) -> int | None:
    """The newest revision whose record starts its messages below ``before`` (None: none)."""
    newest = source.records(NEWEST, 1)
    if not newest:
        return None
    lo, hi = -1, newest[0][0]  # lo: a revision known to qualify (-1: none yet)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        probe = source.records(mid, 1)
        if not probe or record_fields(probe[0][1])[_MESSAGE_SEQ] < before:
            lo = mid
        else:
            hi = mid - 1
    return lo if lo >= 0 and source.records(lo, 1) else None


_MESSAGE_SEQ = 17  # a record's ``message_seq`` in ``encode_record``'s list
MAX_AT_REST_DUE = 100_000
"""Most sessions a ``Compactor`` remembers to compact when passivated (then it starts over)."""


class Compactor:
    """One background thread that compacts the sessions it is asked to, each once per request.

    ``compact`` is the store's own method; a failure is logged and the
    session is compacted again at its next request. A store's writer ``offer``s
    every session a commit appended to: compacted now when its records call for
    it while live (``compaction_due``), else noted when they would once it rests,
    and compacted when its actor is passivated (``at_rest``): a live session
    writes fewer bases, a passivated one loads with few records to replay.

    An offer for the session being compacted is ignored: the writer's figures in it
    predate the new base (its commit resets them), and taking it would write a
    second base a few records after the first one. Records appended meanwhile are
    offered again, with figures measured from the new base, at their next commit.

    Threads: ``request``, ``offer`` and ``at_rest`` are called from any thread (a
    writer, an actor's turn) and never block; the fields are under one lock.
    """

    def __init__(self, name: str, compact: Callable[[str], object], policy: LogPolicy) -> None:
        self._compact = compact
        self._policy = policy  # the store's own: the rule ``offer`` applies
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._pending: set[str] = set()
        # Sessions whose records outweigh their base but not min_tail_bytes: compacted
        # when passivated. Bounded: forgetting them only leaves a compaction to later.
        self._at_rest_due: set[str] = set()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = 0
        self._running: str | None = None  # the session being compacted
        self.compactions = 0
        """Compactions run so far (a compaction that found nothing to do included)."""
        self._thread = threading.Thread(target=self._loop, name=f"compactor:{name}", daemon=True)
        self._thread.start()

    def request(self, session_id: str) -> None:
        """Compact ``session_id`` soon (once, however often it is asked before it runs)."""
        self._request(session_id, offered=False)

    def offer(self, session_id: str, base_size: int, tail_bytes: int, tail_count: int) -> None:
        """A commit appended to ``session_id``'s log, which now has ``tail_count`` records
        of ``tail_bytes`` after a base of ``base_size``: compact it if they call for it."""
        policy = self._policy
        if compaction_due(policy, base_size, tail_bytes, tail_count):
            self._request(session_id, offered=True)
        elif compaction_due(policy, base_size, tail_bytes, tail_count, at_rest=True):
            with self._lock:
                if len(self._at_rest_due) >= MAX_AT_REST_DUE:
                    self._at_rest_due.clear()
                self._at_rest_due.add(session_id)

    def at_rest(self, session_id: str) -> None:
        """``session_id`` was passivated: compact it soon if its records outweigh its base."""
        with self._lock:
            if session_id not in self._at_rest_due:
                return
        self.request(session_id)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every requested compaction has run; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def close(self) -> None:
        """Stop after the compactions already requested."""
        self._queue.put(None)
        self._thread.join()

    def _request(self, session_id: str, *, offered: bool) -> None:
        # Under the lock that the loop holds while it takes a session from pending to
        # running: a session is always one of queued, running or neither here.
        with self._lock:
            if offered and session_id == self._running:
                return
            self._at_rest_due.discard(session_id)
            if session_id in self._pending:
                return
            self._pending.add(session_id)
            self._busy += 1
        self._queue.put(session_id)

    def _loop(self) -> None:
        while (session_id := self._queue.get()) is not None:
            with self._lock:
                self._pending.discard(session_id)
                self._running = session_id
            try:
                self._compact(session_id)
            except ActorflowError as exc:
                _log.warning("compaction_failed", session_id=session_id, detail=str(exc))
            except Exception:
                _log.exception("compaction_failed", session_id=session_id)
            with self._idle:
                self._running = None
                self.compactions += 1
                self._busy -= 1
                self._idle.notify_all()
