"""Compaction's two jobs on stored bytes: a new base from the last one, and an archive entry.

A compaction writes the base of the newest revision: the previous base with
the step records since applied. Decoding that base into a ``Session`` and
encoding it again would cost the whole chat window (up to ``max_messages``
messages, ~126 KB with 1,000 of them) in every compaction, on a thread that
shares the GIL with the steps. ``rebased`` reads the base's head (the fields
that are not chat messages) and finds where each chat message's bytes start and
end without building them; the records are unpacked by msgpack alone (no
``StepRecord``), their messages packed again as the base holds them; the new
history is the byte slices that the window keeps. The idempotency key table is
copied as it is unless a record adds a key. The result is byte for byte what
``encode(rebuild(base, records))`` gives (test-checked).

``archived`` makes the archive entry of the records that retention drops from
the same unpacked lists: their messages were never decoded into objects either.

Threads: free functions over bytes, run on a store's compactor thread.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from typing import Any

import msgpack

from flow._codec import SCHEMA_VERSION, assemble, meta_fields, metadata_from
from flow._context import ROLES
from flow._errors import SnapshotDecodeError
from flow._idempotency import MAX_KEYS
from flow._record import record_fields
from flow._session import STATUSES, StepFailure

__all__ = ["archived", "rebased"]

# the indexes of a record's fields in ``encode_record``'s list (record version 1)
_REV, _AT, _KIND, _TASK, _RESPONSE, _STATUS, _SMSG, _CURRENT, _GVER = 1, 2, 3, 4, 6, 7, 8, 9, 10
_BACK_KEEP, _BACK_PUSH, _CLEARED, _REMOVED, _SET, _MESSAGES, _SEQ, _CLEARED_AT = range(11, 19)
_META, _REQUEST_ID, _KEYED, _TIMERS = 19, 20, 21, 22


def rebased(base: bytes, records: Iterable[bytes]) -> bytes:
    """The base of the newest revision: ``base`` with ``records`` (after it, in order) applied.

    Records at or before the base's revision are skipped.

    Raises:
        SnapshotDecodeError: the base or a record is malformed, or a record does not
            follow the revision before it.
    """
    head, keys_raw, history = _split(base)
    try:
        return _rebased(head, keys_raw, history, records)
    except SnapshotDecodeError:
        raise
    except Exception as exc:
        raise SnapshotDecodeError(
            f"snapshot or record is malformed: {type(exc).__name__}: {exc}", bytes(base)
        ) from exc


def archived(records: Iterable[bytes]) -> tuple[int, bytes] | None:
    """The number of the first chat message of ``records`` and their messages as one
    archive entry (``[first, [[role, content, timestamp], ...]]``); None when they hold none."""
    first: int | None = None
    messages: builtins.list[Any] = []
    for raw in records:
        doc = record_fields(raw)
        if not doc[_MESSAGES]:
            continue
        if first is None:
            first = int(doc[_SEQ])
        messages.extend(doc[_MESSAGES])
    if first is None:
        return None
    packed: bytes = msgpack.packb([first, messages], use_bin_type=True)
    return first, packed


def _split(base: bytes) -> tuple[dict[str, Any], bytes | None, builtins.list[bytes]]:
    """The base's fields but ``keys`` and ``hist``, the key table's packed bytes, and
    each chat message's bytes (found by skipping, never decoded)."""
    unpacker = msgpack.Unpacker(
        raw=False, strict_map_key=True, use_list=True, max_buffer_size=max(len(base), 1)
    )
    unpacker.feed(base)
    head: dict[str, Any] = {}
    keys_raw: bytes | None = None
    history: builtins.list[bytes] = []
    try:
        for _ in range(unpacker.read_map_header()):
            name = unpacker.unpack()
            if name == "hist":
                for _ in range(unpacker.read_array_header()):
                    begin = unpacker.tell()
                    unpacker.skip()
                    history.append(base[begin : unpacker.tell()])
            elif name == "keys":
                begin = unpacker.tell()
                unpacker.skip()
                keys_raw = base[begin : unpacker.tell()]
            else:
                head[name] = unpacker.unpack()
    except Exception as exc:
        raise SnapshotDecodeError(f"snapshot is not valid msgpack: {exc}", bytes(base)) from exc
    if head.get("v") not in (1, SCHEMA_VERSION):
        raise SnapshotDecodeError(
            f"snapshot schema version {head.get('v')!r} is not supported", bytes(base)
        )
    return head, keys_raw, history


