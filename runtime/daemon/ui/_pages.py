"""The dashboard's routes: login, overview (and its live stream), live actors, errors.

Every figure comes from the runtime methods the admin socket and the shell use
(``stats``, ``live_page``, ``inspect``...), and from the daemon's own metrics.
The session page and its actions are in ``_session_pages``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Annotated, Any
from urllib.parse import urlencode

import structlog
from litestar import Request, Router, get, post
from litestar.exceptions import HTTPException
from litestar.params import QueryParameter
from litestar.response import Redirect, Response, ServerSentEvent, ServerSentEventMessage
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from runtime._live_page import LIVE_SORTS, MAX_LIVE_PAGE
from runtime.daemon._problems import (
    DRAINING,
    INTERNAL,
    OVERLOADED,
    Problem,
    ProblemKind,
    problem_for,
)
from runtime.daemon.ui._dashboard import MAX_STREAMS, TOO_MANY_LOGINS, UI_PATH, Dashboard, Visit
from runtime.daemon.ui._figures import KEPT, PERIOD, WINDOW, figures
from runtime.daemon.ui._logins import COOKIE
from runtime.daemon.ui._render import STATIC_DIR, sparkline
from runtime.daemon.ui._session_pages import session_handlers
from runtime.daemon.ui._tail import tail_handler

__all__ = ["ui_router"]

STREAM_SECONDS = 300.0  # an overview stream ends after this; the browser reconnects
SORTABLE = (
    ("mailbox_depth", "mailbox"),
    ("idle_seconds", "idle"),
    ("snapshot_bytes", "snapshot bytes"),
    ("request_count", "steps"),
)
STATUSES = ("running", "idle", "ready", "waiting_for_input", "completed", "error")
PAGE_SIZE = 50
_log = structlog.get_logger("actorflowd")


def _safe_next(target: str | None) -> str:
    """Where to go after logging in: a dashboard path only (never another site)."""
    if target and target.startswith(UI_PATH) and "//" not in target and "\\" not in target:
        return target
    return UI_PATH


def _pages(dashboard: Dashboard) -> list[ControllerRouterHandler]:
    api = dashboard.api

    @get("/login", include_in_schema=False)
    async def login_form(
        request: Request[Any, Any, Any],
        next: Annotated[str | None, QueryParameter()] = None,
    ) -> Response[str] | Redirect:
        if not dashboard.tokens:
            return Redirect(_safe_next(next), status_code=303)
        return dashboard.page("login.html", None, next=_safe_next(next), error=None)

    @post("/login", include_in_schema=False, status_code=303)
    async def log_in(request: Request[Any, Any, Any]) -> Response[str] | Redirect:
        client = request.client.host if request.client else ""
        if dashboard.failed_logins.blocked(client):
            raise Problem(TOO_MANY_LOGINS, "too many failed logins from this address; wait")
        form = await request.form()
        token = form.get("token")
        target = _safe_next(form.get("next") if isinstance(form.get("next"), str) else None)
        user = None
        if isinstance(token, str) and token.strip():
            user = dashboard.auth.user_for(f"Bearer {token.strip()}")
        if user is None or not dashboard.tokens:
            dashboard.failed_logins.failed(client)
            error = "That token is not in the daemon's tokens file."
            return dashboard.page("login.html", None, status=401, next=target, error=error)
        cookie, _ = dashboard.logins.start(user, admin=user in dashboard.auth.admins)
        response = Redirect(target, status_code=303)
        response.cookies.append(dashboard.cookie(cookie))
        return response

    @post("/logout", include_in_schema=False, status_code=303)
    async def log_out(request: Request[Any, Any, Any]) -> Redirect:
        await dashboard.checked_post(request)
        dashboard.logins.end(request.cookies.get(COOKIE))
        response = Redirect(f"{UI_PATH}/login", status_code=303)
        response.cookies.append(dashboard.cookie("", max_age=0))
        return response

    @get("/", include_in_schema=False)
    async def overview(request: Request[Any, Any, Any]) -> Response[str] | Redirect:
        visit = dashboard.visit(request)
        if visit is None:
            return dashboard.to_login(request)
        if not dashboard.sampler.samples:
            await dashboard.sampler.sample()
        live = await dashboard.live_page(owner=dashboard.owner_scope(visit.login), limit=1)
        graphs = [
            {"id": g.id, "version": g.version, "live": live.versions.get((g.id, g.version), 0)}
            for g in api.graphs
        ]
        return dashboard.page(
            "overview.html", visit, page="overview", graphs=graphs, **_fragment_context(dashboard)
        )

    @get("/overview/stream", include_in_schema=False)
    async def overview_stream(request: Request[Any, Any, Any]) -> ServerSentEvent | Redirect:
        visit = dashboard.visit(request)
        if visit is None:
            return dashboard.to_login(request)
        if dashboard.streams >= MAX_STREAMS:
            raise Problem(OVERLOADED, "too many dashboards are open; retry")
        if api.draining:
            raise Problem(DRAINING, "the daemon is shutting down")
        return ServerSentEvent(_stream(dashboard), headers={"cache-control": "no-store"})

    @get("/actors", include_in_schema=False)
    async def actors(
        request: Request[Any, Any, Any],
        sort: Annotated[str, QueryParameter(pattern="^(" + "|".join(LIVE_SORTS) + ")$")] = (
            "mailbox_depth"
        ),
        order: Annotated[str, QueryParameter(pattern="^(asc|desc)$")] = "desc",
        graph: Annotated[str | None, QueryParameter()] = None,
        owner: Annotated[str | None, QueryParameter()] = None,
        status: Annotated[str | None, QueryParameter()] = None,
        offset: Annotated[int, QueryParameter(ge=0)] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIVE_PAGE)] = PAGE_SIZE,
    ) -> Response[str] | Redirect:
        visit = dashboard.visit(request)
        if visit is None:
            return dashboard.to_login(request)
        scope = dashboard.owner_scope(visit.login)
        wanted_owner = (owner or None) if scope is None else scope
        page = await dashboard.live_page(
            sort=sort,  # checked by the pattern above
            descending=order == "desc",
            graph=graph or None,
            owner=wanted_owner,
            status=status or None,
            offset=offset,
            limit=limit,
        )
        query = {
            "sort": sort,
            "order": order,
            "graph": graph or "",
            "owner": (owner or "") if scope is None else "",
            "status": status or "",
            "limit": str(limit),
        }

        def link(**changes: object) -> str:
            merged = {**query, **{k: str(v) for k, v in changes.items()}}
            return f"{UI_PATH}/actors?" + urlencode({k: v for k, v in merged.items() if v})

        def sort_link(key: str) -> str:
            flip = "asc" if query["sort"] == key and query["order"] == "desc" else "desc"
            return link(sort=key, order=flip, offset=0)

        older = offset + limit < page.total
        return dashboard.page(
            "actors.html",
            visit,
            page="actors",
            live=page,
            query=query,
            graphs=sorted(page.graphs.items()),
            statuses=STATUSES,
            sortable=SORTABLE,
            sort_link=sort_link,
            prev_link=link(offset=max(0, offset - limit)) if offset > 0 else None,
            next_link=link(offset=offset + limit) if older else None,
        )

    return [login_form, log_in, log_out, overview, overview_stream, actors]


def _fragment_context(dashboard: Dashboard) -> dict[str, Any]:
    now = figures(list(dashboard.sampler.samples))
    spark = {
        name: sparkline(now.series.get(name, [])) for name in ("steps", "errors", "p99", "live")
    }
    return {"f": now, "spark": spark, "window": WINDOW, "kept": KEPT}


async def _stream(dashboard: Dashboard) -> AsyncGenerator[ServerSentEventMessage, None]:
    dashboard.streams += 1
    try:
        deadline = time.monotonic() + STREAM_SECONDS
        sampler = dashboard.sampler
        while time.monotonic() < deadline and not dashboard.api.draining:
            sampler.touch()
            async with sampler.ticked:
                try:
                    await asyncio.wait_for(sampler.ticked.wait(), timeout=2 * PERIOD)
                except TimeoutError:
                    continue
            if dashboard.api.draining:
                break
            html = dashboard.render("_figures.html", **_fragment_context(dashboard))
            yield ServerSentEventMessage(data=html, event="figures")
    finally:
        dashboard.streams -= 1


def _problem(exc: Exception) -> Problem:
    """The problem a dashboard error is (shown as an HTML page, not problem+json)."""
    if isinstance(exc, HTTPException):
        kind = ProblemKind(exc.status_code, f"http-{exc.status_code}", "Not possible")
        if exc.status_code == 404:
            kind = ProblemKind(404, "not-found", "Not found")
        return Problem(kind, str(exc.detail), headers=exc.headers or {})
    problem = problem_for(exc)
    if problem.kind is INTERNAL:
        _log.error("ui_unhandled_error", exc_info=exc)
    return problem


def ui_error_page(
    dashboard: Dashboard, request: Request[Any, Any, Any], exc: Exception
) -> Response[str]:
    """The HTML error page for ``exc`` under /ui (also for paths no route matched, which
    the app's own handler sees first)."""
    return _error_handler(dashboard)(request, exc)  # type: ignore[no-any-return]


def _error_handler(dashboard: Dashboard) -> Any:
    def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[str]:
        problem = _problem(exc)
        dashboard.api.metrics.record_error(problem.kind.slug)
        login = dashboard.logins.find(request.cookies.get(COOKIE))
        response = dashboard.page(
            "error.html",
            None if login is None else Visit(login),
            status=problem.status,
            title=problem.kind.title,
            detail=problem.detail,
        )
        retry = problem.response_headers().get("retry-after")
        if retry is not None:
            response.headers["retry-after"] = retry
        return response

    return handle


def ui_router(dashboard: Dashboard) -> Router:
    """The dashboard at ``/ui``: its pages, its static files and HTML error pages."""
    static = create_static_files_router(
        path="/static", directories=[STATIC_DIR], include_in_schema=False, name="ui_static"
    )
    return Router(
        path=UI_PATH,
        route_handlers=[
            *_pages(dashboard),
            *session_handlers(dashboard),
            tail_handler(dashboard),
            static,
        ],
        exception_handlers={Exception: _error_handler(dashboard)},
        include_in_schema=False,
    )
