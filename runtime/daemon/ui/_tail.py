"""The session page's live tail: ``GET /ui/sessions/{id}/events``, server-sent HTML.

The bearer-token route ``/v1/sessions/{id}/events`` sends JSON for programs; a
browser on the dashboard has only its login cookie, so the page reads this one,
which checks the login the same way (the owner, a member with read access, an
admin; anyone else gets 404) and sends each batch of events as one ``tail``
message of escaped HTML fragments (``_tail_events.html``) that the vendored
htmx SSE extension appends to the page: streamed tokens appear as they are
emitted, with no script of our own.

A tail starts with a ``watching`` line (the subscription is in place: every
later event reaches it), sends a keep-alive comment after ``HEARTBEAT`` seconds
of silence, and ends with an ``end`` message (the page's ``sse-close``: the
browser does not reconnect) once it sent ``MAX_TAIL_EVENTS`` events, fell behind
(``overflow``) or the daemon drains. Runs on the event loop thread.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any

from litestar import Request, get
from litestar.params import FromPath
from litestar.response import Redirect, ServerSentEvent, ServerSentEventMessage

from flow._events import (
    Committed,
    CustomEvent,
    Overflow,
    StepError,
    StepEvent,
    StepStarted,
    TaskFinished,
    TaskStarted,
    Token,
)
from runtime._streams import AsyncEventStream
from runtime.daemon._gateway import request_info
from runtime.daemon._problems import DRAINING, OVERLOADED, Problem, problem_for
from runtime.daemon.ui._dashboard import MAX_STREAMS, Dashboard

__all__ = ["HEARTBEAT", "MAX_TAIL_EVENTS", "tail_fragments", "tail_handler"]

HEARTBEAT = 15.0  # seconds of silence before a keep-alive comment
MAX_TAIL_EVENTS = 10_000  # events one page receives before its tail ends (the page stays bounded)


def _line(event: StepEvent) -> dict[str, Any]:
    """What ``_tail_events.html`` shows of one event: its kind and plain values."""
    if isinstance(event, Token):
        return {"kind": "token", "task": event.task, "text": event.text}
    if isinstance(event, StepStarted):
        return {"kind": "step_started", "revision": event.revision}
    if isinstance(event, TaskStarted):
        return {"kind": "task_started", "task": event.task}
    if isinstance(event, CustomEvent):
        return {"kind": "event", "task": event.task, "name": event.name, "data": event.data}
    if isinstance(event, TaskFinished):
        return {
            "kind": "task_finished",
            "task": event.task,
            "next": event.goto or event.next_action,
            "response": event.response,
        }
    if isinstance(event, Committed):
        return {"kind": "committed", "revision": event.revision, "status": event.status}
    if isinstance(event, StepError):
        return {"kind": "error", "detail": problem_for(event.error).detail}
    if isinstance(event, Overflow):
        return {"kind": "overflow", "buffered": event.buffered}
    return {"kind": "other", "name": type(event).__name__}


def tail_fragments(dashboard: Dashboard, events: Sequence[StepEvent]) -> str:
    """The HTML the page appends for ``events`` (autoescaped: tokens are user data)."""
    return dashboard.render("_tail_events.html", lines=[_line(e) for e in events])


async def _tail(
    dashboard: Dashboard, stream: AsyncEventStream
) -> AsyncGenerator[ServerSentEventMessage, None]:
    dashboard.streams += 1
    api = dashboard.api
    try:
        yield ServerSentEventMessage(
            data=dashboard.render("_tail_events.html", lines=[{"kind": "watching"}]), event="tail"
        )
        sent = 0
        ended = "the daemon is shutting down"
        while not api.draining:
            batch = await stream.batch(HEARTBEAT)
            if batch is None:
                ended = "the tail ended"
                break
            if not batch:
                yield ServerSentEventMessage(comment="keepalive")
                continue
            events = [event for _, event in batch]
            yield ServerSentEventMessage(data=tail_fragments(dashboard, events), event="tail")
            sent += len(events)
            if isinstance(events[-1], Overflow):
                ended = "this page fell behind"
                break
            if sent >= MAX_TAIL_EVENTS:
                ended = f"{sent} events shown"
                break
        end = dashboard.render("_tail_events.html", lines=[{"kind": "end", "why": ended}])
        yield ServerSentEventMessage(data=end, event="end")
    finally:
        stream.close()
        dashboard.streams -= 1


def tail_handler(dashboard: Dashboard) -> Any:
    """The route handler of a session's live tail."""
    runtime = dashboard.api.runtime

    @get("/sessions/{session_id:str}/events", include_in_schema=False)
    async def session_tail(
        request: Request[Any, Any, Any], session_id: FromPath[str]
    ) -> ServerSentEvent | Redirect:
        visit = dashboard.visit(request)
        if visit is None:
            return dashboard.to_login(request)
        request_info(request.scope).session_id = session_id
        if dashboard.api.draining:
            raise Problem(DRAINING, "the daemon is shutting down")
        if dashboard.streams >= MAX_STREAMS:
            raise Problem(OVERLOADED, "too many dashboards are open; retry")
        stream = await runtime.tail(session_id, owner=dashboard.owner_scope(visit.login))
        return ServerSentEvent(_tail(dashboard, stream), headers={"cache-control": "no-store"})

    return session_tail
