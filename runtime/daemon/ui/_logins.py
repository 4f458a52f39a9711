"""Who a dashboard request is: server-side login sessions behind an HttpOnly cookie.

A login trades a bearer token (checked by the daemon's ``Authenticator``) for a
random session id in a cookie that is ``HttpOnly`` (no script reads it),
``SameSite=Strict`` (no other site's page sends it), ``Path=/ui`` and ``Secure``
when the daemon serves TLS. The token itself never leaves the login form: it is
neither stored nor put in a URL. Each login session has its own CSRF token,
which every form that changes something carries and every POST checks.

Without a tokens file there is no login: every browser on loopback is the
local user, who gets a login session (and a CSRF token) on its first page.

Behind the ``--workers N`` front a session's pages are served by the worker that
owns the session, so a login must hold on every worker: the workers share a key
(``DATA_DIR/ui.key``, written by the parent at each start) and a login's cookie
is signed with it (``NONCE.USER.ADMIN.EXPIRES.MAC``, HMAC-SHA256). A worker that
does not know a cookie checks its MAC and expiry and adopts it; the CSRF token is
derived from the nonce with the key, the same on every worker. Such a login lasts
at most ``IDLE_TIMEOUT`` from its start, and a logout reaches every worker (the
front sends ``POST /ui/logout`` to all), each of which then refuses the cookie.

Thread: everything here runs on the event loop thread (the handlers), so the
table needs no lock.
"""

from __future__ import annotations

import base64
import hashlib
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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Logins:
    """The login sessions, by cookie value, least recently used first.

    ``key``: the workers' shared key (``--workers N``): cookies are signed and any
    worker adopts a valid one (see the module's docstring); None: a single daemon.
    """

    def __init__(
        self,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        limit: int = MAX_LOGINS,
        key: bytes | None = None,
    ) -> None:
        self._by_id: OrderedDict[str, Login] = OrderedDict()
        self._ended: OrderedDict[str, float] = OrderedDict()  # signed cookies logged out
        self.idle_timeout = idle_timeout
        self.limit = limit
        self.key = key

    def start(self, user: str, *, admin: bool) -> tuple[str, Login]:
        """A new login for ``user``: its cookie value and the login."""
        while len(self._by_id) >= self.limit:
            self._by_id.popitem(last=False)
        if self.key is None:
            cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        else:
            nonce = secrets.token_urlsafe(24)
            expires = int(time.time() + self.idle_timeout)
            payload = f"{nonce}.{_b64(user.encode())}.{int(admin)}.{expires}"
            cookie, csrf = f"{payload}.{self._mac(payload)}", self._mac("csrf." + nonce)
        login = Login(user, admin, csrf, time.monotonic())
        self._by_id[cookie] = login
        return cookie, login

    def _mac(self, text: str) -> str:
        assert self.key is not None
        return _b64(hmac.new(self.key, text.encode(), hashlib.sha256).digest())

    def _signed(self, cookie: str) -> bool:
        """Whether ``cookie`` carries this daemon's MAC (it may have expired)."""
        payload, _, mac = cookie.rpartition(".")
        return bool(payload) and hmac.compare_digest(mac.encode(), self._mac(payload).encode())

    def _adopt(self, cookie: str) -> Login | None:
        """The login of a cookie another worker signed, if its MAC and expiry hold."""
        if self.key is None or cookie in self._ended:
            return None
        payload, _, mac = cookie.rpartition(".")
        parts = payload.split(".")
        if len(parts) != 4 or not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            return None
        nonce, user, admin, expires = parts
        if not expires.isdigit() or int(expires) <= time.time():
            return None
        login = Login(
            _unb64(user).decode(), admin == "1", self._mac("csrf." + nonce), time.monotonic()
        )
        while len(self._by_id) >= self.limit:
            self._by_id.popitem(last=False)
        self._by_id[cookie] = login
        return login

    def find(self, cookie: str | None) -> Login | None:
        """The login a cookie names, if it is still valid (its idle time is renewed)."""
        if not cookie:
            return None
        login = self._by_id.get(cookie) or self._adopt(cookie)
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
        """Sign a cookie's login out (nothing if it names none); a signed cookie is
        remembered until it expires, so that this worker never adopts it again."""
        if not cookie:
            return
        known = self._by_id.pop(cookie, None) is not None
        if self.key is not None and (known or self._signed(cookie)):
            # a worker that never saw the cookie remembers it too (a logout reaches all)
            now = time.time()
            while self._ended and next(iter(self._ended.values())) <= now:
                self._ended.popitem(last=False)  # expired anyway: refused by its date
            while len(self._ended) >= self.limit:
                self._ended.popitem(last=False)
            self._ended[cookie] = now + self.idle_timeout


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
