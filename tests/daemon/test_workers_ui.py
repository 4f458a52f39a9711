"""The dashboard behind ``actorflowd --workers 2``: the overview and the live-actors table
cover every worker, a session's pages work on whichever worker owns it, one login is
valid on every worker, and a logout ends it everywhere."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import httpx
import pytest
from daemon_harness import StartDaemon, write_tokens

from runtime.daemon._sharding import shard_of

pytestmark = pytest.mark.timeout(90)

WORKERS = 2
ADMIN = "admin-token-0123456789"
USER = "user-token-0123456789"


def _csrf(page: httpx.Response) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match is not None, page.text[:500]
    return match.group(1)


def test_the_dashboard_covers_every_worker_and_a_logout_ends_the_login_everywhere(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    tokens = write_tokens(tmp_path / "tokens", {ADMIN: "alice admin", USER: "bob"})
    daemon = start_daemon("--workers", str(WORKERS), "--tokens", str(tokens))
    assert (daemon.data_dir / "ui.key").stat().st_mode & 0o777 == 0o600
    with daemon.client(USER) as api:
        sessions = [
            api.post("/v1/sessions", json={"graph": "echo"}).json()["session_id"]
            for _ in range(WORKERS)
        ]
        for session_id in sessions:
            assert api.post(f"/v1/sessions/{session_id}/step", json={"input": "hi"}).is_success
    assert {shard_of(s, WORKERS) for s in sessions} == {0, 1}  # created round robin
    with httpx.Client(base_url=daemon.url, timeout=30.0) as browser:
        assert browser.post("/ui/login", data={"token": ADMIN}).status_code == 303
        overview = browser.get("/ui")
        csrf = _csrf(overview)
        live = re.search(r'id="live">(\d+)<', overview.text)
        assert live is not None
        assert int(live.group(1)) == len(sessions)  # every worker's live actors
        actors = browser.get("/ui/actors").text
        assert all(f'href="/ui/sessions/{session_id}"' in actors for session_id in sessions)
        assert re.search(r"echo\D+" + str(len(sessions)), actors)  # the graph's count, summed
        for session_id in sessions:
            page = browser.get(f"/ui/sessions/{session_id}")
            assert page.status_code == 200, page.text[:300]
            assert session_id in page.text
            assert _csrf(page) == csrf  # one login, the same CSRF token on every worker
            done = browser.post(f"/ui/sessions/{session_id}/passivate", data={"csrf": csrf})
            assert done.status_code == 303, done.text[:300]
            assert "Passivated." in browser.get(done.headers["location"]).text
        cookie = browser.cookies["actorflow_ui"]
        nonce, _, *signed = cookie.split(".")
        forged = ".".join([nonce, base64.urlsafe_b64encode(b"mallory").decode(), *signed])
        with httpx.Client(base_url=daemon.url, cookies={"actorflow_ui": forged}) as mallory:
            assert mallory.get(f"/ui/sessions/{sessions[1]}").status_code == 303  # to the login
        assert browser.post("/ui/logout", data={"csrf": csrf}).status_code == 303
    with httpx.Client(base_url=daemon.url, cookies={"actorflow_ui": cookie}) as replay:
        for session_id in sessions:  # the old cookie, replayed on each worker after logout
            answer = replay.get(f"/ui/sessions/{session_id}")
            assert answer.status_code == 303
            assert answer.headers["location"].startswith("/ui/login")
