"""The time-travel routes of a real actorflowd: revisions, a past revision, the whole
chat, fork and rollback, with ownership and problem+json."""

from __future__ import annotations

from pathlib import Path

import httpx
from daemon_harness import StartDaemon, assert_problem, create, write_tokens


def talk(api: httpx.Client, session_id: str, times: int) -> None:
    for i in range(times):
        response = api.post(f"/v1/sessions/{session_id}/step", json={"input": f"m{i}"})
        assert response.status_code == 200


def test_revisions_page_newest_first_with_input_and_response(api: httpx.Client) -> None:
    sid = create(api)
    talk(api, sid, 3)

    first = api.get(f"/v1/sessions/{sid}/revisions", params={"limit": 2}).json()
    rest = api.get(
        f"/v1/sessions/{sid}/revisions", params={"limit": 2, "before": first["next_before"]}
    ).json()

    assert [(r["revision"], r["input"], r["response"]) for r in first["items"]] == [
        (3, "m2", "echo: m2"),
        (2, "m1", "echo: m1"),
    ]
    assert [r["revision"] for r in rest["items"]] == [1, 0]
    assert rest["items"][1]["kind"] == "base"


def test_a_past_revision_reads_as_it_was_and_an_expired_one_is_404_with_the_range(
    api: httpx.Client,
) -> None:
    sid = create(api)
    talk(api, sid, 3)

    past = api.get(f"/v1/sessions/{sid}", params={"revision": 1}).json()
    missing = api.get(f"/v1/sessions/{sid}", params={"revision": 7})

    assert (past["revision"], past["context"]["count"]) == (1, 1)
    body = assert_problem(missing, 404, "revision-not-found")
    assert "0 to 3" in body["detail"]
    assert api.get(f"/v1/sessions/{sid}", params={"revision": -1}).status_code in (400, 422)


def test_messages_page_through_the_whole_conversation(api: httpx.Client) -> None:
    sid = create(api)
    talk(api, sid, 3)

    newest = api.get(f"/v1/sessions/{sid}/messages", params={"limit": 4}).json()
    older = api.get(
        f"/v1/sessions/{sid}/messages", params={"limit": 4, "before": newest["next_before"]}
    ).json()

    assert [m["content"] for m in older["items"] + newest["items"]] == [
        "m0", "echo: m0", "m1", "echo: m1", "m2", "echo: m2"
    ]  # fmt: skip
    assert [m["seq"] for m in newest["items"]] == [2, 3, 4, 5]
    assert older["next_before"] is None


def test_fork_and_rollback(api: httpx.Client) -> None:
    sid = create(api)
    talk(api, sid, 3)

    fork = api.post(f"/v1/sessions/{sid}/fork", json={"revision": 1})
    back = api.post(f"/v1/sessions/{sid}/rollback", json={"revision": 2})

    assert fork.status_code == 201
    fork_id = fork.json()["session_id"]
    assert fork_id != sid
    assert api.get(f"/v1/sessions/{fork_id}").json()["context"]["count"] == 1
    assert back.status_code == 200
    assert (back.json()["revision"], back.json()["context"]["count"]) == (4, 2)
    step = api.post(f"/v1/sessions/{sid}/step", json={"input": "x"}).json()
    assert (step["revision"], api.get(f"/v1/sessions/{sid}").json()["context"]["count"]) == (5, 3)
    assert api.post(f"/v1/sessions/{sid}/rollback", json={}).status_code in (400, 422)
    assert_problem(
        api.post(f"/v1/sessions/{sid}/rollback", json={"revision": 99}), 404, "revision-not-found"
    )


def test_another_owner_gets_404_on_every_history_route(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    tokens = write_tokens(tmp_path / "tokens", {"token-alice": "alice", "token-bob": "bob"})
    daemon = start_daemon("--tokens", str(tokens))
    with daemon.client("token-alice") as alice, daemon.client("token-bob") as bob:
        sid = create(alice)
        talk(alice, sid, 1)

        for response in (
            bob.get(f"/v1/sessions/{sid}/revisions"),
            bob.get(f"/v1/sessions/{sid}/messages"),
            bob.get(f"/v1/sessions/{sid}", params={"revision": 0}),
            bob.post(f"/v1/sessions/{sid}/fork", json={}),
            bob.post(f"/v1/sessions/{sid}/rollback", json={"revision": 0}),
        ):
            assert_problem(response, 404, "session-not-found")
        assert alice.get(f"/v1/sessions/{sid}").json()["revision"] == 1
        assert [s["session_id"] for s in alice.get("/v1/sessions").json()["items"]] == [sid]
