"""Roles in the tokens file: an ``admin`` user sees and acts on every session."""

from __future__ import annotations

from pathlib import Path

import pytest
from daemon_harness import Daemon, StartDaemon, assert_problem, create

from runtime.daemon._auth import TokensFileError, load_tokens

TOKENS = "token-alice alice\ntoken-bob bob\ntoken-root root admin\ntoken-root2 root admin\n"


@pytest.fixture
def roles_daemon(start_daemon: StartDaemon, tmp_path: Path) -> Daemon:
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS)
    tokens.chmod(0o600)
    return start_daemon("--tokens", str(tokens))


def test_an_admin_reads_steps_lists_and_deletes_every_session(roles_daemon: Daemon) -> None:
    with roles_daemon.client("token-alice") as alice, roles_daemon.client("token-root") as root:
        session_id = create(alice)
        own = create(root)
        detail = root.get(f"/v1/sessions/{session_id}")
        assert detail.status_code == 200
        assert detail.json()["metadata"]["owner"] == "alice"
        assert root.post(f"/v1/sessions/{session_id}/step", json={"input": "a"}).status_code == 200
        executed = root.post("/v1/execute", json={"session_id": session_id, "content": "b"})
        assert executed.status_code == 200
        assert alice.get(f"/v1/sessions/{session_id}").json()["context"]["count"] == 2
        patched = root.patch(f"/v1/sessions/{session_id}", json={"set": {"flag": 1}})
        assert patched.status_code == 200, patched.text
        assert patched.json()["status_message"] == "edited by root: set flag"
        assert alice.get(f"/v1/sessions/{session_id}").json()["context"]["flag"] == 1
        listed = {item["session_id"] for item in root.get("/v1/sessions").json()["items"]}
        assert {session_id, own} <= listed
        assert alice.get(f"/v1/sessions/{own}").status_code == 404
        assert root.delete(f"/v1/sessions/{session_id}").status_code == 204
        assert_problem(alice.get(f"/v1/sessions/{session_id}"), 404, "session-not-found")


def test_an_admin_travels_through_every_sessions_history(roles_daemon: Daemon) -> None:
    with roles_daemon.client("token-alice") as alice, roles_daemon.client("token-root") as root:
        session_id = create(alice)
        assert alice.post(f"/v1/sessions/{session_id}/step", json={"input": "a"}).status_code == 200
        revisions = root.get(f"/v1/sessions/{session_id}/revisions")
        assert revisions.status_code == 200
        assert revisions.json()["items"][0]["revision"] == 1
        assert root.get(f"/v1/sessions/{session_id}/messages").status_code == 200
        forked = root.post(f"/v1/sessions/{session_id}/fork", json={"revision": 0})
        assert forked.status_code == 201
        fork_id = forked.json()["session_id"]
        assert alice.get(f"/v1/sessions/{fork_id}").json()["metadata"]["owner"] == "alice"
        rolled = root.post(f"/v1/sessions/{session_id}/rollback", json={"revision": 0})
        assert rolled.status_code == 200
        assert rolled.json()["revision"] == 2
        with roles_daemon.client("token-bob") as bob:
            assert_problem(
                bob.get(f"/v1/sessions/{session_id}/revisions"), 404, "session-not-found"
            )


def test_a_user_without_the_role_still_sees_only_their_own(roles_daemon: Daemon) -> None:
    with roles_daemon.client("token-alice") as alice, roles_daemon.client("token-bob") as bob:
        session_id = create(alice)
        assert_problem(bob.get(f"/v1/sessions/{session_id}"), 404, "session-not-found")
        assert_problem(
            bob.post(f"/v1/sessions/{session_id}/step", json={"input": "b"}),
            404,
            "session-not-found",
        )
        assert_problem(bob.delete(f"/v1/sessions/{session_id}"), 404, "session-not-found")
        assert_problem(
            bob.patch(f"/v1/sessions/{session_id}", json={"set": {"x": 1}}),
            404,
            "session-not-found",
        )
        assert bob.get("/v1/sessions").json()["items"] == []


def test_the_tokens_file_gives_roles_per_user(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(TOKENS)
    path.chmod(0o600)
    tokens = load_tokens(path)
    assert tokens.admins == frozenset({"root"})
    assert sorted(tokens.users.values()) == ["alice", "bob", "root", "root"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("t1 alice admin\nt2 alice\n", ":2: user 'alice' is admin on line 1"),
        ("t1 alice\nt2 alice admin\n", ":2: user 'alice' is not admin on line 1"),
        ("t1 alice root\n", ":1: expected 'token user' or 'token user admin'"),
        ("t1 alice admin extra\n", ":1: expected 'token user' or 'token user admin'"),
    ],
)
def test_a_tokens_file_with_unclear_roles_is_refused(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = tmp_path / "tokens"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(TokensFileError, match=fragment):
        load_tokens(path)
