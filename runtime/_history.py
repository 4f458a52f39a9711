"""Time travel for both facades: revisions, a past revision, the whole chat, fork and rollback.

These run on the caller's thread (the async facade hands them to a worker
thread) and read the store's session log directly: a committed revision is
in the store whether or not the session is live. Only rollback touches a
live session: it passivates it first (the actor saves and stops, in its own
turn), then appends the rolled-back revision with compare-and-set; a step
that reactivated the session in between makes it try again.
"""

from __future__ import annotations

from flow._errors import RevisionConflict, SessionNotFound
from flow._history import forked, rolled_back
from flow._session import Session, SessionMetadata
from flow._sharing import Need
from flow.stores._log import MessagePage, RevisionInfo
from runtime._bridge import SyncReply
from runtime._core import RuntimeCore

__all__ = ["fork", "messages", "revisions", "rollback", "session_at"]

_ROLLBACK_ATTEMPTS = 5


def revisions(
    core: RuntimeCore, session_id: str, owner: str | None, limit: int, before: int | None
) -> list[RevisionInfo]:
    """The retained revisions below ``before``, newest first."""
    core.check_open()
    core.check_owner(session_id, owner, "read")
    return core.store.revisions(session_id, limit, before)


def session_at(
    core: RuntimeCore, session_id: str, owner: str | None, revision: int, need: Need = "read"
) -> Session:
    """Revision ``revision`` of the session.

    Raises:
        SessionNotFound: no such session, or ``owner`` may not (``need``).
        RevisionNotFound: the revision is outside the retained history.
    """
    core.check_open()
    core.check_owner(session_id, owner, need)
    session = core.store.load(session_id, revision)
    if session is None:
        raise SessionNotFound(session_id)
    return session


def messages(
    core: RuntimeCore, session_id: str, owner: str | None, limit: int, before: int | None
) -> MessagePage:
    """The whole conversation, newest page first (``before``: a message number)."""
    core.check_open()
    core.check_owner(session_id, owner, "read")
    return core.store.messages(session_id, limit, before)


def fork(core: RuntimeCore, session_id: str, owner: str | None, revision: int | None) -> str:
    """A new session (same owner, new id) whose state is revision ``revision``'s; its id.

    ``revision`` None forks the newest committed revision.
    """
    core.check_open()
    core.check_owner(session_id, owner)  # a fork is the owner's: only the owner forks
    if revision is None:
        past = core.load(session_id, owner, "owner")
    else:
        past = session_at(core, session_id, owner, revision, "owner")
    now = core.config.clock()
    new = forked(past, now=now)
    meta = new.metadata
    new.metadata = SessionMetadata(
        meta.owner, now, now, 0, meta.client_addr, now + core.config.session_ttl
    )
    core.quota.reserve(new.metadata.owner)
    core.index.begin()
    try:
        core.store.save(new, None).result()
    except BaseException:
        core.quota.release(new.metadata.owner)
        raise
    finally:
        core.index.end()
    return new.session_id


def rollback(core: RuntimeCore, session_id: str, owner: str | None, revision: int) -> Session:
    """Append a revision whose state is revision ``revision``'s; the new session.

    Raises:
        SessionNotFound: no such session, or ``owner`` may not write it.
        RevisionNotFound: the revision is outside the retained history.
        RevisionConflict: steps kept reactivating the session (retry later).
    """
    core.check_open()
    core.check_owner(session_id, owner, "write")
    past = session_at(core, session_id, owner, revision, "write")
    for attempt in range(_ROLLBACK_ATTEMPTS):
        _passivate(core, session_id)
        current = core.load(session_id, owner, "write", lease=True)  # saved fenced below
        back = rolled_back(current, past, now=core.config.clock())
        try:
            core.store.save(back, current.revision).result()
        except RevisionConflict:
            if attempt == _ROLLBACK_ATTEMPTS - 1:
                raise
            continue
        return back
    raise AssertionError("unreachable")


def _passivate(core: RuntimeCore, session_id: str) -> None:
    """Have the session's actor (if live) save and stop, and wait for it."""
    reply = SyncReply(core.index)
    core.tell_supervisor(core.passivate_message(session_id, reply, kill=False), reply)
    reply.wait()
