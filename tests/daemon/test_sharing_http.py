"""Sharing over HTTP: every session route, as the owner, a read member, a write member,
a stranger and an admin.

A member with ``read`` access reads the session, its revisions and messages; with
``write`` it steps and edits it too; only the owner (or an admin) shares, forks
or deletes it. Anyone else gets 404, as for a session that is not theirs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from daemon_harness import Daemon, StartDaemon, assert_problem, create

TOKENS = (
    "token-alice alice\ntoken-bob bob\ntoken-carol carol\ntoken-dave dave\ntoken-root root admin\n"
)
ROLES = {"owner": "alice", "reader": "bob", "writer": "carol", "stranger": "dave", "admin": "root"}
ALL = {"owner", "reader", "writer", "admin"}
WRITERS = {"owner", "writer", "admin"}
OWNERS = {"owner", "admin"}

# method, path under the session, body, the roles allowed, the status they get
ROUTES: list[tuple[str, str, dict[str, Any] | None, set[str], int]] = [
    ("GET", "", None, ALL, 200),
    ("GET", "?revision=0", None, ALL, 200),
    ("GET", "/revisions", None, ALL, 200),
    ("GET", "/messages", None, ALL, 200),
    ("POST", "/step", {"input": "hi"}, WRITERS, 200),
    ("EXECUTE", "", None, WRITERS, 200),
    ("PATCH", "", {"set": {"flag": 1}}, WRITERS, 200),
    ("POST", "/rollback", {"revision": 1}, WRITERS, 200),
    ("POST", "/fork", {}, OWNERS, 201),
    ("POST", "/members", {"user": "erin", "access": "read"}, OWNERS, 200),
    ("DELETE", "/members/erin", None, OWNERS, 200),
]


@pytest.fixture
def daemon(start_daemon: StartDaemon, tmp_path: Path) -> Daemon:
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS)
    tokens.chmod(0o600)
    return start_daemon("--tokens", str(tokens))


def _call(
    client: httpx.Client, method: str, session_id: str, path: str, body: dict[str, Any] | None
) -> httpx.Response:
    if method == "EXECUTE":
        return client.post("/v1/execute", json={"session_id": session_id, "content": "x"})
    return client.request(method, f"/v1/sessions/{session_id}{path}", json=body)


def test_every_session_route_answers_each_role_as_its_access_says(daemon: Daemon) -> None:
    """(One daemon for every case: starting one costs seconds.)"""
    clients = {role: daemon.client(f"token-{user}") for role, user in ROLES.items()}
    try:
        owner = clients["owner"]
        session_id = create(owner)
        _bad_member_requests_are_422_and_write_nothing(owner, session_id)
        assert owner.post(f"/v1/sessions/{session_id}/step", json={"input": "a"}).is_success
        shared = owner.post(
            f"/v1/sessions/{session_id}/members", json={"user": "bob", "access": "read"}
        )
        assert shared.status_code == 200, shared.text
        assert shared.json() == {"session_id": session_id, "members": {"bob": "read"}}
        shared = owner.post(
            f"/v1/sessions/{session_id}/members", json={"user": "carol", "access": "write"}
        )
        assert shared.json()["members"] == {"bob": "read", "carol": "write"}
        detail = clients["reader"].get(f"/v1/sessions/{session_id}").json()
        assert detail["metadata"]["members"] == {"bob": "read", "carol": "write"}
        assert detail["metadata"]["owner"] == "alice"
        for method, path, body, allowed, status in ROUTES:
            for role, client in clients.items():
                answer = _call(client, method, session_id, path, body)
                where = f"{role} {method} {path}"
                if role in allowed:
                    assert answer.status_code == status, (where, answer.text)
                else:
                    assert_problem(answer, 404, "session-not-found")
        # a fork belongs to the owner and is shared with nobody
        forked = owner.post(f"/v1/sessions/{session_id}/fork", json={}).json()["session_id"]
        assert owner.get(f"/v1/sessions/{forked}").json()["metadata"]["members"] == {}
        assert_problem(clients["reader"].get(f"/v1/sessions/{forked}"), 404, "session-not-found")
        # the listing is of the caller's own sessions: shared ones are not in it
        listed = clients["reader"].get("/v1/sessions").json()["items"]
        assert session_id not in {item["session_id"] for item in listed}
        for role in ("reader", "writer", "stranger"):
            deleted = clients[role].delete(f"/v1/sessions/{session_id}")
            assert_problem(deleted, 404, "session-not-found")
        removed = owner.delete(f"/v1/sessions/{session_id}/members/carol")
        assert removed.json()["members"] == {"bob": "read"}
        assert_problem(
            clients["writer"].get(f"/v1/sessions/{session_id}"), 404, "session-not-found"
        )
        assert owner.delete(f"/v1/sessions/{session_id}").status_code == 204
        assert_problem(
            clients["reader"].get(f"/v1/sessions/{session_id}"), 404, "session-not-found"
        )
    finally:
        for client in clients.values():
            client.close()


def _bad_member_requests_are_422_and_write_nothing(owner: httpx.Client, session_id: str) -> None:
    members = f"/v1/sessions/{session_id}/members"
    for body in (
        {"user": "bob", "access": "admin"},
        {"user": "", "access": "read"},
        {"user": "b o b", "access": "read"},
        {"user": "alice", "access": "write"},
        {"user": "bob", "access": "read", "extra": 1},
    ):
        assert_problem(owner.post(members, json=body), 422, "invalid-request")
    assert owner.get(f"/v1/sessions/{session_id}").json()["revision"] == 0
