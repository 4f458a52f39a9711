"""The snapshot codec: a session to msgpack bytes and back, with a schema version."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, cast

import msgpack
import msgspec
from msgspec.structs import force_setattr

from flow._context import ROLES, ChatHistory, ChatMessage, Context, Role
from flow._errors import SnapshotDecodeError
from flow._idempotency import KeyTable
from flow._session import (
    ACCESS_LEVELS,
    STATUS_OF,
    Access,
    Session,
    SessionMetadata,
    StepFailure,
)
from flow._timers import PendingTimer

__all__ = [
    "SCHEMA_VERSION",
    "assemble",
    "decode",
    "encode",
    "meta_fields",
    "metadata_from",
    "stored_messages",
    "unpacked",
]

SCHEMA_VERSION = 2
"""Version 2 added ``mtot`` (messages ever added, see ``ChatHistory.total``); version 1
snapshots still decode (their ``mtot`` is the number of messages they hold)."""

# ``encode`` packs every field but the key table and the history as one map of 13
# entries, then turns it into the map one or two entries longer that ends with
# ``"keys"`` and ``"hist"``: both are spliced in already packed, the history from
# each message's cached bytes (msgpack values are simply concatenated). ``"keys"``,
# the idempotency key table, is there only when it has entries; older builds of
# schema 2 ignore it.
_HIST_KEY = msgpack.packb("hist")
_KEYS_KEY = msgpack.packb("keys")
_local = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's reusable packer (cheaper than ``packb``'s new one per call)."""
    try:
        packer: msgpack.Packer = _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    return packer


def encode(session: Session) -> bytes:
    """Encode ``session`` as msgpack bytes (schema ``SCHEMA_VERSION``)."""
    meta = session.metadata
    history = session.context.chat_history
    pack = _packer().pack
    fields: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "id": session.session_id,
        "graph": session.graph_id,
        "gver": session.graph_version,
        "task": session.current_task,
        "status": session.status._value_,
        "smsg": session.status_message,
        "rev": session.revision,
        "back": session.back_stack,
        "data": session.context._data,
        "hmax": history.max_messages,
        "mtot": history.total,
        "meta": meta_fields(meta, session.last_failure),
    }
    if session.timers:  # the pending timers (flow._timers), only when there are some
        fields["tmr"] = [t.encoded() for t in session.timers]
    keys = session.keys.packed() if session.keys else None
    items = [
        pack(m) if type(m) is tuple else m._packed or _packed(m, pack) for m in history._messages
    ]
    return assemble(fields, keys, items)


def assemble(fields: dict[str, Any], keys: bytes | None, history_items: list[bytes]) -> bytes:
    """A snapshot from its head ``fields`` (in ``encode``'s order), the packed key table
    (None: no keys) and each chat message's packed bytes: the head's map is made
    longer and the two are spliced in after it, so that neither is packed again."""
    head = _packer().pack(fields)
    extra = _KEYS_KEY + keys if keys is not None else b""
    # the head is a fixmap (0x80 + its entry count, at most 14 here); the whole map
    # may reach 16 entries with timers, keys and history: then it needs a map16 header
    count = (head[0] & 0x0F) + (2 if keys is not None else 1)
    header = bytes((0x80 | count,)) if count < 16 else b"\xde" + count.to_bytes(2, "big")
    return (
        header
        + head[1:]
        + extra
        + _HIST_KEY
        + _packer().pack_array_header(len(history_items))
        + b"".join(history_items)
    )


def meta_fields(meta: SessionMetadata, failure: StepFailure | None = None) -> list[Any]:
    """The metadata as the list a snapshot (or a step record) holds.

    Its first six items are those every build writes; ``members`` and then a
    snapshot's ``last_failure`` follow only when there are some, so that a
    session that uses neither encodes as it always did (the snapshot map is
    full: a fixmap holds at most 15 entries, see ``encode``).
    """
    fields: list[Any] = [
        meta.owner,
        meta.created_at,
        meta.last_accessed,
        meta.request_count,
        meta.client_addr,
        meta.expires_at,
    ]
    if meta.members or failure is not None:
        fields.append([[user, access] for user, access in meta.members])
    if failure is not None:
        fields.append([failure.type, failure.message, failure.task, failure.time])
    return fields


