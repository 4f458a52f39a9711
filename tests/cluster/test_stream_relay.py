"""Issue 14 in a cluster: what test_cluster.py's relay tests leave out.

Two actorflowd nodes on one redis-server. A caller leaving a relayed streamed
step closes the holder's side (the step still commits); a holder paused
mid-stream (its lease lapses while it sends nothing) ends the relayed stream
with ``outcome-unknown`` and never commits the step; a tail opened on a session
live nowhere activates it where it is served, sees the steps made through the
other daemon, and ends when the session leaves. The ``teller`` task
(tests/daemon/graphs_for_tests.py) emits ``first`` and then waits on a file.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cluster_nodes import TEST_GRAPHS, Node, RedisBackend, StartNode, sse_frames, wait_until

from runtime.admin import AdminClient

pytestmark = pytest.mark.redis

SSE = {"accept": "text/event-stream"}


def live_session(node: Node, graph: str, **context: object) -> str:
    """A new session made live on ``node`` (an edit setting ``context`` runs there; a new
    session is only stored, live nowhere)."""
    response = node.http.post("/v1/sessions", json={"graph": graph})
    assert response.status_code == 201, response.text
    session_id = str(response.json()["session_id"])
    edit = node.http.patch(f"/v1/sessions/{session_id}", json={"set": {"ready": 1, **context}})
    assert edit.status_code == 200, edit.text
    return session_id


def revision(node: Node, session_id: str) -> int:
    response = node.http.get(f"/v1/sessions/{session_id}")
    assert response.status_code == 200, response.text
    return int(response.json()["revision"])


def passivate(node: Node, session_id: str) -> None:
    with AdminClient(node.data_dir / "admin.sock", timeout=10.0) as admin:
        assert admin.call("passivate", id=session_id)["passivated"] is True


@contextmanager
def tail(node: Node, session_id: str) -> Iterator[Iterator[dict[str, Any]]]:
    """The frames of a tail of ``session_id`` opened through ``node`` (subscribed once
    this yields: the headers come after the subscription); closed on exit."""
    with (
        node.client() as client,
        client.stream("GET", f"/v1/sessions/{session_id}/events") as answer,
    ):
        assert answer.status_code == 200, answer.read()
        yield sse_frames(answer.iter_lines())


def names_until(events: Iterator[dict[str, Any]], last: str, count: int = 1) -> list[str]:
    """The event names read up to the ``count``-th ``last`` (the tail buffers them)."""
    seen: list[str] = []
    for frame in events:
        seen.append(frame["event"])
        if seen.count(last) == count:
            return seen
    raise AssertionError(f"the tail ended after {seen}")


def test_a_caller_leaving_a_relayed_stream_closes_it_at_the_holder_and_the_step_commits(
    start_node: StartNode, redis_server: Any, tmp_path: Path
) -> None:
    backend = RedisBackend(redis_server)
    a, b = start_node("a", *TEST_GRAPHS), start_node("b", *TEST_GRAPHS)
    gate = tmp_path / "gate"
    sid = live_session(b, "teller", gate=str(gate))
    assert backend.lease_node(sid) == "b"
    before = b.metric("actorflow_stream_disconnects_total")

    with (
        a.client() as client,
        client.stream(
            "POST", f"/v1/sessions/{sid}/step", json={"input": "go"}, headers=SSE
        ) as answer,
    ):
        for frame in sse_frames(answer.iter_lines()):
            if frame["event"] == "token":
                break  # leave mid-stream: the client closes the connection to a
    # a closed its connection to b, which counts its own stream's client gone
    wait_until(
        lambda: b.metric("actorflow_stream_disconnects_total") > before,
        what="the holder seeing the relayed stream closed",
    )
    gate.touch()
    wait_until(lambda: revision(a, sid) == 2, what="the step committing at the holder")


@pytest.mark.slow
def test_a_holder_paused_mid_stream_ends_the_relayed_stream_with_outcome_unknown(
    start_node: StartNode, redis_server: Any, tmp_path: Path
) -> None:
    backend = RedisBackend(redis_server)
    a, b = start_node("a", *TEST_GRAPHS), start_node("b", *TEST_GRAPHS)
    gate = tmp_path / "gate"
    sid = live_session(b, "teller", gate=str(gate))
    assert backend.lease_node(sid) == "b"

    seen: list[dict[str, Any]] = []
    with a.http.stream(
        "POST",
        f"/v1/sessions/{sid}/step",
        json={"input": "lost"},
        headers={**SSE, "x-request-id": "req-paused"},
    ) as answer:
        for frame in sse_frames(answer.iter_lines()):
            seen.append(frame)
            if frame["event"] == "token":
                b.signal(signal.SIGSTOP)  # the holder stops mid-step
    assert [f["event"] for f in seen] == ["step_started", "task_started", "token", "error"]
    problem = seen[-1]["data"]
    assert problem["type"].endswith(":outcome-unknown"), problem
    assert "can no longer be committed" in problem["detail"]

    gate.touch()
    b.signal(signal.SIGCONT)  # the step finishes at b, under an epoch fenced off
    wait_until(
        lambda: [e for e in b.events("request") if e.get("request_id") == "req-paused"],
        what="b ending the stream it was relaying",
    )
    assert revision(a, sid) == 1  # never committed
    response = a.http.post(f"/v1/sessions/{sid}/step", json={"input": "next"}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["revision"] == 2


def test_a_tail_activates_a_session_live_nowhere_and_ends_when_it_leaves(
    start_node: StartNode, redis_server: Any
) -> None:
    backend = RedisBackend(redis_server)
    a, b = start_node("a"), start_node("b")
    sid = live_session(b, "echo")
    passivate(b, sid)
    wait_until(lambda: backend.lease_node(sid) is None, what="b releasing the lease")

    with tail(a, sid) as events:
        assert backend.lease_node(sid) == "a"  # the tail activated it here
        response = b.http.post(f"/v1/sessions/{sid}/step", json={"input": "x"})
        assert response.status_code == 200, response.text  # forwarded to a
        assert names_until(events, "committed")[-1] == "committed"
        passivate(a, sid)  # the session leaves a: a's tail ends, the reader may reopen it
        assert list(events) == []
    wait_until(lambda: backend.lease_node(sid) is None, what="a releasing the lease")
