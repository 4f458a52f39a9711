"""``actorflow sessions history|fork|rollback``: time travel on the store, without a daemon.

``history ID`` prints the retained revisions (newest first) as a table, or as
JSON; ``fork ID --revision N`` stores a new session from revision N and prints
its id; ``rollback ID --revision N`` appends a revision equal to N's. Fork and
rollback write, so (like ``rm``) they are refused while a daemon serves the
data directory: its live actor would not know.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from rich.table import Table

from flow._errors import RevisionConflict
from flow._history import forked, rolled_back
from flow.stores import SessionStore
from runtime.admin import AdminError

__all__ = ["ACTIONS", "add_history_actions", "revisions_table", "run_history_action"]

ACTIONS = ("history", "fork", "rollback")
_INPUT_SHOWN = 60


def add_history_actions(actions: Any, add_store_target: Any) -> None:
    """Add ``history``, ``fork`` and ``rollback`` to the ``sessions`` sub-commands."""
    history = actions.add_parser("history", help="a stored session's revisions, newest first")
    history.add_argument("id", help="session id or any unique prefix")
    history.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    history.add_argument("--before", type=int, help="only revisions below this one")
    history.add_argument("--json", action="store_true", help="print JSON")
    add_store_target(history)
    fork = actions.add_parser("fork", help="a new session from one of a session's revisions")
    fork.add_argument("id", help="session id or any unique prefix")
    fork.add_argument("--revision", type=int, help="the revision (default: the newest)")
    add_store_target(fork)
    rollback = actions.add_parser(
        "rollback", help="append a revision equal to an earlier one (refused while a daemon runs)"
    )
    rollback.add_argument("id", help="session id or any unique prefix")
    rollback.add_argument("--revision", type=int, required=True, help="the revision to go back to")
    add_store_target(rollback)


def run_history_action(store: SessionStore, session_id: str, args: argparse.Namespace) -> Any:
    """Run one action; returns what to print (a table, a line, or JSON-able data)."""
    if args.action == "history":
        if args.limit < 1:
            raise AdminError("BadArgument", f"--limit must be at least 1, got {args.limit}")
        infos = store.revisions(session_id, args.limit, args.before)
        rows = [
            {
                "revision": i.revision,
                "at": i.at,
                "kind": i.kind,
                "task": i.task,
                "input": i.input,
                "response": i.response,
                "status": i.status,
            }
            for i in infos
        ]
        return rows if args.json else revisions_table(session_id, rows)
    if args.action == "fork":
        past = _load(store, session_id, args.revision)
        fork = forked(past, now=time.time())
        store.save(fork, None).result()
        return f"forked {session_id}@{past.revision} as {fork.session_id}"
    current = _load(store, session_id, None)
    past = _load(store, session_id, args.revision)
    back = rolled_back(current, past, now=time.time())
    try:
        store.save(back, current.revision).result()
    except RevisionConflict as exc:
        raise AdminError("RevisionConflict", f"{exc}: try again") from None
    return f"rolled {session_id} back to revision {past.revision} as revision {back.revision}"


def _load(store: SessionStore, session_id: str, revision: int | None) -> Any:
    session = store.load(session_id, revision)
    if session is None:
        raise AdminError("SessionNotFound", f"no stored session {session_id!r}")
    return session


def revisions_table(session_id: str, rows: list[dict[str, Any]]) -> Table:
    """Revisions as a rich table (newest first)."""
    table = Table(title=f"revisions of {session_id}", title_justify="left")
    for column in ("rev", "time (UTC)", "kind", "task", "input", "response", "status"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            str(row["revision"]),
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["at"])),
            row["kind"],
            row["task"],
            _short(row["input"]),
            _short(row["response"]),
            row["status"],
        )
    return table


def _short(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= _INPUT_SHOWN else text[: _INPUT_SHOWN - 1] + "…"