def _rebased(
    head: dict[str, Any],
    keys_raw: bytes | None,
    history: builtins.list[bytes],
    records: Iterable[bytes],
) -> bytes:
    revision = int(head["rev"])
    data = head["data"]
    if not isinstance(data, dict):
        raise TypeError("context data is not a map")
    back = [_str(b) for b in head["back"]]
    hmax = None if head["hmax"] is None else int(head["hmax"])
    total = int(head.get("mtot", len(history)))
    task = _str(head["task"])
    status = STATUSES[head["status"]]
    smsg = None if head["smsg"] is None else _str(head["smsg"])
    gver = _str(head["gver"])
    meta = _meta(head["meta"])
    # a failure note lives in the base only (records never carry one): replay keeps it
    failure = metadata_from(head["meta"])[1]
    keys: dict[str, builtins.list[Any]] | None = None
    timers = head.get("tmr")  # the pending timers (flow._timers): a record may replace them
    pack = msgpack.Packer(use_bin_type=True).pack
    last_meta: builtins.list[Any] | None = None
    for raw in records:
        doc = record_fields(raw)
        rev = doc[_REV]
        if type(rev) is not int:
            raise TypeError(f"record revision is a {type(rev).__name__}")
        if rev <= revision:
            continue
        if doc[_KIND] != "step":
            raise ValueError(f"revision {rev} is a base: load its snapshot instead")
        if rev != revision + 1:
            raise ValueError(f"record of revision {rev} does not follow revision {revision}")
        if doc[_CLEARED]:
            data.clear()
        for key in doc[_REMOVED]:
            data.pop(_str(key), None)
        for key, value, moved in doc[_SET]:
            if moved:
                data.pop(_str(key), None)
            data[_str(key)] = value
        added = doc[_MESSAGES]
        cleared_at = doc[_CLEARED_AT]
        if cleared_at is not None:
            history.clear()
            added = added[cleared_at:]
        for message in added:
            history.append(pack(_message(message)))
        total = int(doc[_SEQ]) + len(doc[_MESSAGES])
        if hmax is not None and len(history) > hmax:
            del history[: len(history) - hmax]
        del back[int(doc[_BACK_KEEP]) :]
        if doc[_BACK_PUSH]:
            back.extend([_str(b) for b in doc[_BACK_PUSH]])
        revision = rev
        task = _str(doc[_CURRENT])
        status = STATUSES[doc[_STATUS]]
        smsg = doc[_SMSG]
        if smsg is not None and type(smsg) is not str:
            raise TypeError(f"status message is a {type(smsg).__name__}")
        gver = _str(doc[_GVER])
        # only the newest record's metadata is kept: it is checked once, after the loop
        last_meta = doc[_META]
        if len(doc) > _TIMERS and doc[_TIMERS] is not None:
            timers = doc[_TIMERS]
        keyed = doc[_KEYED] if len(doc) > _KEYED else None
        if doc[_REQUEST_ID] is not None and keyed is not None:
            if keys is None:
                keys = {entry[0]: entry for entry in _unpacked(keys_raw)}
            _remember(keys, doc, keyed, task, status, smsg)
    if last_meta is not None:
        meta = _meta(last_meta, failure)
    fields: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "id": _str(head["id"]),
        "graph": _str(head["graph"]),
        "gver": gver,
        "task": task,
        "status": status,
        "smsg": smsg,
        "rev": revision,
        "back": back,
        "data": data,
        "hmax": hmax,
        "mtot": total,
        "meta": meta,
    }
    if timers:
        fields["tmr"] = timers
    if keys is not None:
        keys_raw = pack(list(keys.values())) if keys else None
    return assemble(fields, keys_raw, history)


def _remember(
    keys: dict[str, builtins.list[Any]],
    doc: builtins.list[Any],
    keyed: builtins.list[Any],
    task: str,
    status: str,
    smsg: str | None,
) -> None:
    """Add a keyed record's entry as ``KeyEntry.encoded`` writes it (``KeyTable.add``)."""
    key = _str(doc[_REQUEST_ID])
    digest, responses = keyed
    keys.pop(key, None)
    keys[key] = [
        key,
        bytes(digest),
        float(doc[_AT]),
        int(doc[_REV]),
        _str(doc[_TASK]),
        doc[_RESPONSE],
        [_str(r) for r in responses],
        status,
        task,
        smsg,
    ]
    if len(keys) > MAX_KEYS:
        del keys[next(iter(keys))]


def _unpacked(keys_raw: bytes | None) -> builtins.list[builtins.list[Any]]:
    if keys_raw is None:
        return []
    entries: builtins.list[builtins.list[Any]] = msgpack.unpackb(keys_raw, raw=False)
    return entries


def _meta(value: builtins.list[Any], failure: StepFailure | None = None) -> builtins.list[Any]:
    """The metadata list as ``encode`` writes it (members, then a base's failure note)."""
    meta, own = metadata_from(value)
    return meta_fields(meta, failure if failure is not None else own)


def _message(value: builtins.list[Any]) -> builtins.list[str]:
    role, content, timestamp = value
    if role not in ROLES:
        raise ValueError(f"unknown chat role {role!r}")
    if type(content) is not str or type(timestamp) is not str:
        raise TypeError("a chat message's content and timestamp must be str")
    return value


def _str(value: Any) -> str:
    if type(value) is not str:
        raise TypeError(f"expected str, got {type(value).__name__}")
    return value
