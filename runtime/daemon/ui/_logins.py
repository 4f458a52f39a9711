"""Who a dashboard request is: server-side login sessions behind an HttpOnly cookie.

A login trades a bearer token (checked by the daemon's ``Authenticator``) for a
random session id in a cookie that is ``HttpOnly`` (no script reads it),
``SameSite=Strict`` (no other site's page sends it), ``Path=/ui`` and ``Secure``
when the daemon serves TLS. The token itself never leaves the login form: it is
neither stored nor put in a URL. Each login session has its own CSRF token,
which every form that changes something carries and every POST checks.

Without a tokens file there is no login: every browser on loopback is the
local user, who gets a login session (and a CSRF token) on its first page.

Thread: everything here runs on the event loop thread (the handlers), so the
table needs no lock.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

__all__ = ["COOKIE", "IDLE_TIMEOUT", "MAX_LOGINS", "FailedLogins", "Login", "Logins"]

COOKIE = "actorflow_ui"
IDLE_TIMEOUT = 8 * 3600.0  # seconds a login lasts without a request
MAX_LOGINS = 10_000  # beyond this the least recently used login is dropped


@dataclass(slots=True)
class Login:
    """One signed-in browser: its user, role, CSRF token, last request time, and the
    outcome of its last action (shown once, on the next page)."""

    user: str
    admin: bool
    csrf: str
    last_seen: float
    flash: str | None = None

    def take_flash(self) -> str | None:
        """The outcome of the last action, once."""
        flash, self.flash = self.flash, None
        return flash

    def csrf_ok(self, given: str | None) -> bool:
        """Whether a form's CSRF field is this login's token (compared in constant time)."""
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())


class Logins:
    """The login sessions, by cookie value, least recently used first."""

    def __init__(self, *, idle_timeout: float = IDLE_TIMEOUT, limit: int = MAX_LOGINS) -> None:
        self._by_id: OrderedDict[str, Login] = OrderedDict()
        self.idle_timeout = idle_timeout
        self.limit = limit

    def start(self, user: str, *, admin: bool) -> tuple[str, Login]:
        """A new login for ``user``: its cookie value and the login."""
        while len(self._by_id) >= self.limit:
            self._by_id.popitem(last=False)
        cookie = secrets.token_urlsafe(32)
        login = Login(user, admin, secrets.token_urlsafe(32), time.monotonic())
        self._by_id[cookie] = login
        return cookie, login

    def find(self, cookie: str | None) -> Login | None:
        """The login a cookie names, if it is still valid (its idle time is renewed)."""
        if not cookie:
            return None
        login = self._by_id.get(cookie)
        if login is None:
            return None
        now = time.monotonic()
        if now - login.last_seen > self.idle_timeout:
            del self._by_id[cookie]
            return None
        login.last_seen = now
        self._by_id.move_to_end(cookie)
        return login

    def end(self, cookie: str | None) -> None:
        """Sign a cookie's login out (nothing if it names none)."""
        if cookie:
            self._by_id.pop(cookie, None)


class FailedLogins:
    """Refuses logins from an address that failed ``limit`` times in the last ``period`` s.

    Tokens are long random strings, so this only keeps a guesser from costing the
    daemon much; it bounds the addresses it remembers to ``MAX_LOGINS``.
    """

    def __init__(self, *, limit: int = 10, period: float = 60.0) -> None:
        self.limit = limit
        self.period = period
        self._by_client: OrderedDict[str, deque[float]] = OrderedDict()

    def blocked(self, client: str) -> bool:
        """Whether ``client`` failed too often lately."""
        failures = self._by_client.get(client)
        if failures is None:
            return False
        cutoff = time.monotonic() - self.period
        while failures and failures[0] < cutoff:
            failures.popleft()
        return len(failures) >= self.limit

    def failed(self, client: str) -> None:
        """Count one failed login from ``client``."""
        failures = self._by_client.pop(client, None) or deque(maxlen=self.limit)
        failures.append(time.monotonic())
        self._by_client[client] = failures
        while len(self._by_client) > MAX_LOGINS:
            self._by_client.popitem(last=False)
