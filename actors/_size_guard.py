"""SizeGuard: a session's encoded size, kept cheaply, and the ``max_session_bytes`` check.

Threads: owned by one session actor and used only in its turn.

The size is the session's encoded state (``flow._codec.encode``: the context
and the chat window), not its log. Encoding the whole session on every step
would make a step cost the session's length, so the guard keeps an upper
bound instead: the last exact size plus the encoded size of each step record
since (a record carries every value set and message appended, so the state
cannot grow by more). The session is encoded to measure it exactly only when
that bound passes the limit, or when the records since the last measure pass
half of it (so the bound stays within 1.5x of the exact size: each exact
measure follows records worth at least half its bytes, which keeps its cost,
spread over those steps, independent of the session's length). A session near
its cap is encoded once per step, which the cap itself bounds.

The bound is what ``ls`` shows as the session's snapshot bytes (the live
index's ``snapshot_bytes``); ``inspect``, a snapshot and a passivation measure
the size exactly and tell the guard (``measured``), so that ``ls`` then shows
the same figure. A session rebuilt from the store starts from its base's size
and its records' (``Session.stored_size``, ``stored``), which is such a bound
already, so an activation does not encode a long session whole either.
"""

from __future__ import annotations

import msgspec

from flow._codec import encode
from flow._errors import SessionTooLarge
from flow._record import encode_record
from flow._session import Session

__all__ = ["SizeGuard"]


class SizeGuard(msgspec.Struct, gc=False):
    """An upper bound of one session's encoded size, checked against ``limit``.

    A Struct without GC support (three ints, in no cycle): one object fewer
    for the garbage collector to walk per awake session.
    """

    _limit: int
    # Unknown at activation: the first step measures it (once per activation).
    _bound: int = -1
    _exact: int = 0

    def __post_init__(self) -> None:
        self._bound = self._limit + 1

    @property
    def size(self) -> int:
        """The bound (0: not measured yet in this activation)."""
        return 0 if self._bound > self._limit else self._bound

    def check(self, new: Session) -> SessionTooLarge | None:
        """None if ``new`` (the step's result) fits, keeping the bound; else the error."""
        record = new.record
        if record is not None and record.kind == "step":
            grown = self._bound + len(encode_record(record))
            if grown <= self._limit and 2 * (grown - self._exact) <= self._exact:
                self._bound = grown
                return None
        size = len(encode(new))
        if size <= self._limit:
            self.measured(size)
            return None
        return SessionTooLarge(
            f"session {new.session_id!r} would take {size} bytes, over the limit of "
            f"{self._limit} (max_session_bytes); the step was not applied"
        )

    def stored(self, exact: int, bound: int) -> None:
        """The session was rebuilt from a base of ``exact`` encoded bytes and records
        making ``bound`` in all: start from there instead of measuring it whole."""
        if bound <= self._limit:
            self._exact, self._bound = exact, bound

    def measured(self, size: int) -> None:
        """The session's exact encoded size is ``size``: start the bound again from it."""
        self._bound = self._exact = size

    def reset(self) -> None:
        """Forget the bound (the session was replaced: reloaded or rolled back)."""
        self._bound = self._limit + 1
        self._exact = 0