def metadata_from(fields: list[Any]) -> tuple[SessionMetadata, StepFailure | None]:
    """Read back what ``meta_fields`` wrote (and what builds before it wrote)."""
    owner, created, accessed, count, addr, expires, *more = fields
    members = more[0] if more else ()
    failure = more[1] if len(more) > 1 else None
    meta = SessionMetadata(
        owner=_str(owner),
        created_at=float(created),
        last_accessed=float(accessed),
        request_count=int(count),
        client_addr=None if addr is None else _str(addr),
        expires_at=None if expires is None else float(expires),
        members=tuple([(_str(user), _access(access)) for user, access in members])
        if members
        else (),
    )
    if failure is None:
        return meta, None
    kind, message, task, at = failure
    return meta, StepFailure(_str(kind), _str(message), _str(task), float(at))


def _access(value: Any) -> Access:
    if value not in ACCESS_LEVELS:
        raise ValueError(f"unknown member access {value!r}")
    return cast(Access, value)


def _packed(message: ChatMessage, pack: Callable[[Any], bytes]) -> bytes:
    """The msgpack bytes of ``[role, content, timestamp]``, made once per message."""
    packed = pack([message.role, message.content, message.timestamp])
    force_setattr(message, "_packed", packed)  # a frozen message's cache slot
    return packed


class _Snapshot(msgspec.Struct, gc=False):
    """A snapshot of this schema as msgspec reads it in one pass (``decode``): the fields
    ``encode`` writes, typed, so that the messages are checked and made tuples in C.
    The values a task or a timer gave (context data, the key table, the timers) are
    left as msgpack bytes (``msgspec.Raw``) and read by msgpack, as the fields path
    reads them: map keys must be strings and extension types stay msgpack's, so a
    session decodes to what it would have decoded to before."""

    v: int
    id: str
    graph: str
    gver: str
    task: str
    status: str
    rev: int
    back: list[str]
    data: msgspec.Raw
    meta: list[Any]
    hist: list[tuple[Role, str, str]]
    smsg: str | None
    hmax: int | None
    mtot: int
    keys: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    tmr: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


def unpacked(value: msgspec.Raw) -> Any:
    """A value left as msgpack bytes, read as the snapshot and record codecs read a whole
    document (string map keys only); None when the field was absent."""
    if not value:
        return None
    return msgpack.unpackb(value, raw=False, strict_map_key=True, use_list=True)


_decode_snapshot = msgspec.msgpack.Decoder(_Snapshot).decode


def decode(raw: bytes) -> Session:
    """Decode bytes written by ``encode``.

    A snapshot of this schema is read by msgspec against ``_Snapshot`` (1,000
    messages: 79 against 142 us); anything it refuses (an older schema, damaged
    bytes) is read field by field as before, which decodes what it can and
    names what it cannot.

    Raises:
        SnapshotDecodeError: the bytes are not a snapshot, or are of an unknown
            schema version; ``raw`` is carried on the error.
    """
    try:
        snap = _decode_snapshot(raw)
        data = unpacked(snap.data)
        keys = unpacked(snap.keys)
        timers = unpacked(snap.tmr)
    except (ValueError, RecursionError):  # msgspec's errors are ValueErrors, as msgpack's
        return _decode_fields(raw)
    if snap.v != SCHEMA_VERSION or type(data) is not dict:
        return _decode_fields(raw)
    try:
        return _built(
            snap.id,
            snap.graph,
            snap.gver,
            snap.task,
            snap.status,
            snap.rev,
            snap.back,
            data,
            snap.meta,
            cast(list[tuple[str, str, str]], snap.hist),  # roles checked: Role
            snap.smsg,
            snap.hmax,
            snap.mtot,
            keys,
            timers,
        )
    except Exception as exc:
        raise SnapshotDecodeError(
            f"snapshot is malformed: {type(exc).__name__}: {exc}", bytes(raw)
        ) from exc


