"""The snapshot codec: a session to msgpack bytes and back, with a schema version."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, cast

import msgpack

from flow._context import ROLES, ChatHistory, ChatMessage, Context, Role
from flow._errors import SnapshotDecodeError
from flow._idempotency import KeyTable
from flow._session import Session, SessionMetadata, SessionStatus
from flow._timers import PendingTimer

__all__ = ["SCHEMA_VERSION", "decode", "encode"]

SCHEMA_VERSION = 2
"""Version 2 added ``mtot`` (messages ever added, see ``ChatHistory.total``); version 1
snapshots still decode (their ``mtot`` is the number of messages they hold)."""

# ``encode`` packs every field but the history as one map of up to 15 entries, then
# turns it into the map one entry longer that ends with ``"hist"``: the history's
# array is spliced in from each message's cached bytes (msgpack values are simply
# concatenated). ``"keys"``, the idempotency key table, and ``"tmr"``, the pending
# timers, are there only when there are some; older builds of schema 2 ignore them.
_HIST_KEY = msgpack.packb("hist")
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
    messages = history._messages
    pack = _packer().pack
    fields: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "id": session.session_id,
        "graph": session.graph_id,
        "gver": session.graph_version,
        "task": session.current_task,
        "status": session.status.value,
        "smsg": session.status_message,
        "rev": session.revision,
        "back": session.back_stack,
        "data": session.context._data,
        "hmax": history.max_messages,
        "mtot": history.total,
        "meta": [
            meta.owner,
            meta.created_at,
            meta.last_accessed,
            meta.request_count,
            meta.client_addr,
            meta.expires_at,
        ],
    }
    if session.keys:
        fields["keys"] = session.keys.encoded()
    if session.timers:
        fields["tmr"] = [t.encoded() for t in session.timers]
    head = pack(fields)
    history_items = b"".join([m._packed or _packed(m, pack) for m in messages])
    # a fixmap header is 0x80 + its entry count (at most 15 here); 16 entries need a map16
    count = len(fields) + 1
    header = bytes((0x80 | count,)) if count < 16 else b"\xde" + count.to_bytes(2, "big")
    return header + head[1:] + _HIST_KEY + _array_header(len(messages)) + history_items


def _packed(message: ChatMessage, pack: Callable[[Any], bytes]) -> bytes:
    """The msgpack bytes of ``[role, content, timestamp]``, made once per message."""
    packed = pack([message.role, message.content, message.timestamp])
    object.__setattr__(message, "_packed", packed)  # a frozen message's cache slot
    return packed


def _array_header(length: int) -> bytes:
    """A msgpack array header for ``length`` items."""
    if length < 16:
        return bytes((0x90 | length,))
    if length < 0x10000:
        return b"\xdc" + length.to_bytes(2, "big")
    return b"\xdd" + length.to_bytes(4, "big")


def decode(raw: bytes) -> Session:
    """Decode bytes written by ``encode``.

    Raises:
        SnapshotDecodeError: the bytes are not a snapshot, or are of an unknown
            schema version; ``raw`` is carried on the error.
    """
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
    owner, created, accessed, count, addr, expires = doc["meta"]
    hmax = doc["hmax"]
    messages = [ChatMessage(_role(r), _str(c), _str(t)) for r, c, t in doc["hist"]]
    history = ChatHistory(messages, max_messages=None if hmax is None else int(hmax))
    history.total = int(doc.get("mtot", len(messages)))
    data = doc["data"]
    if not isinstance(data, dict):
        raise TypeError("context data is not a map")
    context = Context(data, history, session_id=_str(doc["id"]))
    back = doc["back"]
    if not isinstance(back, list):
        raise TypeError("back stack is not a list")
    smsg = doc["smsg"]
    keys = doc.get("keys")
    timers = doc.get("tmr") or ()
    return Session(
        session_id=_str(doc["id"]),
        graph_id=_str(doc["graph"]),
        graph_version=_str(doc["gver"]),
        current_task=_str(doc["task"]),
        status=SessionStatus(doc["status"]),
        context=context,
        metadata=SessionMetadata(
            owner=_str(owner),
            created_at=float(created),
            last_accessed=float(accessed),
            request_count=int(count),
            client_addr=None if addr is None else _str(addr),
            expires_at=None if expires is None else float(expires),
        ),
        revision=int(doc["rev"]),
        back_stack=[_str(b) for b in back],
        status_message=None if smsg is None else _str(smsg),
        keys=None if not keys else KeyTable.decoded(_str(doc["id"]), keys),
        timers=tuple(PendingTimer.decoded(t) for t in timers),
    )


def _role(value: Any) -> Role:
    if value not in ROLES:
        raise ValueError(f"unknown chat role {value!r}")
    return cast(Role, value)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected str, got {type(value).__name__}")
    return value
