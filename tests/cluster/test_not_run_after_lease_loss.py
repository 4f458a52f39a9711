"""Issue 22, the remaining cases: a step runs only under the lease it was accepted under.

- A step that waits in the holder's own mailbox while the holder loses its lease
  (paused past its ttl) is refused with 421 ``misdirected`` when the holder
  resumes, never run by the next activation under a new epoch (which it was
  before: 200, applied).
- A request forwarded to a holder that is alive but slow is answered within the
  forwarding timeout: the holder's epoch is fenced off first, so the step it
  still holds is never committed.

(Forwarding marks a client sends itself are dropped: test_outcome_unknown.py.)
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from cluster_nodes import LEASE_TTL, TEST_GRAPHS, Node, StartNode, wait_until
from testkit import assert_problem

from runtime.admin import AdminClient

pytestmark = pytest.mark.redis

FORWARD_TIMEOUT = 2.0


def step(node: Node, session_id: str, text: str, **headers: str) -> httpx.Response:
    return node.http.post(f"/v1/sessions/{session_id}/step", json={"input": text}, headers=headers)


def step_on_own_client(node: Node, session_id: str, text: str) -> httpx.Response:
    """A step through ``node`` on a client of its own (for a worker thread)."""
    with node.client() as client:
        return client.post(f"/v1/sessions/{session_id}/step", json={"input": text})


def inputs_of(node: Node, session_id: str) -> list[str]:
    response = node.http.get(f"/v1/sessions/{session_id}")
    assert response.status_code == 200, response.text
    return [m["content"] for m in response.json()["chat_history"] if m["role"] == "user"]


def gated_session(node: Node, tmp_path: Path) -> tuple[str, Path, Path]:
    """A ``gated`` session created through ``node``: its id, its gate file, its started dir."""
    gate, started = tmp_path / "gate", tmp_path / "started"
    started.mkdir()
    context = {"gate": str(gate), "started_dir": str(started)}
    response = node.http.post("/v1/sessions", json={"graph": "gated", "context": context})
    assert response.status_code == 201, response.text
    return response.json()["session_id"], gate, started


def lease_of(redis_url: str, session_id: str) -> dict[bytes, bytes]:
    client = redis.Redis.from_url(redis_url)
    try:
        found: dict[bytes, bytes] = client.hgetall(f"actorflow:lease:{session_id}")
    finally:
        client.close()
    return found


def inspect(node: Node, session_id: str) -> dict[str, Any]:
    with AdminClient(node.data_dir / "admin.sock", timeout=10.0) as admin:
        found: dict[str, Any] = admin.call("inspect", id=session_id)
    return found


@pytest.mark.slow
def test_a_step_queued_at_the_holder_across_a_lease_loss_is_refused_not_run_later(
    start_node: StartNode, redis_url: str, tmp_path: Path
) -> None:
    a, b = start_node("a", *TEST_GRAPHS), start_node("b", *TEST_GRAPHS)
    sid, gate, started = gated_session(b, tmp_path)
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(step_on_own_client, b, sid, "running")
        wait_until(lambda: (started / sid).exists(), what="the first step running on b")
        queued = pool.submit(step_on_own_client, b, sid, "queued")
        wait_until(lambda: inspect(b, sid)["stashed"] == 1, what="a step queued behind it")
        b.signal(signal.SIGSTOP)  # past the lease ttl: b's lease lapses in Redis
        wait_until(lambda: not lease_of(redis_url, sid), what="b's lease lapsing")
        b.signal(signal.SIGCONT)
        # b finds its lease lost and kills the actor: the queued step goes to the next one
        wait_until(lambda: b.events("session_lease_lost"), what="b noticing the lost lease")
        gate.touch()
        queued_answer, running_answer = queued.result(timeout=30), running.result(timeout=30)
    body = assert_problem(queued_answer, 421, "misdirected")
    assert "was not run" in body["detail"], body
    assert running_answer.status_code == 503, running_answer.text  # killed, not committed
    assert inputs_of(a, sid) == []  # neither was applied (the queued one was, before)
    assert step(a, sid, "next").status_code == 200
    assert inputs_of(b, sid) == ["next"]


@pytest.mark.slow
def test_a_forward_to_an_alive_but_slow_holder_ends_within_the_forward_timeout(
    start_node: StartNode, redis_url: str, tmp_path: Path
) -> None:
    a = start_node("a", *TEST_GRAPHS, "--forward-timeout", str(FORWARD_TIMEOUT))
    b = start_node("b", *TEST_GRAPHS)
    sid, gate, started = gated_session(b, tmp_path)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(step_on_own_client, b, sid, "running")
        wait_until(lambda: (started / sid).exists(), what="a step running on b")
        begun = time.monotonic()
        answer = step(a, sid, "forwarded")  # queued behind it on b, which renews its lease
        took = time.monotonic() - begun
        body = assert_problem(answer, 503, "outcome-unknown")
        assert "fenced off" in body["detail"], body
        gate.touch()
        assert running.result(timeout=30).status_code == 503  # fenced off: not committed
    assert FORWARD_TIMEOUT <= took < FORWARD_TIMEOUT + 3 * LEASE_TTL
    assert inputs_of(a, sid) == []
    assert step(a, sid, "next").status_code == 200
    assert inputs_of(b, sid) == ["next"]
