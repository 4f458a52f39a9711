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
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
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
            r.status.value,
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
    """A session's recent keyed steps, oldest first, at most ``MAX_KEYS``."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: OrderedDict[str, KeyEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[KeyEntry]:
        return iter(self._entries.values())

    def get(self, key: str) -> KeyEntry | None:
        """The entry of ``key``, if remembered."""
        return self._entries.get(key)

    def add(self, entry: KeyEntry) -> None:
        """Remember ``entry`` (the newest), forgetting the oldest beyond ``MAX_KEYS``."""
        entries = self._entries
        entries.pop(entry.key, None)
        entries[entry.key] = entry
        if len(entries) > MAX_KEYS:
            entries.popitem(last=False)

    def forget_outside(self, retention: KeyRetention, newest: int, now: float) -> None:
        """Forget the oldest entries that history retention no longer keeps."""
        entries = self._entries
        while entries and not retention.keeps(next(iter(entries.values())), newest, now):
            entries.popitem(last=False)

    def encoded(self) -> list[list[Any]]:
        """The table as msgpack-ready lists, oldest first."""
        return [entry.encoded() for entry in self._entries.values()]

    @classmethod
    def decoded(cls, session_id: str, values: list[Any]) -> KeyTable:
        """The table ``encoded`` wrote."""
        table = cls()
        for value in values:
            table.add(KeyEntry.decoded(session_id, value))
        return table
