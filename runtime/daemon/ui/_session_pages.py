"""The session page (``/ui/sessions/{id}``) and the admin actions on a session.

The page reads ``inspect`` (what the shell's ``inspect`` shows), ``messages``
and ``revisions`` (the chat and the history, paged) and, for a past revision,
``get_session(revision=)``. A non-admin sees only their own sessions (the
runtime's owner check answers 404 for anyone else's). The actions (passivate,
snapshot, kill, delete, fork, rollback) are for admins only: a confirmation page
first, then a POST carrying the login's CSRF token.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from litestar import Request, get, post
from litestar.params import FromPath, QueryParameter
from litestar.response import Redirect, Response
from litestar.types import ControllerRouterHandler

from runtime.daemon._gateway import request_info
from runtime.daemon._problems import NOT_FOUND, Problem
from runtime.daemon.ui._dashboard import ADMINS_ONLY, UI_PATH, Dashboard
from runtime.daemon.ui._logins import Login
from runtime.daemon.ui._render import age, pretty_json

__all__ = ["ACTIONS", "session_handlers"]

MESSAGES_PAGE = 20
REVISIONS_PAGE = 20


@dataclass(frozen=True, slots=True)
class Action:
    """One admin action: what the confirmation page asks and says it will do."""

    question: str
    consequence: str
    needs_revision: bool = False


ACTIONS = {
    "passivate": Action(
        "Passivate this session?",
        "Its snapshot is written and its actor stops; the next request activates it again.",
    ),
    "snapshot": Action(
        "Write this session's snapshot now?", "The actor stays live; nothing else changes."
    ),
    "kill": Action(
        "Kill this session's actor?",
        "The actor stops without a final write: whatever was not yet committed is lost "
        "(with durability=fsync every acknowledged step is already stored).",
    ),
    "delete": Action(
        "Delete this session?",
        "The session and its whole history are removed from the store. This cannot be undone.",
    ),
    "fork": Action(
        "Fork a new session from this revision?",
        "A new session starts as this revision was; this one is left as it is.",
        needs_revision=True,
    ),
    "rollback": Action(
        "Roll this session back to this revision?",
        "A new revision equal to this one is appended; the revisions after it stay in the history.",
        needs_revision=True,
    ),
}


def _action(name: str) -> Action:
    action = ACTIONS.get(name)
    if action is None:
        raise Problem(NOT_FOUND, f"no action {name!r} (actions: {', '.join(ACTIONS)})")
    return action


def _require_admin(login: Login, action: str) -> None:
    if not login.admin:
        raise Problem(
            ADMINS_ONLY,
            f"only admins may {action} a session (mark the user 'admin' in the tokens file)",
        )


def pending_timers(inspect: dict[str, Any], now: float) -> list[dict[str, Any]]:
    """The session's pending timers as the page lists them, soonest first: name, kind
    (``wake`` for a ``wake_after``, which an input arriving first cancels; else
    ``named``), due in how long (or how long overdue) and at what time."""
    rows = []
    for timer in sorted(inspect.get("timers") or (), key=lambda t: float(t["due"])):
        left = float(timer["due"]) - now
        rows.append(
            {
                "name": timer["name"],
                "kind": "wake" if timer.get("wake") else "named",
                "due": timer["due"],
                "due_in": f"in {age(left)}" if left >= 0 else f"overdue by {age(-left)}",
            }
        )
    return rows


def _revision_arg(value: str | None) -> int:
    if value is None or not value.isdigit():
        raise Problem(NOT_FOUND, "this action needs a revision number")
    return int(value)


def _performers(dashboard: Dashboard) -> dict[str, Callable[[str, int], Awaitable[str]]]:
    runtime = dashboard.api.runtime

    async def passivate(sid: str, _: int) -> str:
        done = await runtime.passivate(sid)
        return "Passivated." if done else "The session was not live: nothing to passivate."

    async def snapshot(sid: str, _: int) -> str:
        size = await runtime.snapshot(sid)
        return f"Snapshot written: {size} bytes." if size else "Not live: nothing to write."

    async def kill(sid: str, _: int) -> str:
        done = await runtime.kill(sid)
        return "Killed." if done else "The session was not live: nothing to kill."

    async def delete(sid: str, _: int) -> str:
        await runtime.delete_session(sid)
        return f"Deleted session {sid}."

    async def fork(sid: str, revision: int) -> str:
        new = await runtime.fork(sid, revision=revision)
        return new

    async def rollback(sid: str, revision: int) -> str:
        view = await runtime.rollback(sid, revision=revision)
        return f"Rolled back to revision {revision}: now at revision {view.revision}."

    return {
        "passivate": passivate,
        "snapshot": snapshot,
        "kill": kill,
        "delete": delete,
        "fork": fork,
        "rollback": rollback,
    }


def session_handlers(dashboard: Dashboard) -> list[ControllerRouterHandler]:
    """The session page, the confirmation pages and the actions' POST routes."""
    runtime = dashboard.api.runtime
    performers = _performers(dashboard)

    @get("/sessions/{session_id:str}", include_in_schema=False)
    async def session_page(
        request: Request[Any, Any, Any],
        session_id: FromPath[str],
        revision: Annotated[int | None, QueryParameter(ge=0)] = None,
        before: Annotated[int | None, QueryParameter(ge=0)] = None,
        rbefore: Annotated[int | None, QueryParameter(ge=0)] = None,
    ) -> Response[str] | Redirect:
        visit = dashboard.visit(request)
        if visit is None:
            return dashboard.to_login(request)
        request_info(request.scope).session_id = session_id
        owner = dashboard.owner_scope(visit.login)
        await runtime.get_session(session_id, owner=owner)  # 404 for another owner's session
        inspect = await runtime.inspect(session_id)
        doc: dict[str, Any] = inspect
        if revision is not None:
            past = await runtime.get_session(session_id, owner=owner, revision=revision)
            doc = {
                **inspect,
                "status": past.status,
                "status_message": past.status_message,
                "current_task": past.current_task,
                "revision": past.revision,
                "context": past.context,
                "history_length": len(past.chat_history),
            }
        messages = await runtime.messages(
            session_id, owner=owner, limit=MESSAGES_PAGE, before=before
        )
        revisions = await runtime.revisions(
            session_id, owner=owner, limit=REVISIONS_PAGE + 1, before=rbefore
        )
        older = revisions[REVISIONS_PAGE].revision + 1 if len(revisions) > REVISIONS_PAGE else None
        state = {"revision": revision, "before": before, "rbefore": rbefore}

        def link(**changes: object) -> str:
            merged = {**state, **changes}
            query = urlencode({k: v for k, v in merged.items() if v is not None})
            return f"{UI_PATH}/sessions/{quote(session_id)}" + (f"?{query}" if query else "")

        return dashboard.page(
            "session.html",
            visit,
            page="session",
            sid=session_id,
            doc=doc,
            inspect=inspect,
            viewing=revision,
            context_json=pretty_json(doc.get("context", {})),
            timers=pending_timers(inspect, time.time()),
            messages=messages,
            before=before,
            revisions=revisions[:REVISIONS_PAGE],
            older_revisions=older,
            link=link,
        )

    @get("/sessions/{session_id:str}/confirm/{action:str}", include_in_schema=False)
    async def confirm(
        request: Request[Any, Any, Any],
        session_id: FromPath[str],
        action: FromPath[str],
        revision: Annotated[int | None, QueryParameter(ge=0)] = None,
    ) -> Response[str] | Redirect:
        visit = dashboard.visit(request)
        if visit is None:
            return dashboard.to_login(request)
        what = _action(action)
        _require_admin(visit.login, action)
        if what.needs_revision and revision is None:
            raise Problem(NOT_FOUND, f"{action} needs ?revision=N")
        question = what.question.replace("this revision", f"revision {revision}")
        return dashboard.page(
            "confirm.html",
            visit,
            session_id=session_id,
            action=action,
            question=question,
            consequence=what.consequence,
            revision=revision if what.needs_revision else None,
        )

    @post("/sessions/{session_id:str}/{action:str}", include_in_schema=False, status_code=303)
    async def act(
        request: Request[Any, Any, Any], session_id: FromPath[str], action: FromPath[str]
    ) -> Redirect:
        login, form = await dashboard.checked_post(request)
        what = _action(action)
        _require_admin(login, action)
        request_info(request.scope).session_id = session_id
        revision = _revision_arg(form.get("revision")) if what.needs_revision else 0
        outcome = await performers[action](session_id, revision)
        if action == "fork":
            login.flash = f"Forked from {session_id} at revision {revision}."
            return Redirect(f"{UI_PATH}/sessions/{quote(outcome)}", status_code=303)
        login.flash = outcome
        if action == "delete":
            return Redirect(f"{UI_PATH}/actors", status_code=303)
        return Redirect(f"{UI_PATH}/sessions/{quote(session_id)}", status_code=303)

    return [session_page, confirm, act]
