"""The dashboard's login, cookie, CSRF and header rules, over plain HTTP (no browser)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from ui_harness import ADMIN_TOKEN, USER_TOKEN, UiDaemon

from runtime.daemon.ui._logins import FailedLogins, Logins
from runtime.daemon.ui._render import STATIC_DIR


@contextmanager
def _logged_in(daemon: UiDaemon, token: str) -> Iterator[tuple[httpx.Client, str]]:
    """A client holding a login cookie, and that login's CSRF token."""
    with httpx.Client(base_url=daemon.url, timeout=30.0) as client:
        answer = client.post("/ui/login", data={"token": token})
        assert answer.status_code == 303, answer.text
        page = client.get("/ui")
        match = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert match is not None
        yield client, match.group(1)


def _session(daemon: UiDaemon) -> str:
    with daemon.api(USER_TOKEN) as api:
        created = api.post("/v1/sessions", json={"graph": "echo"})
        session_id = str(created.json()["session_id"])
        assert api.post(f"/v1/sessions/{session_id}/step", json={"input": "x"}).status_code == 200
    return session_id


def test_the_login_cookie_is_http_only_strict_and_never_the_token(ui_daemon: UiDaemon) -> None:
    with httpx.Client(base_url=ui_daemon.url) as client:
        answer = client.post("/ui/login", data={"token": USER_TOKEN, "next": "//evil.example/"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui"  # never to another site
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain HTTP here; Secure under TLS
    assert USER_TOKEN not in cookie
    assert USER_TOKEN not in answer.headers["location"]


def test_pages_carry_the_security_headers(ui_daemon: UiDaemon) -> None:
    with _logged_in(ui_daemon, USER_TOKEN) as (client, _):
        page = client.get("/ui/actors")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"


def test_a_foreign_origin_cannot_post_a_login(ui_daemon: UiDaemon) -> None:
    with httpx.Client(base_url=ui_daemon.url) as client:
        answer = client.post(
            "/ui/login", data={"token": ADMIN_TOKEN}, headers={"origin": "http://evil.example"}
        )
    assert answer.status_code == 403
    assert "set-cookie" not in answer.headers


def test_an_admin_post_needs_the_login_csrf_token(ui_daemon: UiDaemon) -> None:
    session_id = _session(ui_daemon)
    with _logged_in(ui_daemon, ADMIN_TOKEN) as (client, csrf):
        forged = client.post(f"/ui/sessions/{session_id}/kill", data={"csrf": "guessed"})
        assert forged.status_code == 403
        assert "stale" in forged.text
        missing = client.post(f"/ui/sessions/{session_id}/kill", data={})
        assert missing.status_code == 403
        with ui_daemon.api(ADMIN_TOKEN) as api:
            assert api.get(f"/v1/sessions/{session_id}").status_code == 200
        done = client.post(f"/ui/sessions/{session_id}/kill", data={"csrf": csrf})
        assert done.status_code == 303
        assert "Killed." in client.get(done.headers["location"]).text
    with httpx.Client(base_url=ui_daemon.url) as anonymous:
        answer = anonymous.post(f"/ui/sessions/{session_id}/kill", data={"csrf": csrf})
    assert answer.status_code == 403  # a CSRF token without its login cookie is nothing


def test_a_non_admin_is_refused_every_admin_action(ui_daemon: UiDaemon) -> None:
    session_id = _session(ui_daemon)
    with _logged_in(ui_daemon, USER_TOKEN) as (client, csrf):
        for action in ("passivate", "snapshot", "kill", "delete", "fork", "rollback"):
            answer = client.post(
                f"/ui/sessions/{session_id}/{action}", data={"csrf": csrf, "revision": "0"}
            )
            assert answer.status_code == 403, action
            confirm = client.get(f"/ui/sessions/{session_id}/confirm/{action}?revision=0")
            assert confirm.status_code == 403, action
    with ui_daemon.api(USER_TOKEN) as api:
        assert api.get(f"/v1/sessions/{session_id}").json()["revision"] == 1


def test_logins_expire_and_are_bounded() -> None:
    logins = Logins(idle_timeout=0.0, limit=2)
    cookie, login = logins.start("ann", admin=False)
    assert logins.find(cookie) is None  # idle longer than 0 s
    kept = Logins(limit=2)
    first, _ = kept.start("ann", admin=False)
    second, _ = kept.start("bob", admin=False)
    third, _ = kept.start("cy", admin=True)
    assert kept.find(first) is None
    assert kept.find(second) is not None
    assert kept.find(third) is not None
    assert login.csrf_ok(login.csrf)
    assert not login.csrf_ok("x")
    assert not login.csrf_ok(None)


def test_signed_logins_hold_on_every_worker_until_a_logout_reaches_it() -> None:
    """With the workers' shared key a cookie one worker signed is adopted by another
    (same user, same CSRF token); once a logout reaches a worker, that worker refuses
    the cookie, even if it had never seen it; a forged or unsigned cookie is refused."""
    key = b"k" * 32
    first, second, third = Logins(key=key), Logins(key=key), Logins(key=key)
    cookie, login = first.start("ann", admin=True)
    adopted = second.find(cookie)
    assert adopted is not None
    assert (adopted.user, adopted.admin, adopted.csrf) == ("ann", True, login.csrf)
    third.end(cookie)  # a logout reaching a worker that never saw the cookie
    assert third.find(cookie) is None
    second.end(cookie)
    assert second.find(cookie) is None
    payload, _, mac = cookie.rpartition(".")
    assert Logins(key=b"x" * 32).find(cookie) is None
    assert second.find(payload.replace(".1.", ".0.", 1) + "." + mac) is None
    assert Logins().find(cookie) is None


def test_failed_logins_block_an_address_for_a_while() -> None:
    failed = FailedLogins(limit=3, period=60.0)
    for _ in range(3):
        assert not failed.blocked("10.0.0.1")
        failed.failed("10.0.0.1")
    assert failed.blocked("10.0.0.1")
    assert not failed.blocked("10.0.0.2")
    assert not FailedLogins(limit=3, period=0.0).blocked("10.0.0.1")


@pytest.mark.parametrize("line", (STATIC_DIR / "SHA256SUMS").read_text().splitlines())
def test_vendored_scripts_match_their_checksums(line: str) -> None:
    digest, name = line.split()
    assert hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest() == digest
    assert (STATIC_DIR / "VERSIONS").read_text().count(Path(name).stem.split(".")[0]) >= 1


def test_admin_actions_snapshot_passivate_fork_and_delete(ui_daemon: UiDaemon) -> None:
    session_id = _session(ui_daemon)
    with _logged_in(ui_daemon, ADMIN_TOKEN) as (client, csrf):

        def act(action: str, **form: str) -> httpx.Response:
            answer = client.post(f"/ui/sessions/{session_id}/{action}", data={"csrf": csrf, **form})
            assert answer.status_code == 303, answer.text
            return client.get(answer.headers["location"])

        assert "Snapshot written:" in act("snapshot").text
        assert "Passivated." in act("passivate").text
        assert "passivated" in client.get(f"/ui/sessions/{session_id}").text
        forked = act("fork", revision="1")
        assert f"Forked from {session_id} at revision 1." in forked.text
        assert forked.url.path != f"/ui/sessions/{session_id}"
        assert "Deleted session" in act("delete").text
    with ui_daemon.api(USER_TOKEN) as api:
        assert api.get(f"/v1/sessions/{session_id}").status_code == 404


def test_an_unknown_ui_path_is_an_html_page_and_an_unknown_api_path_is_problem_json(
    ui_daemon: UiDaemon,
) -> None:
    with _logged_in(ui_daemon, USER_TOKEN) as (client, _):
        page = client.get("/ui/no-such-page")
        api = client.get("/v1/no-such-route", headers={"authorization": f"Bearer {USER_TOKEN}"})
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "Not found" in page.text
    assert page.headers["x-frame-options"] == "DENY"  # the dashboard's own headers
    assert api.status_code == 404
    assert api.headers["content-type"] == "application/problem+json"
