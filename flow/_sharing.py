"""Sharing a session: its owner grants other users ``read`` or ``write`` access.

``shared`` is a transaction like ``step``: it works on a copy and returns the
new session, one revision whose metadata holds the new members. Its log record
changes nothing else (no key, no message), so it costs the same whatever the
session's length; replay restores the members from the record's metadata.
Who may share (the owner, an admin) is checked by the runtime, not here.
"""

from __future__ import annotations

import re
from typing import Literal

from flow._edit import unchanged
from flow._errors import InvalidInput
from flow._record import record_of
from flow._session import ACCESS_LEVELS, Access, Session, SessionMetadata
from flow._step import StepResult

__all__ = ["MAX_MEMBERS", "Need", "allows", "check_member", "shared"]

MAX_MEMBERS = 100
"""Most members one session may have (each step record carries them)."""

# as the tokens file spells users: no whitespace, no control characters
_USER = re.compile(r"^[^\s\x00-\x1f\x7f]{1,128}$")


def check_member(user: object, access: object) -> tuple[str, Access | None]:
    """``(user, access)`` checked (``access`` None: remove the member).

    Raises:
        InvalidInput: ``user`` is not a user name or ``access`` not read/write.
    """
    if not isinstance(user, str) or _USER.match(user) is None:
        raise InvalidInput(
            f"a member must be a user name (1-128 characters, no spaces), got {user!r}"
        )
    if access is not None and access not in ACCESS_LEVELS:
        raise InvalidInput(f"access must be 'read' or 'write', got {access!r}")
    return user, access


def shared(
    session: Session, user: str, access: Access | None, *, now: float
) -> tuple[Session, StepResult] | None:
    """``session`` with ``user`` given ``access`` (None: removed); None if that changes nothing.

    Raises:
        InvalidInput: ``user`` owns the session, or it already has ``MAX_MEMBERS``.
    """
    meta = session.metadata
    if user == meta.owner:
        raise InvalidInput(f"{user!r} owns session {session.session_id!r}: owners are not members")
    members = dict(meta.members)
    if members.get(user) == access:
        return None
    if access is None:
        del members[user]
    else:
        members[user] = access
    if len(members) > MAX_MEMBERS:
        raise InvalidInput(
            f"session {session.session_id!r} has {MAX_MEMBERS} members already (the most allowed)"
        )
    work = session.copy()
    work.context.track()
    work.revision += 1
    work.metadata = SessionMetadata(
        meta.owner,
        meta.created_at,
        now,
        meta.request_count,
        meta.client_addr,
        meta.expires_at,
        tuple(sorted(members.items())),
    )
    work.record = record_of(
        work,
        task=work.current_task,
        input=None,
        response=None,
        back_low=len(work.back_stack),
    )
    return work, unchanged(work)


Need = Literal["read", "write", "owner"]
"""What a request needs: ``read`` (see it), ``write`` (step it) or ``owner``
(delete, fork or share it)."""


def allows(owner: str, members: tuple[tuple[str, Access], ...], user: str, need: Need) -> bool:
    """Whether ``user`` may do what ``need`` says to a session of ``owner`` with ``members``."""
    if user == owner:
        return True
    if need == "owner":
        return False
    for member, access in members:
        if member == user:
            return access == "write" or need == "read"
    return False
