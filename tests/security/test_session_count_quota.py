"""Item 7's quota of sessions per user (``--max-sessions-per-user``)."""

from __future__ import annotations

from pathlib import Path

from attack import assert_healthy
from daemon_harness import Daemon, write_tokens
from testkit import assert_problem, create


def test_creating_past_max_sessions_per_user_is_403_for_that_user_only(  # type: ignore[no-untyped-def]
    start_daemon, tmp_path: Path
) -> None:
    tokens = write_tokens(tmp_path / "tokens", {"tok-alice": "alice", "tok-bob": "bob"})
    daemon: Daemon = start_daemon("--max-sessions-per-user", "3", "--tokens", str(tokens))
    with daemon.client("tok-alice") as alice, daemon.client("tok-bob") as bob:
        mine = [create(alice) for _ in range(3)]
        refused = [
            alice.post("/v1/sessions", json={"graph": "echo"}),
            alice.post("/v1/execute", json={"content": "hi"}),
            alice.post(f"/v1/sessions/{mine[0]}/fork", json={}),
        ]
        for response in refused:
            body = assert_problem(response, 403, "session-quota-exceeded")
            assert "max_sessions_per_user 3" in body["detail"]
        assert len(alice.get("/v1/sessions").json()["items"]) == 3
        step = alice.post(f"/v1/sessions/{mine[0]}/step", json={"input": "still mine"})
        assert step.status_code == 200, step.text
        assert alice.delete(f"/v1/sessions/{mine[0]}").status_code == 204
        create(alice)  # a deleted session frees its place
        create(bob)  # bob is not alice's quota
        assert 'type="session-quota-exceeded"' in alice.get("/metrics").text
    assert_healthy(daemon, "tok-bob")
