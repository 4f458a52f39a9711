"""Items 6 and 7: browser attacks on the tokenless mode; the per-user step rate."""

from __future__ import annotations

import httpx
from attack import assert_healthy
from daemon_harness import Daemon
from testkit import assert_problem, create

APP = "http://app.example"


def test_a_text_plain_post_is_refused_with_415(daemon: Daemon) -> None:
    with daemon.client() as client:
        response = client.post(
            "/v1/sessions", content=b'{"graph": "echo"}', headers={"content-type": "text/plain"}
        )
        assert_problem(response, 415, "unsupported-media-type")
        form = client.post("/v1/sessions", data={"graph": "echo"})
        assert_problem(form, 415, "unsupported-media-type")
        assert client.post("/v1/sessions", json={"graph": "echo"}).status_code == 201


def test_a_rebound_host_name_is_refused(daemon: Daemon) -> None:
    with daemon.client() as client:
        response = client.get("/v1/graphs", headers={"host": f"evil.example:{daemon.port}"})
        assert_problem(response, 403, "forbidden-host")
        assert client.get("/v1/graphs", headers={"host": f"localhost:{daemon.port}"}).is_success


def test_a_cross_origin_request_is_refused_unless_allowed(start_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = start_daemon("--cors-origin", APP)
    with daemon.client() as client:
        evil = client.post(
            "/v1/sessions", json={"graph": "echo"}, headers={"origin": "http://evil.example"}
        )
        assert_problem(evil, 403, "forbidden-origin")
        allowed = client.post("/v1/sessions", json={"graph": "echo"}, headers={"origin": APP})
        assert allowed.status_code == 201
        assert allowed.headers["access-control-allow-origin"] == APP
        preflight = client.options(
            "/v1/sessions",
            headers={"origin": APP, "access-control-request-method": "POST"},
        )
        assert preflight.status_code == 204
        assert "POST" in preflight.headers["access-control-allow-methods"]
        same = client.get("/v1/graphs", headers={"origin": daemon.url})
        assert same.status_code == 200
    assert_healthy(daemon)


def test_steps_over_the_user_rate_get_429_with_retry_after(start_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = start_daemon("--user-step-rate", "5")
    with daemon.client() as client:
        session_id = create(client)
        before = client.get(f"/v1/sessions/{session_id}").json()["revision"]
        answers = [
            client.post(f"/v1/sessions/{session_id}/step", json={"input": i}) for i in range(20)
        ]
        limited = [r for r in answers if r.status_code == 429]
        assert limited, [r.status_code for r in answers]
        assert_problem(limited[0], 429, "rate-limited")
        assert int(limited[0].headers["retry-after"]) >= 1
        after = client.get(f"/v1/sessions/{session_id}").json()["revision"]
        assert after - before == sum(r.status_code == 200 for r in answers)
        assert 'type="rate-limited"' in client.get("/metrics").text
    with httpx.Client(base_url=daemon.url, timeout=5.0) as other:
        assert other.get("/healthz").status_code == 200
