"""Time travel's two new sessions: a fork of a past revision and a rollback to one.

Both are made whole (no step record), so a store writes them as a base.
"""

from __future__ import annotations

import time

from flow._errors import InvalidInput
from flow._session import Session, SessionMetadata, new_session_id

__all__ = ["forked", "rolled_back"]


def forked(past: Session, *, session_id: str | None = None, now: float | None = None) -> Session:
    """A new session (revision 0, same owner, its own id) whose state is ``past``'s.

    Its conversation starts with the chat history ``past`` holds; the older
    messages stay in the original session's log.
    """
    sid = new_session_id() if session_id is None else session_id
    if not isinstance(sid, str) or not sid:
        raise InvalidInput(f"a session id must be a non-empty str, got {sid!r}")
    at = time.time() if now is None else now
    fork = past.copy()
    fork.session_id = sid
    fork.context.session_id = sid
    fork.revision = 0
    fork.keys = None  # idempotency keys are per session: the fork starts with none
    fork.last_failure = None
    meta = past.metadata
    # a fork is a new session of the same owner, shared with nobody yet
    fork.metadata = SessionMetadata(meta.owner, at, at, 0, meta.client_addr, meta.expires_at)
    return fork


def rolled_back(current: Session, past: Session, *, now: float | None = None) -> Session:
    """The next revision of ``current`` whose state is ``past``'s (a rollback can be undone).

    Only the bookkeeping stays ``current``'s: the revision goes on (+1), the
    conversation's message count goes on (the log keeps every message said),
    and the metadata counts the rollback as an access.
    """
    if past.session_id != current.session_id:
        raise InvalidInput(
            f"cannot roll session {current.session_id!r} back to a revision of {past.session_id!r}"
        )
    at = time.time() if now is None else now
    back = past.copy()
    back.revision = current.revision + 1
    back.context.chat_history.total = current.context.chat_history.total
    meta = current.metadata
    # who may see the session is not state: the rollback keeps today's members
    back.metadata = SessionMetadata(
        meta.owner,
        meta.created_at,
        at,
        meta.request_count,
        meta.client_addr,
        meta.expires_at,
        meta.members,
    )
    back.last_failure = current.last_failure
    return back
