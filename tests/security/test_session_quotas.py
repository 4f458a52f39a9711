"""Item 7's quotas: bytes per session (``--max-session-bytes``)."""

from __future__ import annotations

from pathlib import Path

from attack import assert_healthy
from daemon_harness import Daemon, write_tokens
from testkit import assert_problem, create

CHUNK = "x" * (20 * 1024)


def test_a_step_past_max_session_bytes_is_413_and_changes_nothing(  # type: ignore[no-untyped-def]
    start_daemon, tmp_path: Path
) -> None:
    tokens = write_tokens(tmp_path / "tokens", {"tok-alice": "alice", "tok-bob": "bob"})
    daemon: Daemon = start_daemon("--max-session-bytes", "65536", "--tokens", str(tokens))
    with daemon.client("tok-alice") as alice, daemon.client("tok-bob") as bob:
        session_id = create(alice)
        theirs = create(bob)
        steps = [
            alice.post(f"/v1/sessions/{session_id}/step", json={"input": CHUNK})
            for _ in range(6)  # input and echo: each step adds 2 * CHUNK
        ]
        accepted = sum(r.status_code == 200 for r in steps)
        assert 1 <= accepted < 4, [r.status_code for r in steps]
        assert all(r.status_code == 200 for r in steps[:accepted])
        body = assert_problem(steps[accepted], 413, "session-too-large")
        assert "max_session_bytes" in body["detail"]
        assert all(r.status_code == 413 for r in steps[accepted:])
        after = alice.get(f"/v1/sessions/{session_id}").json()
        assert after["revision"] == accepted
        assert len(after["chat_history"]) == 2 * accepted  # the input and its echo
        history = alice.get(f"/v1/sessions/{session_id}/revisions").json()
        assert max(r["revision"] for r in history["items"]) == accepted
        small = alice.post(f"/v1/sessions/{session_id}/step", json={"input": "small"})
        assert small.status_code == 200, small.text
        # bob is not alice's quota: his session takes the same steps
        for _ in range(accepted):
            step = bob.post(f"/v1/sessions/{theirs}/step", json={"input": CHUNK})
            assert step.status_code == 200, step.text
        assert 'type="session-too-large"' in alice.get("/metrics").text
    assert_healthy(daemon, "tok-bob")
