"""SizeGuard: refuses a step whose session would pass ``max_session_bytes``.

Threads: owned by one session actor and used only in its turn.

The size checked is the session's encoded state (``flow._codec.encode``: the
context and the chat window), not its log. Encoding the whole session on every
step would make a step cost the session's length, so the guard keeps an upper
bound instead: the last exact size plus the encoded size of each step record
since (a record carries every value set and message appended, so the state
cannot grow by more). Only when that bound passes the limit is the session
encoded to measure it exactly, and the bound starts again from there. A session
far below its cap is never encoded; one near it is encoded once per step, which
the cap itself bounds.
"""

from __future__ import annotations

from flow._codec import encode
from flow._errors import SessionTooLarge
from flow._record import encode_record
from flow._session import Session

__all__ = ["SizeGuard"]


class SizeGuard:
    """An upper bound of one session's encoded size, checked against ``limit``."""

    __slots__ = ("_bound", "_limit")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        # Unknown at activation: the first step measures it (once per activation).
        self._bound = limit + 1

    def check(self, new: Session) -> SessionTooLarge | None:
        """None if ``new`` (the step's result) fits, keeping the bound; else the error."""
        record = new.record
        if record is not None and record.kind == "step":
            grown = self._bound + len(encode_record(record))
            if grown <= self._limit:
                self._bound = grown
                return None
        size = len(encode(new))
        if size <= self._limit:
            self._bound = size
            return None
        return SessionTooLarge(
            f"session {new.session_id!r} would take {size} bytes, over the limit of "
            f"{self._limit} (max_session_bytes); the step was not applied"
        )

    def reset(self) -> None:
        """Forget the bound (the session was replaced: reloaded or rolled back)."""
        self._bound = self._limit + 1
