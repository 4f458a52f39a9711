"""What every dashboard page shares: who is asking, and how an answer is built.

``Dashboard`` holds the daemon's ``Api`` (the runtime, graphs, metrics), the
login sessions, the figures sampler and the templates. Handlers call
``visit`` to learn the caller (or send them to the login form) and ``page``
to answer with HTML and the security headers. Runs on the event loop thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from jinja2 import Environment
from litestar import Request
from litestar.datastructures import Cookie
from litestar.response import Redirect, Response

from flow.stores._sqlite import SqliteStore
from runtime._live_page import LivePage
from runtime.daemon._auth import Authenticator
from runtime.daemon._gateway import request_info
from runtime.daemon._problems import Problem, ProblemKind
from runtime.daemon._routes import Api
from runtime.daemon.ui._figures import Sampler
from runtime.daemon.ui._logins import COOKIE, FailedLogins, Login, Logins
from runtime.daemon.ui._peers import Peers
from runtime.daemon.ui._render import SECURITY_HEADERS, environment

__all__ = [
    "ADMINS_ONLY",
    "FORBIDDEN",
    "MAX_STREAMS",
    "TOO_MANY_LOGINS",
    "UI_PATH",
    "Dashboard",
    "Visit",
]

UI_PATH = "/ui"
FORBIDDEN = ProblemKind(403, "forbidden", "Forbidden")
ADMINS_ONLY = ProblemKind(403, "admins-only", "Only admins may do this")
TOO_MANY_LOGINS = ProblemKind(429, "too-many-logins", "Too many failed logins", retry_after=60)
MAX_STREAMS = 64  # live overview streams open at once


@dataclass(slots=True)
class Visit:
    """The caller of one dashboard request, and the cookie to set if the login is new."""

    login: Login
    new_cookie: str | None = None


def _writer_stats(api: Api) -> tuple[int, int] | None:
    store = api.runtime.store
    if isinstance(store, SqliteStore):
        stats = store.writer_stats()
        return stats.transactions, stats.saves
    return None


@dataclass
class Dashboard:
    """The dashboard's shared state.

    Attributes:
        api: the daemon's handlers' shared state (runtime, graphs, metrics, admins).
        auth: the daemon's tokens (None users: no tokens file, the local user).
        secure_cookies: the daemon serves TLS: cookies are ``Secure``.
    """

    api: Api
    auth: Authenticator
    secure_cookies: bool = False
    logins: Logins = field(default_factory=Logins)
    failed_logins: FailedLogins = field(default_factory=FailedLogins)
    env: Environment = field(default_factory=environment)
    streams: int = 0
    peers: Peers | None = None
    sampler: Sampler = field(init=False)

    def __post_init__(self) -> None:
        api = self.api
        self.sampler = Sampler(
            api.runtime,
            api.metrics,
            lambda: _writer_stats(api),
            lambda: api.draining or api.runtime.draining,
            self.peers,
        )

    @property
    def tokens(self) -> bool:
        """Whether the daemon has a tokens file (else every caller is the local user)."""
        return self.auth.users is not None

    def visit(self, request: Request[Any, Any, Any]) -> Visit | None:
        """The caller's login, or None when they must log in first."""
        login = self.logins.find(request.cookies.get(COOKIE))
        visit = None
        if login is not None:
            visit = Visit(login)
        elif not self.tokens:
            user = self.auth.user_for(None) or ""
            cookie, login = self.logins.start(user, admin=user in self.auth.admins)
            visit = Visit(login, cookie)
        if visit is not None:
            request_info(request.scope).user = visit.login.user
            self.sampler.touch()
        return visit

    async def live_page(self, **query: Any) -> LivePage:
        """One page of the live actors: this daemon's, or every worker's (``peers``)."""
        if self.peers is not None:
            return await self.peers.live_page(**query)
        return await self.api.runtime.live_page(**query)

    def owner_scope(self, login: Login) -> str | None:
        """The owner the runtime checks this login's reads against (None: an admin, any)."""
        return None if login.admin else login.user

    def cookie(self, value: str, *, max_age: int | None = None) -> Cookie:
        """The login cookie: HttpOnly, SameSite=Strict, path /ui, Secure under TLS."""
        return Cookie(
            key=COOKIE,
            value=value,
            path=UI_PATH,
            httponly=True,
            samesite="strict",
            secure=self.secure_cookies,
            max_age=max_age,
        )

    def render(self, template: str, **context: Any) -> str:
        """A template rendered with ``context``."""
        return self.env.get_template(template).render(**context)

    def page(
        self, template: str, visit: Visit | None, *, status: int = 200, **context: Any
    ) -> Response[str]:
        """An HTML answer, with the security headers (and the login cookie if it is new)."""
        login = visit.login if visit is not None else None
        body = self.render(
            template,
            login=login,
            can_log_out=self.tokens,
            notice=login.take_flash() if login is not None else None,
            **context,
        )
        cookies = [self.cookie(visit.new_cookie)] if visit and visit.new_cookie else []
        return Response(
            body,
            status_code=status,
            media_type="text/html; charset=utf-8",
            headers=SECURITY_HEADERS,
            cookies=cookies,
        )

    def to_login(self, request: Request[Any, Any, Any]) -> Redirect:
        """Send the browser to the login form, back to this page afterwards."""
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        return Redirect(f"{UI_PATH}/login?next={quote(target, safe='')}", status_code=303)

    async def checked_post(self, request: Request[Any, Any, Any]) -> tuple[Login, dict[str, str]]:
        """The caller of a POST and its form, once its CSRF token matched.

        Raises:
            Problem: 403 when there is no login or the form's CSRF token is not the login's.
        """
        visit = self.visit(request)
        form = await request.form()
        fields = {key: value for key, value in form.items() if isinstance(value, str)}
        if visit is None or not visit.login.csrf_ok(fields.get("csrf")):
            raise Problem(FORBIDDEN, "this form is stale or was not sent by the dashboard; reload")
        return visit.login, fields
