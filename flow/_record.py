"""A session log's step records: what one revision changed, made as the step works.

A store keeps, per session, a base snapshot and the records after it; loading
is the base with each record applied in turn (``replay``). ``step`` makes the
record from what its working copy noted while the tasks ran (keys set and
removed, messages appended, the back stack's low-water mark), so a record costs
what the step changed, never the session's length, and no two sessions are
ever compared.

A record of kind ``"base"`` marks a revision that was written whole (a new
session, a rollback, a repair): the store holds a base snapshot at that
revision, and replay starts there instead of applying it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, Literal

import msgpack
import msgspec
from msgspec.structs import force_setattr, replace

from flow._codec import meta_fields, metadata_from, unpacked
from flow._context import ChatHistory, ChatMessage, Role
from flow._errors import SnapshotDecodeError
from flow._frozen import Frozen
from flow._idempotency import KeyEntry, KeyTable
from flow._session import STATUS_OF, STATUSES, Session, SessionMetadata
from flow._timers import PendingTimer

__all__ = [
    "RecordKind",
    "StepRecord",
    "base_record",
    "decode_record",
    "encode_record",
    "record_fields",
    "record_of",
    "replay",
]

RecordKind = Literal["step", "base"]
RECORD_VERSION = 1
_local = threading.local()


class StepRecord(Frozen, frozen=True, gc=False):
    """One revision of a session's log.

    Attributes:
        revision: the revision this record makes.
        at: when, UNIX seconds.
        kind: ``"step"`` (apply the delta below) or ``"base"`` (a whole snapshot
            at this revision is stored beside the records).
        task: the last task that ran (the session's task for a base).
        input: the step's input.
        response: the step's last response.
        status, status_message, current_task, graph_version: the session's after.
        back_keep, back_push: the back stack after is its first ``back_keep``
            entries before, then ``back_push``.
        cleared: the context's keys were cleared first.
        removed: keys removed.
        set: ``(key, value, moved)`` in the map's order; a moved key is put last.
        messages: chat messages appended (the whole conversation keeps them).
        message_seq: the conversation number of the first of ``messages``.
        history_cleared_at: the history was cleared after this many of ``messages``.
        metadata: the session's metadata after.
        request_id: the step's idempotency key (None: the step had none).
        input_digest: for a keyed step, the digest of its mode and input.
        responses: for a keyed step, every response its tasks gave (its answer's).
        timers: the session's pending timers after, when the step changed them
            (None: unchanged; at most ``flow._timers.MAX_TIMERS``).
        fired: the timer whose firing made this step (None: an input did).

    A frozen ``msgspec.Struct``, not a frozen dataclass: one is made per step and
    one per replayed record, and a frozen dataclass of 25 fields took 3.6 us to
    build (one ``object.__setattr__`` a field) against 0.1 us. Not tracked by the
    garbage collector (``gc=False``): a record never refers back to itself.
    """

    revision: int
    at: float
    kind: RecordKind
    task: str
    input: Any
    response: str | None
    status: str
    status_message: str | None
    current_task: str
    graph_version: str
    back_keep: int
    back_push: tuple[str, ...]
    cleared: bool
    removed: tuple[str, ...]
    set: tuple[tuple[str, Any, bool], ...]
    messages: tuple[ChatMessage, ...]
    message_seq: int
    history_cleared_at: int | None
    metadata: SessionMetadata
    request_id: str | None = None
    input_digest: bytes | None = None
    responses: tuple[str, ...] = ()
    timers: tuple[PendingTimer, ...] | None = None
    fired: str | None = None
    # ``encode_record``'s bytes, kept once made: the size guard measures the record
    # and the store appends it, and a record never changes. A cache: not compared or
    # shown (``Frozen``).
    _packed: bytes | None = None

    def with_key(self, key: str, digest: bytes, responses: tuple[str, ...]) -> StepRecord:
        """This record, of a step that carried idempotency key ``key`` (encoded anew)."""
        return replace(self, request_id=key, input_digest=digest, responses=responses, _packed=None)

    def settled(self, session: Session) -> StepRecord:
        """This record with ``session``'s status, tasks and metadata as they are now: what
        a save appends (the actor sets a step's expiry after it ran). Itself when equal."""
        if (
            self.metadata is session.metadata
            and self.status == session.status._value_
            and self.status_message == session.status_message
            and self.current_task == session.current_task
            and self.graph_version == session.graph_version
        ):
            return self
        return replace(  # encoded anew: its bytes would hold the old fields
            self,
            status=session.status._value_,
            status_message=session.status_message,
            current_task=session.current_task,
            graph_version=session.graph_version,
            metadata=session.metadata,
            _packed=None,
        )

    def key_entry(self, session_id: str) -> KeyEntry | None:
        """The idempotency key entry this record holds (None: the step had no key)."""
        if self.request_id is None or self.input_digest is None:
            return None
        from flow._step import StepResult

        result = StepResult(
            session_id=session_id,
            task=self.task,
            response=self.response,
            responses=self.responses,
            status=STATUS_OF[self.status],
            next_task=self.current_task,
            status_message=self.status_message,
            revision=self.revision,
        )
        return KeyEntry(self.request_id, self.input_digest, self.at, result)


def record_of(
    work: Session,
    *,
    task: str,
    input: Any,
    response: str | None,
    back_low: int,
    timers_changed: bool = False,
    fired: str | None = None,
) -> StepRecord | None:
    """The record of the step whose working copy is ``work`` (after ``finish``).

    None when a task replaced the context's chat history with a new one (its
    changes were not noted): the session is then saved whole.
    """
    ctx = work.context
    if ctx.chat_history._added is None:
        return None
    cleared, removed, set_ = ctx.changes()
    added, cleared_at = ctx.chat_history.changes()
    return StepRecord(
        revision=work.revision,
        at=work.metadata.last_accessed,
        kind="step",
        task=task,
        input=input,
        response=response,
        status=work.status._value_,
        status_message=work.status_message,
        current_task=work.current_task,
        graph_version=work.graph_version,
        back_keep=back_low,
        back_push=tuple(work.back_stack[back_low:]),
        cleared=cleared,
        removed=tuple(removed),
        set=tuple(set_),
        messages=tuple(added),
        message_seq=ctx.chat_history.total - len(added),
        history_cleared_at=cleared_at,
        metadata=work.metadata,
        timers=work.timers if timers_changed else None,
        fired=fired,
    )


def base_record(session: Session, *, messages: tuple[ChatMessage, ...] = ()) -> StepRecord:
    """The record of a revision written whole (``messages``: those it adds to the conversation)."""
    history = session.context.chat_history
    return StepRecord(
        revision=session.revision,
        at=session.metadata.last_accessed,
        kind="base",
        task=session.current_task,
        input=None,
        response=None,
        status=session.status._value_,
        status_message=session.status_message,
        current_task=session.current_task,
        graph_version=session.graph_version,
        back_keep=0,
        back_push=tuple(session.back_stack),
        cleared=False,
        removed=(),
        set=(),
        messages=messages,
        message_seq=history.total - len(messages),
        history_cleared_at=None,
        metadata=session.metadata,
    )


class _StepDelta(msgspec.Struct, array_like=True, gc=False):
    """A record as ``replay`` reads it: ``encode_record``'s list, each field it applies
    typed (checked in C as msgspec reads it), the others kept undecoded."""

    version: Literal[1]
    revision: int
    at: msgspec.Raw
    kind: RecordKind
    task: msgspec.Raw
    input: msgspec.Raw
    response: msgspec.Raw
    status: str
    status_message: str | None
    current_task: str
    graph_version: str
    back_keep: int
    back_push: list[str]
    cleared: bool
    removed: list[str]
    set: list[tuple[str, msgspec.Raw, bool]]  # values as a task gave them: ``unpacked``
    messages: list[tuple[Role, str, str]]
    message_seq: int
    history_cleared_at: int | None
    metadata: list[Any]
    request_id: str | None
    digest: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    # absent in records of builds before timers; nil when the step left them unchanged
    timers: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    fired: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


_read_delta = msgspec.msgpack.Decoder(_StepDelta).decode
_NIL = msgspec.Raw(b"\xc0")


def replay(session: Session, records: Iterable[bytes], revision: int | None = None) -> int:
    """Apply to ``session`` (the loader's own) the records after its revision, up to
    ``revision`` (None: all of them), in place; return the bytes of those applied.

    Each record is read by msgspec as a ``_StepDelta``, not decoded whole
    (``decode_record``): no ``StepRecord``, ``ChatMessage`` or ``SessionMetadata``
    is made for a record a later one supersedes, what a load does not apply (the
    input, the response) is never decoded, and a message stays a stored tuple
    until it is read (as a base's messages do). Status, metadata and timers, of
    which only the newest applied record's value counts, are read and checked on
    that record.

    Raises:
        SnapshotDecodeError: a record's fields are not what ``encode_record`` writes.
        ValueError: a record is a base's, or does not follow the revision before it.
    """
    data = session.context._data
    history = session.context.chat_history
    back = session.back_stack
    newest = session.revision
    last: tuple[_StepDelta, bytes] | None = None
    timers: tuple[msgspec.Raw, bytes] | None = None  # the newest applied, with its record
    applied = 0
    for raw in records:
        try:
            delta = _read_delta(raw)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise _malformed(raw, exc) from None
        number = delta.revision
        if number <= newest:
            continue
        if revision is not None and number > revision:
            break
        if delta.kind != "step":
            raise ValueError(f"revision {number} is a base: load its snapshot instead")
        if number != newest + 1:
            raise ValueError(f"record of revision {number} does not follow revision {newest}")
        try:  # (no context manager: a load runs this once a record)
            _apply(delta, data, history, back)
        except Exception as exc:
            raise _malformed(raw, exc) from exc
        if delta.timers and delta.timers != _NIL:
            timers = (delta.timers, raw)
        if delta.request_id is not None:  # an idempotency key: rare enough to decode whole
            entry = decode_record(raw).key_entry(session.session_id)
            if entry is not None:
                if session.keys is None:
                    session.keys = KeyTable(session.session_id)
                session.keys.add(entry)
        newest, last = number, (delta, raw)
        applied += len(raw)
    if last is not None:
        # the window is cut once, not after each record: a full one (1,000 messages)
        # moved all of its references at every record (about 0.2 us a record)
        history._trim()
        delta, raw = last
        try:
            session.status = STATUS_OF[delta.status]
            session.metadata = metadata_from(delta.metadata)[0]
        except Exception as exc:
            raise _malformed(raw, exc) from exc
        if timers is not None:
            packed, raw = timers
            try:
                session.timers = tuple(map(PendingTimer.decoded, unpacked(packed)))
            except Exception as exc:
                raise _malformed(raw, exc) from exc
        session.revision = newest
        session.current_task = delta.current_task
        session.status_message = delta.status_message
        session.graph_version = delta.graph_version
    return applied


def _apply(delta: _StepDelta, data: dict[str, Any], history: ChatHistory, back: list[str]) -> None:
    """One record's changes to the context, the chat and the back stack (``replay``)."""
    if delta.cleared:
        data.clear()
    for key in delta.removed:
        data.pop(key, None)
    for key, value, moved in delta.set:
        if moved:
            data.pop(key, None)
        data[key] = unpacked(value)
    added = delta.messages
    kept = history._messages
    if delta.history_cleared_at is not None:  # cleared after this many of them
        kept.clear()
        added = added[delta.history_cleared_at :]
    if added:
        kept.extend(added)
        history._lazy = True
    history.total = delta.message_seq + len(delta.messages)
    del back[delta.back_keep :]
    if delta.back_push:
        back.extend(delta.back_push)


def _malformed(raw: bytes, error: Exception) -> SnapshotDecodeError:
    """The error for a record whose bytes are not what ``encode_record`` writes."""
    return SnapshotDecodeError(
        f"step record is malformed: {type(error).__name__}: {error}", bytes(raw)
    )


def _packer() -> msgpack.Packer:
    try:
        packer: msgpack.Packer = _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    return packer


def encode_record(record: StepRecord) -> bytes:
    """The record as msgpack bytes, made once per record (then kept on it)."""
    if record._packed is not None:
        return record._packed
    meta = record.metadata
    pack = _packer().pack
    messages = [[m.role, m.content, m.timestamp] for m in record.messages]
    packed = pack(
        [
            RECORD_VERSION,
            record.revision,
            record.at,
            record.kind,
            record.task,
            record.input,
            record.response,
            record.status,
            record.status_message,
            record.current_task,
            record.graph_version,
            record.back_keep,
            list(record.back_push),
            record.cleared,
            list(record.removed),
            [[k, v, m] for k, v, m in record.set],
            messages,
            record.message_seq,
            record.history_cleared_at,
            meta_fields(meta),
            record.request_id,
            None if record.input_digest is None else [record.input_digest, list(record.responses)],
            None if record.timers is None else [t.encoded() for t in record.timers],
            record.fired,
        ]
    )
    force_setattr(record, "_packed", packed)  # a frozen record's cache slot
    return packed


def record_fields(raw: bytes) -> list[Any]:
    """The record's fields as msgpack gives them, in ``encode_record``'s order (no
    ``StepRecord`` is built: compaction reads records this way).

    Raises:
        SnapshotDecodeError: the bytes are not a record this build reads.
    """
    try:
        doc = msgpack.unpackb(raw, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:
        raise SnapshotDecodeError(
            f"step record is malformed: {type(exc).__name__}: {exc}", bytes(raw)
        ) from exc
    if not isinstance(doc, list) or len(doc) < 21 or doc[0] != RECORD_VERSION:
        raise SnapshotDecodeError("step record is malformed: not a record of version 1", bytes(raw))
    return doc


def decode_record(raw: bytes) -> StepRecord:
    """Decode bytes written by ``encode_record``.

    Raises:
        SnapshotDecodeError: the bytes are not a record this build reads.
    """
    doc = record_fields(raw)
    try:
        (
            _,
            revision,
            at,
            kind,
            task,
            input_,
            response,
            status,
            status_message,
            current_task,
            graph_version,
            back_keep,
            back_push,
            cleared,
            removed,
            set_,
            messages,
            message_seq,
            cleared_at,
            meta,
            request_id,
            *rest,
        ) = doc
        if kind not in ("step", "base"):
            raise ValueError(f"unknown record kind {kind!r}")
        digest, responses = rest[0] if rest and rest[0] is not None else (None, ())
        timers = rest[1] if len(rest) > 1 else None
        fired = rest[2] if len(rest) > 2 else None
        # Positional, and no generator for an empty list: a load replays every record
        # since the base, and building the record was most of a record's cost.
        return StepRecord(
            int(revision),
            float(at),
            kind,
            str(task),
            input_,
            response,
            STATUSES[status],
            status_message,
            str(current_task),
            str(graph_version),
            int(back_keep),
            tuple(map(str, back_push)) if back_push else (),
            bool(cleared),
            tuple(map(str, removed)) if removed else (),
            tuple([(str(k), v, bool(m)) for k, v, m in set_]) if set_ else (),
            tuple(map(_message, messages)) if messages else (),
            int(message_seq),
            None if cleared_at is None else int(cleared_at),
            metadata_from(meta)[0],
            None if request_id is None else str(request_id),
            None if digest is None else bytes(digest),
            tuple(map(str, responses)) if responses else (),
            None if timers is None else tuple(map(PendingTimer.decoded, timers)),
            None if fired is None else str(fired),
        )
    except Exception as exc:
        raise SnapshotDecodeError(
            f"step record is malformed: {type(exc).__name__}: {exc}", bytes(raw)
        ) from exc


def _message(value: Any) -> ChatMessage:
    role, content, timestamp = value
    if role not in ("user", "assistant", "system"):
        raise ValueError(f"unknown chat role {role!r}")
    return ChatMessage(role, str(content), str(timestamp))
