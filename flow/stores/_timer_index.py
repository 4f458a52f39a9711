"""What every store's due-time index of timers shares (``SessionStore.due_timers``).

The index holds one entry per session that has pending timers: its id and the
due time of its earliest timer (``flow._timers``). A store updates it in the
same commit as the save that changed the session's timers, and drops it with
the session. Firing reads it soonest first; the session itself says which of
its timers are due, so the index never needs more than the earliest one.
"""

from __future__ import annotations

import msgspec

from flow._session import Session
from flow._timers import next_due
from flow.stores._log import LogEntry

__all__ = ["DueTimer", "index_change"]


class DueTimer(msgspec.Struct, frozen=True, gc=False):
    """A session whose earliest pending timer is due at ``due`` (UNIX seconds)."""

    session_id: str
    due: float


def index_change(session: Session, entry: LogEntry) -> tuple[bool, float | None]:
    """Whether saving ``session`` as ``entry`` changes its index entry, and the new due time.

    A step's record says whether the step changed the timers; a whole base may
    follow unsaved steps (``passivate`` durability), so it always rewrites the entry.
    """
    record = session.record
    if entry.base is None and (record is None or record.timers is None):
        return False, None
    return True, next_due(session.timers)
