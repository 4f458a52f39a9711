"""Idempotency-Key on a real actorflowd: replays, 422 on reuse, waiting retries,
restarts, owners and /v1/execute."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
from daemon_harness import StartDaemon, assert_problem, create, wait_for, write_tokens


def step(client: httpx.Client, sid: str, body: object, key: str | None) -> httpx.Response:
    headers = {} if key is None else {"Idempotency-Key": key}
    return client.post(f"/v1/sessions/{sid}/step", json=body, headers=headers)


def count(client: httpx.Client, sid: str) -> int:
    return int(client.get(f"/v1/sessions/{sid}").json()["context"].get("count", 0))


def test_a_retried_key_is_replayed_with_the_same_body_and_a_reuse_is_422(
    api: httpx.Client,
) -> None:
    sid = create(api)
    first = step(api, sid, {"input": "hi"}, "key-1")
    again = step(api, sid, {"input": "hi"}, "key-1")
    reused = step(api, sid, {"input": "other"}, "key-1")
    plain = step(api, sid, {"input": "hi"}, None)

    assert (first.status_code, again.status_code) == (200, 200)
    assert first.headers["idempotent-replayed"] == "false"
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    body = assert_problem(reused, 422, "idempotency-key-reused")
    assert "key-1" in body["detail"]
    assert body["session_id"] == sid
    assert "idempotent-replayed" not in plain.headers
    assert count(api, sid) == 2  # key-1 once, the plain step once


def test_a_malformed_key_is_422_invalid_request(api: httpx.Client) -> None:
    sid = create(api)
    response = step(api, sid, {"input": "x"}, "k" * 256)
    assert "255" in assert_problem(response, 422, "invalid-request")["detail"]
    assert count(api, sid) == 0


def test_a_retry_sent_while_the_first_attempt_runs_waits_and_gets_its_result(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    daemon = start_daemon()
    gate = tmp_path / "gate"
    started = tmp_path / "started"
    started.mkdir()
    responses: list[httpx.Response] = []
    lock = threading.Lock()
    with daemon.client() as client:
        sid = create(client, "gated", gate=str(gate), started_dir=str(started))

        def send() -> None:
            with daemon.client() as own:
                response = step(own, sid, {"input": "slow"}, "held-key")
            with lock:
                responses.append(response)

        threads = [threading.Thread(target=send) for _ in range(4)]
        threads[0].start()
        wait_for(lambda: (started / sid).exists(), what="the first attempt to start")
        for thread in threads[1:]:
            thread.start()
        wait_for(
            lambda: "actorflow_steps_in_flight 4.0" in client.get("/metrics").text,
            what="the retries to be in flight",
        )
        gate.touch()
        for thread in threads:
            thread.join(30)
        assert count(client, sid) == 1
    assert [r.status_code for r in responses] == [200] * 4
    assert len({r.content for r in responses}) == 1
    assert sorted(r.headers["idempotent-replayed"] for r in responses) == [
        "false",
        "true",
        "true",
        "true",
    ]


def test_keys_survive_a_daemon_restart(start_daemon: StartDaemon, tmp_path: Path) -> None:
    data = tmp_path / "kept"
    daemon = start_daemon(data_dir=data)
    with daemon.client() as client:
        sid = create(client)
        first = step(client, sid, {"input": "before"}, "restart-key")
    daemon.stop()
    daemon = start_daemon(data_dir=data)
    with daemon.client() as client:
        again = step(client, sid, {"input": "before"}, "restart-key")
        assert count(client, sid) == 1
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content


def test_keys_are_per_session_and_never_reach_another_owner(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    tokens = write_tokens(tmp_path / "tokens", {"token-alice": "alice", "token-bob": "bob"})
    daemon = start_daemon("--tokens", str(tokens))
    with daemon.client("token-alice") as alice, daemon.client("token-bob") as bob:
        mine = create(alice)
        theirs = create(bob)
        assert step(alice, mine, {"input": "a"}, "shared").headers["idempotent-replayed"] == "false"
        assert_problem(step(bob, mine, {"input": "a"}, "shared"), 404, "session-not-found")
        assert step(bob, theirs, {"input": "a"}, "shared").headers["idempotent-replayed"] == "false"
        assert count(alice, mine) == 1
        assert count(bob, theirs) == 1


def test_execute_takes_a_key_in_its_body_once_it_names_a_session(api: httpx.Client) -> None:
    sid = create(api)
    body = {"content": "hello", "session_id": sid, "idempotency_key": "exec-1"}
    first = api.post("/v1/execute", json=body)
    again = api.post("/v1/execute", json=body)
    without_session = api.post("/v1/execute", json={"content": "x", "idempotency_key": "exec-2"})

    assert first.headers["idempotent-replayed"] == "false"
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert "session_id" in assert_problem(without_session, 422, "invalid-request")["detail"]
    assert count(api, sid) == 1
