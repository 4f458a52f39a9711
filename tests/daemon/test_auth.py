"""Bearer tokens: /v1 needs one, probes do not, and a session is 404 to everyone but its owner."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from daemon_harness import Daemon, StartDaemon, assert_problem, create, write_tokens

TOKENS = {"token-alice": "alice", "token-bob": "bob"}


@pytest.fixture
def tokens_daemon(start_daemon: StartDaemon, tmp_path: Path) -> Daemon:
    tokens = write_tokens(tmp_path / "tokens", TOKENS)
    return start_daemon("--tokens", str(tokens))


def test_v1_routes_without_a_valid_token_are_401(tokens_daemon: Daemon) -> None:
    with tokens_daemon.client() as anonymous, tokens_daemon.client("wrong") as wrong:
        for client in (anonymous, wrong):
            for response in (
                client.get("/v1/graphs"),
                client.post("/v1/sessions", json={"graph": "echo"}),
                client.get("/v1/sessions"),
            ):
                assert_problem(response, 401, "unauthorized")
                assert response.headers["www-authenticate"].startswith("Bearer")
    basic = httpx.get(tokens_daemon.url + "/v1/graphs", headers={"authorization": "Basic eDp5"})
    assert_problem(basic, 401, "unauthorized")


def test_probes_and_metrics_need_no_token(tokens_daemon: Daemon) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(tokens_daemon.url + path).status_code == 200, path


def test_other_users_sessions_are_404_and_not_listed(tokens_daemon: Daemon) -> None:
    with tokens_daemon.client("token-alice") as alice, tokens_daemon.client("token-bob") as bob:
        session_id = create(alice)
        assert alice.post(f"/v1/sessions/{session_id}/step", json={"input": "a"}).status_code == 200
        assert alice.get(f"/v1/sessions/{session_id}").json()["metadata"]["owner"] == "alice"

        assert_problem(bob.get(f"/v1/sessions/{session_id}"), 404, "session-not-found")
        assert_problem(
            bob.post(f"/v1/sessions/{session_id}/step", json={"input": "b"}),
            404,
            "session-not-found",
        )
        assert_problem(
            bob.post("/v1/execute", json={"session_id": session_id, "content": "b"}),
            404,
            "session-not-found",
        )
        assert_problem(bob.delete(f"/v1/sessions/{session_id}"), 404, "session-not-found")
        assert bob.get("/v1/sessions").json()["items"] == []

        listed = [i["session_id"] for i in alice.get("/v1/sessions").json()["items"]]
        assert listed == [session_id]
        after = alice.get(f"/v1/sessions/{session_id}").json()
        assert after["context"]["count"] == 1  # bob's step never ran
        assert alice.delete(f"/v1/sessions/{session_id}").status_code == 204


def test_user_is_in_the_access_log(tokens_daemon: Daemon) -> None:
    with tokens_daemon.client("token-bob") as bob:
        bob.get("/v1/graphs", headers={"x-request-id": "who-is-this"})
    entries = [json.loads(x) for x in tokens_daemon.wait_for_log("who-is-this")]
    assert entries[-1]["user"] == "bob"


def test_tokens_file_readable_by_others_is_warned_about(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    tokens = write_tokens(tmp_path / "open-tokens", TOKENS, mode=0o644)
    daemon = start_daemon("--tokens", str(tokens))
    warnings = daemon.wait_for_log("tokens_file_mode_too_open")
    assert warnings, daemon.log_tail()
    assert '"0o644"' in warnings[0]


def test_without_tokens_every_request_is_the_local_user(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    with daemon.client() as client:
        session_id = create(client)
        assert client.get(f"/v1/sessions/{session_id}").json()["metadata"]["owner"] == "local"