def _decode_fields(raw: bytes) -> Session:
    """``decode`` field by field, from msgpack's objects: any schema version."""
    try:
        doc = msgpack.unpackb(raw, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:
        raise SnapshotDecodeError(f"snapshot is not valid msgpack: {exc}", bytes(raw)) from exc
    if not isinstance(doc, dict):
        raise SnapshotDecodeError("snapshot is not a msgpack map", bytes(raw))
    version = doc.get("v")
    if version not in (1, SCHEMA_VERSION):
        raise SnapshotDecodeError(
            f"snapshot schema version {version!r} is not supported (this build reads "
            f"1 to {SCHEMA_VERSION})",
            bytes(raw),
        )
    try:
        return _session_from(doc)
    except SnapshotDecodeError:
        raise
    except Exception as exc:
        raise SnapshotDecodeError(
            f"snapshot is malformed: {type(exc).__name__}: {exc}", bytes(raw)
        ) from exc


def _session_from(doc: dict[str, Any]) -> Session:
    """A session from a snapshot's map, each field checked (``_decode_fields``)."""
    messages = stored_messages(doc["hist"])
    data = doc["data"]
    if not isinstance(data, dict):
        raise TypeError("context data is not a map")
    back = doc["back"]
    if not isinstance(back, list):
        raise TypeError("back stack is not a list")
    smsg = doc["smsg"]
    hmax = doc["hmax"]
    return _built(
        _str(doc["id"]),
        _str(doc["graph"]),
        _str(doc["gver"]),
        _str(doc["task"]),
        doc["status"],
        int(doc["rev"]),
        [_str(b) for b in back],
        data,
        doc["meta"],
        messages,
        None if smsg is None else _str(smsg),
        None if hmax is None else int(hmax),
        int(doc.get("mtot", len(messages))),
        doc.get("keys"),
        doc.get("tmr"),
    )


def _built(
    session_id: str,
    graph_id: str,
    graph_version: str,
    task: str,
    status: Any,
    revision: int,
    back: list[str],
    data: dict[str, Any],
    meta: list[Any],
    messages: list[tuple[str, str, str]],
    status_message: str | None,
    max_messages: int | None,
    total: int,
    keys: Any,
    timers: list[Any] | None,
) -> Session:
    """The session of a snapshot's fields, each already of its type."""
    metadata, failure = metadata_from(meta)
    history = ChatHistory.from_stored(messages, max_messages=max_messages, total=total)
    return Session(
        session_id=session_id,
        graph_id=graph_id,
        graph_version=graph_version,
        current_task=task,
        status=STATUS_OF[status],
        context=Context(data, history, session_id=session_id),
        metadata=metadata,
        revision=revision,
        back_stack=back,
        status_message=status_message,
        keys=None if not keys else KeyTable.decoded(session_id, keys),
        last_failure=failure,
        timers=tuple(PendingTimer.decoded(t) for t in timers or ()),
    )


_STORED_MESSAGES = list[tuple[Role, str, str]]
_CONVERT_FROM = 64  # messages; below about 50 the loop is cheaper


def stored_messages(messages: Any) -> list[tuple[str, str, str]]:
    """Check stored chat messages without making them (``ChatHistory`` makes each when
    it is first read): a list of ``[role, content, timestamp]`` lists of strings,
    returned as ``(role, content, timestamp)`` tuples.

    Tuples, because the garbage collector stops tracking a tuple of strings at
    its first collection, while it walks a list at every full collection for as
    long as the session is live: a live session of 1,000 stored messages would
    otherwise add 1,000 objects to each walk.
    """
    if type(messages) is not list:
        raise TypeError("chat history is not a list")
    if len(messages) > _CONVERT_FROM:
        # the same checks in C: 37 against 77 us for 1,000 messages (2.7 against
        # 0.9 us for 10: a fixed cost, hence only past ``_CONVERT_FROM``)
        try:
            converted: list[tuple[str, str, str]] = msgspec.convert(messages, _STORED_MESSAGES)
        except msgspec.ValidationError as exc:
            raise ValueError(f"malformed chat message: {exc}") from None
        return converted
    kept: list[tuple[str, str, str]] = []
    for item in messages:
        if (
            type(item) is not list
            or len(item) != 3
            or item[0] not in ROLES
            or type(item[1]) is not str
            or type(item[2]) is not str
        ):
            raise ValueError(f"malformed chat message {item!r:.80}")
        kept.append(tuple(item))
    return kept


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected str, got {type(value).__name__}")
    return value
