"""Idempotency keys: a session's table of its recent keyed steps and their results.

A step may carry a key (``Idempotency-Key`` over HTTP, ``request_id=`` in
process). The session keeps the keys of its last ``MAX_KEYS`` keyed steps with
what each step answered, so that a retry of a step that committed is answered
from the table instead of running again. The table is part of the session's
state: a base snapshot holds it, and each keyed step's record holds its own
entry (``StepRecord.request_id``, ``input_digest`` and ``responses``), so
loading a session (base + records) rebuilds it and a step's cost never grows
with the history.

Only the session actor adds to a live session's table, in its own turn;
``Session.copy`` shares the table (a step's working copy never touches it).
The table keeps its entries encoded (``KeyTable``): a retry decodes the one it
asks for.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from flow._errors import InvalidInput
from flow._session import SessionStatus

if TYPE_CHECKING:
    from flow._step import StepResult

__all__ = [
    "MAX_KEYS",
    "MAX_KEY_LENGTH",
    "KeyEntry",
    "KeyRetention",
    "KeyTable",
    "check_key",
    "input_digest",
]

MAX_KEYS = 256
"""Keys a session remembers (the oldest is forgotten first)."""
MAX_KEY_LENGTH = 255
"""The longest key accepted, in characters."""
_local = threading.local()


def check_key(key: object) -> str:
    """``key`` if it is a usable idempotency key.

    Raises:
        InvalidInput: not a str of 1 to ``MAX_KEY_LENGTH`` printable ASCII characters.
    """
    if (
        not isinstance(key, str)
        or not 0 < len(key) <= MAX_KEY_LENGTH
        or not key.isascii()
        or not key.isprintable()
    ):
        raise InvalidInput(
            f"an idempotency key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters, "
            f"got {key!r:.80}"
        )
    return key


def _packer() -> msgpack.Packer:
    """This thread's reusable packer (cheaper than ``packb``'s new one per call)."""
    try:
        packer: msgpack.Packer = _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    return packer


def input_digest(mode: str, input: Any) -> bytes:
    """What a retry must repeat to be the same step: a digest of its mode and input.

    Raises:
        InvalidInput: the input is not msgpack-safe.
    """
    try:
        packed = _packer().pack([mode, input])
    except Exception as exc:
        raise InvalidInput(f"step input cannot be stored: {type(exc).__name__}: {exc}") from None
    return hashlib.blake2b(packed, digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One keyed step: its key, the digest of its mode and input, when it ran and its answer."""

    key: str
    digest: bytes
    at: float
    result: StepResult

    def encoded(self) -> list[Any]:
        """The entry as a msgpack-ready list (a base snapshot's ``keys``)."""
        r = self.result
        return [
            self.key,
            self.digest,
            self.at,
            r.revision,
            r.task,
            r.response,
            list(r.responses),
            r.status._value_,
            r.next_task,
            r.status_message,
        ]

    @classmethod
    def decoded(cls, session_id: str, value: list[Any]) -> KeyEntry:
        """The entry ``encoded`` wrote (``session_id``: the session it belongs to)."""
        from flow._step import StepResult

        key, digest, at, revision, task, response, responses, status, next_task, smsg = value
        return cls(
            str(key),
            bytes(digest),
            float(at),
            StepResult(
                session_id=session_id,
                task=str(task),
                response=None if response is None else str(response),
                responses=tuple(str(r) for r in responses),
                status=SessionStatus(status),
                next_task=str(next_task),
                status_message=None if smsg is None else str(smsg),
                revision=int(revision),
            ),
        )


