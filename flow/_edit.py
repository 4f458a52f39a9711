"""Repair from outside: set or remove context keys and move a session to a task.

``edit`` is a transaction like ``step``: it works on a copy and returns the new
session (one new revision whose status message says who did what), so a bad
edit leaves the session as it was. Like a step, it carries the log record of
what it changed (``flow._record``), so a store appends the keys set and removed
and the move rather than writing the whole session: an edit costs what it
changes, never the session's length.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from flow._errors import InvalidInput
from flow._graph import Graph
from flow._record import record_of
from flow._session import Session, SessionMetadata, SessionStatus
from flow._step import StepResult

__all__ = ["edit", "unchanged"]


def edit(
    graph: Graph,
    session: Session,
    *,
    set: Mapping[str, Any] | None = None,
    unset: Iterable[str] = (),
    goto: str | None = None,
    by: str,
    now: float | None = None,
    ttl: float | None = None,
) -> tuple[Session, StepResult]:
    """The session with ``set`` keys stored, ``unset`` keys removed and moved to ``goto``.

    Moving to a task pauses the session there (its next step runs that task),
    even a completed or failed session; the task it left goes on the back-stack.
    The new revision's status message is "edited by <by>: ...". With ``ttl``, the
    session expires ``ttl`` seconds after ``now`` (as after a step), else when it did.

    Raises:
        InvalidInput: nothing to do, a key is not a str, a value cannot be stored,
            ``by`` is empty, or ``goto`` names a task the session's graph lacks.
    """
    if not isinstance(by, str) or not by:
        raise InvalidInput(f"an edit needs who made it (a non-empty str), got {by!r}")
    values = dict(set or {})
    removed = [unset] if isinstance(unset, str) else list(unset)
    for key in [*values, *removed]:
        if not isinstance(key, str) or not key:
            raise InvalidInput(f"context keys must be non-empty str, got {key!r}")
    if goto is not None and goto not in graph.tasks:
        raise InvalidInput(
            f"goto {goto!r}: graph {graph.id!r} version {graph.version!r} has no such task "
            f"(tasks: {', '.join(graph.tasks)})"
        )
    if not values and not removed and goto is None:
        raise InvalidInput("an edit needs at least one of set, unset or goto")
    work = session.copy()
    work.context.track()
    back_low = len(work.back_stack)
    for key, value in values.items():
        work.context.set(key, value)
    for key in removed:
        work.context.remove(key)
    what: list[str] = []
    if values:
        what.append("set " + ", ".join(values))
    if removed:
        what.append("unset " + ", ".join(removed))
    if goto is not None:
        what.append(f"goto {goto}")
        if goto != work.current_task:
            work.back_stack.append(work.current_task)
        work.current_task = goto
        work.status = SessionStatus.PAUSED
    work.status_message = f"edited by {by}: " + "; ".join(what)
    work.revision += 1
    meta = work.metadata
    when = time.time() if now is None else now
    work.metadata = SessionMetadata(
        meta.owner,
        meta.created_at,
        when,
        meta.request_count,
        meta.client_addr,
        meta.expires_at if ttl is None else when + ttl,
        meta.members,
    )
    work.record = record_of(
        work, task=session.current_task, input=None, response=None, back_low=back_low
    )
    result = unchanged(work)
    return work, msgspec.structs.replace(result, task=session.current_task)


def unchanged(session: Session) -> StepResult:
    """The result of a revision that ran no task (an edit, a migration)."""
    return StepResult(
        session_id=session.session_id,
        task=session.current_task,
        response=None,
        responses=(),
        status=session.status,
        next_task=session.current_task,
        status_message=session.status_message,
        revision=session.revision,
    )
