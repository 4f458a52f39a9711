"""Server-Sent Events against a real daemon: streamed steps and ``/events`` tails."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from daemon_harness import Daemon, wait_for, write_tokens

SSE = {"accept": "text/event-stream"}
ALICE = {"authorization": "Bearer alice-token"}
BOB = {"authorization": "Bearer bob-token"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon with two users and a short heartbeat, for the module."""
    workdir = tmp_path_factory.mktemp("sse")
    tokens = write_tokens(workdir / "tokens", {"alice-token": "alice", "bob-token": "bob"})
    started = Daemon(
        workdir,
        ["--tokens", str(tokens), "--sse-heartbeat", "0.3", "--max-tails-per-session", "2"],
        None,
    ).start()
    try:
        yield started
    finally:
        assert started.stop() == 0, started.log_tail()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[httpx.Client]:
    with daemon.client("alice-token") as c:
        yield c


def frames(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """SSE frames from response lines: ``{"id", "event", "data"}``, or ``{"comment"}``."""
    frame: dict[str, Any] = {}
    for line in lines:
        if not line:
            if frame:
                yield frame
            frame = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(": ")
            frame[name] = json.loads(value) if name == "data" else value


def until_committed(lines: Iterator[str]) -> list[dict[str, Any]]:
    """The frames up to and including ``committed`` (or ``error``), comments left out."""
    got = []
    for frame in frames(lines):
        if "comment" in frame:
            continue
        got.append(frame)
        if frame["event"] in ("committed", "error"):
            return got
    raise AssertionError(f"the stream ended without committed: {got}")


def new_session(client: httpx.Client, graph: str, **context: Any) -> str:
    created = client.post("/v1/sessions", json={"graph": graph, "context": context})
    assert created.status_code == 201, created.text
    return str(created.json()["session_id"])


def test_a_streamed_step_sends_numbered_events_then_committed(client: httpx.Client) -> None:
    sid = new_session(client, "echo")
    with client.stream("POST", f"/v1/sessions/{sid}/step", json={"input": "hi"}, headers=SSE) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        got = until_committed(r.iter_lines())
    assert [f["event"] for f in got] == [
        "step_started",
        "task_started",
        "task_finished",
        "committed",
    ]
    assert [int(f["id"]) for f in got] == [1, 2, 3, 4]
    assert got[0]["data"] == {"event": "step_started", "session_id": sid, "revision": 0}
    assert got[-1]["data"]["response"] == "echo: hi"
    assert got[-1]["data"]["revision"] == 1
    assert client.get(f"/v1/sessions/{sid}").json()["revision"] == 1


def test_errors_before_the_stream_are_problem_json_and_after_it_an_error_event(
    client: httpx.Client,
) -> None:
    missing = client.post("/v1/sessions/nope/step", json={}, headers=SSE)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["type"].endswith(":session-not-found")
    bad = client.post("/v1/sessions/nope/step", json={"mode": "sideways"}, headers=SSE)
    assert bad.status_code == 422
    sid = new_session(client, "boom")
    with client.stream("POST", f"/v1/sessions/{sid}/step", json={}, headers=SSE) as r:
        assert r.status_code == 200
        got = until_committed(r.iter_lines())
    assert [f["event"] for f in got] == ["step_started", "task_started", "error"]
    problem = got[-1]["data"]
    assert problem["type"].endswith(":task-failed")
    assert (problem["status"], problem["session_id"]) == (500, sid)
    assert client.get(f"/v1/sessions/{sid}").json()["revision"] == 0


def test_tokens_reach_the_client_before_the_task_returns(
    client: httpx.Client, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    sid = new_session(client, "teller", gate=str(gate))
    with client.stream("POST", f"/v1/sessions/{sid}/step", json={}, headers=SSE) as r:
        got = []
        for frame in frames(r.iter_lines()):
            if "comment" in frame:
                continue
            got.append(frame)
            if frame["event"] == "token" and frame["data"]["text"] == "first":
                gate.touch()  # the task is still waiting for this
            if frame["event"] == "committed":
                break
    tokens = [f["data"]["text"] for f in got if f["event"] == "token"]
    assert tokens == ["first", " second"]
    assert got[-1]["data"]["response"] == "told: gate opened"


def test_a_client_that_leaves_mid_stream_does_not_cancel_the_step(
    client: httpx.Client, daemon: Daemon, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    sid = new_session(client, "teller", gate=str(gate))
    with (
        daemon.client("alice-token") as watcher,
        watcher.stream("GET", f"/v1/sessions/{sid}/events") as tail,
    ):
        assert tail.status_code == 200
        lines = tail.iter_lines()
        with client.stream("POST", f"/v1/sessions/{sid}/step", json={}, headers=SSE) as r:
            for frame in frames(r.iter_lines()):
                if frame.get("event") == "token":
                    break  # and leave: the response is closed mid-stream
        gate.touch()
        tailed = until_committed(lines)
    assert tailed[-1]["event"] == "committed"
    session = client.get(f"/v1/sessions/{sid}").json()
    assert (session["revision"], session["context"]["count"]) == (1, 1)
    assert session["chat_history"] == []
    history = client.get(f"/v1/sessions/{sid}/revisions").json()
    assert history["items"][0]["response"] == "told: gate opened"
    wait_for(lambda: disconnects(client) >= 1, what="the disconnect counted")


def disconnects(client: httpx.Client) -> float:
    """``actorflow_stream_disconnects_total`` as the daemon reports it now."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("actorflow_stream_disconnects_total "):
            return float(line.split()[1])
    raise AssertionError("no actorflow_stream_disconnects_total in /metrics")


def test_two_tails_see_identical_sequences_and_heartbeats(
    client: httpx.Client, daemon: Daemon
) -> None:
    sid = new_session(client, "echo")
    with (
        daemon.client("alice-token") as a,
        daemon.client("alice-token") as b,
        a.stream("GET", f"/v1/sessions/{sid}/events") as ta,
        b.stream("GET", f"/v1/sessions/{sid}/events") as tb,
    ):
        lines_a, lines_b = ta.iter_lines(), tb.iter_lines()
        assert next(frames(lines_a)) == {"comment": "keepalive"}  # nothing yet: a heartbeat
        assert next(frames(lines_b)) == {"comment": "keepalive"}
        for text in ("one", "two"):
            assert client.post(f"/v1/sessions/{sid}/step", json={"input": text}).is_success
        seen_a = until_committed(lines_a) + until_committed(lines_a)
        seen_b = until_committed(lines_b) + until_committed(lines_b)
    assert seen_a == seen_b
    assert [f["data"]["response"] for f in seen_a if f["event"] == "committed"] == [
        "echo: one",
        "echo: two",
    ]
    ids = [int(f["id"]) for f in seen_a]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_only_the_owner_may_tail_a_session(client: httpx.Client, daemon: Daemon) -> None:
    sid = new_session(client, "echo")
    with daemon.client("bob-token") as bob:
        refused = bob.get(f"/v1/sessions/{sid}/events")
        stranger = bob.post(f"/v1/sessions/{sid}/step", json={}, headers=SSE)
    assert refused.status_code == stranger.status_code == 404
    assert refused.json()["type"].endswith(":session-not-found")
    with daemon.client() as anonymous:
        assert anonymous.get(f"/v1/sessions/{sid}/events").status_code == 401


def test_streams_and_plain_steps_over_http_stay_serialized(
    client: httpx.Client, daemon: Daemon
) -> None:
    sid = new_session(client, "echo")

    def one_client(i: int) -> list[int]:
        with daemon.client("alice-token") as c:
            with c.stream(
                "POST", f"/v1/sessions/{sid}/step", json={"input": f"s{i}"}, headers=SSE
            ) as r:
                streamed = until_committed(r.iter_lines())[-1]["data"]["revision"]
            plain = c.post(f"/v1/sessions/{sid}/step", json={"input": f"p{i}"}).json()
        return [streamed, plain["revision"]]

    with ThreadPoolExecutor(32) as pool:
        revisions = [r for pair in pool.map(one_client, range(32)) for r in pair]
    assert sorted(revisions) == list(range(1, 65))
    session = client.get(f"/v1/sessions/{sid}").json()
    assert (session["revision"], session["context"]["count"]) == (64, 64)


def test_a_tail_past_the_per_session_cap_is_429_until_one_closes(
    client: httpx.Client, daemon: Daemon
) -> None:
    sid = new_session(client, "echo")
    path = f"/v1/sessions/{sid}/events"
    with daemon.client("alice-token") as a, daemon.client("alice-token") as b:
        with a.stream("GET", path) as ta, b.stream("GET", path) as tb:
            assert (ta.status_code, tb.status_code) == (200, 200)
            refused = client.get(path)
            assert refused.status_code == 429
            assert refused.json()["type"].endswith(":too-many-watchers")
            assert refused.headers["retry-after"] == "5"
            assert "2 tails open" in refused.json()["detail"]
            other = new_session(client, "echo")  # the cap is per session
            with client.stream("GET", f"/v1/sessions/{other}/events") as elsewhere:
                assert elsewhere.status_code == 200

        def reopened() -> bool:  # the daemon notices the closed tails and lets one in
            with client.stream("GET", path) as tail:
                return tail.status_code == 200

        wait_for(reopened, what="a tail once the others closed")


def test_async_tasks_run_on_the_daemons_loop_unless_told_to_run_on_their_own(
    client: httpx.Client, tmp_path: Path
) -> None:
    """By default an async task runs on the daemon's event loop (its tokens reach the
    stream without a hand-over between threads); ``--task-loop own`` gives async tasks
    a loop thread of the runtime's own, as before."""
    sid = new_session(client, "whereami")
    with client.stream("POST", f"/v1/sessions/{sid}/step", json={}, headers=SSE) as r:
        assert until_committed(r.iter_lines())[-1]["data"]["response"] == "MainThread"
    own = Daemon(tmp_path, ["--task-loop", "own"], None).start()
    try:
        with own.client() as c:
            other = new_session(c, "whereami")
            answered = c.post(f"/v1/sessions/{other}/step", json={})
            assert answered.status_code == 200, answered.text
            assert answered.json()["response"] == "actorflow-loop"
    finally:
        assert own.stop() == 0, own.log_tail()