@dataclass(frozen=True, slots=True)
class KeyRetention:
    """History retention as it applies to keys: a key is never remembered beyond the history.

    Attributes:
        keep_revisions: revisions the history keeps (None: no count limit).
        keep_seconds: age the history keeps (None: no age limit). With both set an
            entry is kept while it is inside either, as revisions are.
    """

    keep_revisions: int | None = 1000
    keep_seconds: float | None = None

    def keeps(self, entry: KeyEntry, newest: int, now: float) -> bool:
        """Whether ``entry`` is inside retention when the session is at revision ``newest``."""
        if self.keep_revisions is None and self.keep_seconds is None:
            return True
        if self.keep_revisions is not None and entry.result.revision > newest - self.keep_revisions:
            return True
        return self.keep_seconds is not None and entry.at >= now - self.keep_seconds


class KeyTable:
    """A session's recent keyed steps, oldest first, at most ``MAX_KEYS``, kept encoded.

    Each entry is held as its msgpack bytes (all but the key, which is the
    dict's key) and decoded only when a retry asks for it (``get``): a full
    table costs about half the memory of decoded entries, a base snapshot
    splices it in without encoding it (``packed``), and a load builds no
    entry objects. Bytes are what ``KeyEntry.encoded`` packs, so a table made
    from entries and one read from a snapshot are the same table.
    """

    __slots__ = ("_entries", "session_id")

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self._entries: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[KeyEntry]:
        return (self._decoded(key, raw) for key, raw in list(self._entries.items()))

    def get(self, key: str) -> KeyEntry | None:
        """The entry of ``key``, if remembered."""
        raw = self._entries.get(key)
        return None if raw is None else self._decoded(key, raw)

    def add(self, entry: KeyEntry) -> None:
        """Remember ``entry`` (the newest), forgetting the oldest beyond ``MAX_KEYS``."""
        self._put(entry.key, _packer().pack(entry.encoded()[1:]))

    def forget_outside(self, retention: KeyRetention, newest: int, now: float) -> None:
        """Forget the oldest entries that history retention no longer keeps."""
        entries = self._entries
        while entries:
            oldest = next(iter(entries))
            if retention.keeps(self._decoded(oldest, entries[oldest]), newest, now):
                return
            del entries[oldest]

    def packed(self) -> bytes:
        """The table as msgpack bytes: a list of ``KeyEntry.encoded`` lists, oldest first."""
        pack = _packer().pack
        # each entry's bytes are its 9-item list: the 10-item one is the key spliced in
        items = [b"\x9a" + pack(key) + raw[1:] for key, raw in self._entries.items()]
        return _packer().pack_array_header(len(items)) + b"".join(items)

    @classmethod
    def decoded(cls, session_id: str, values: list[Any]) -> KeyTable:
        """The table ``packed`` wrote, as msgpack lists (checked, kept encoded).

        Raises:
            TypeError, ValueError: an entry is not one ``KeyEntry.encoded`` writes.
        """
        table = cls(session_id)
        pack = _packer().pack
        for value in values:
            _check_entry(value)
            table._put(value[0], pack(value[1:]))
        return table

    def _put(self, key: str, raw: bytes) -> None:
        entries = self._entries
        entries.pop(key, None)
        entries[key] = raw
        if len(entries) > MAX_KEYS:
            del entries[next(iter(entries))]

    def _decoded(self, key: str, raw: bytes) -> KeyEntry:
        return KeyEntry.decoded(self.session_id, [key, *msgpack.unpackb(raw, raw=False)])


def _check_entry(value: Any) -> None:
    """Raise unless ``value`` is a list ``KeyEntry.encoded`` writes (no entry is built)."""
    if not isinstance(value, list) or len(value) != 10:
        raise TypeError("a key table entry is not a list of 10 fields")
    key, digest, at, revision, task, response, responses, status, next_task, smsg = value
    if not (
        isinstance(key, str)
        and isinstance(digest, bytes)
        and isinstance(at, float | int)
        and isinstance(revision, int)
        and isinstance(task, str)
        and (response is None or isinstance(response, str))
        and isinstance(responses, list)
        and all(isinstance(r, str) for r in responses)
        and isinstance(next_task, str)
        and (smsg is None or isinstance(smsg, str))
    ):
        raise TypeError(f"key table entry {key!r:.80} has a field of the wrong type")
    SessionStatus(status)
