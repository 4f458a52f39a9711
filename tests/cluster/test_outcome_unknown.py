"""Issue 22: a step answered 503 outcome-unknown is never applied afterwards.

The holder of a session is paused (SIGSTOP) past its lease ttl while a step sent
through another daemon waits in its socket; the forwarding daemon answers 503
``outcome-unknown``. When the holder resumes (or is killed and restarted), the
step it finds waiting must not be committed: the request names the lease epoch
it was forwarded under and a start deadline, and that epoch was fenced off in
Redis before the 503 was sent.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import httpx
import pytest
import redis
from cluster_nodes import LEASE_TTL, Node, StartNode, create_session, peer_mark, wait_until
from testkit import assert_problem

pytestmark = pytest.mark.redis


def step(node: Node, session_id: str, text: str, **headers: str) -> httpx.Response:
    return node.http.post(f"/v1/sessions/{session_id}/step", json={"input": text}, headers=headers)


def inputs_of(node: Node, session_id: str) -> list[str]:
    response = node.http.get(f"/v1/sessions/{session_id}")
    assert response.status_code == 200, response.text
    return [m["content"] for m in response.json()["chat_history"] if m["role"] == "user"]


def lease_of(redis_url: str, session_id: str) -> dict[bytes, bytes]:
    client = redis.Redis.from_url(redis_url)
    try:
        found: dict[bytes, bytes] = client.hgetall(f"actorflow:lease:{session_id}")
    finally:
        client.close()
    return found


def served(node: Node, request_id: str) -> list[dict[str, Any]]:
    """The request log lines ``node`` wrote for ``request_id`` (one once it answered)."""
    return [e for e in node.events("request") if e.get("request_id") == request_id]


def pause_holder_and_step_through_other(
    holder: Node, other: Node, session_id: str, request_id: str
) -> float:
    """SIGSTOP ``holder``; step through ``other``: 503 outcome-unknown; the seconds it took."""
    holder.signal(signal.SIGSTOP)
    started = time.monotonic()
    response = step(other, session_id, "lost", **{"x-request-id": request_id})
    body = assert_problem(response, 503, "outcome-unknown")
    assert "can no longer be committed" in body["detail"], body
    return time.monotonic() - started


@pytest.mark.slow
@pytest.mark.parametrize("resume_after", [0.0, 1.0, 3.0])
def test_a_step_answered_outcome_unknown_is_not_applied_when_the_holder_resumes(
    start_node: StartNode, redis_url: str, resume_after: float
) -> None:
    a, b = start_node("a"), start_node("b")
    sid = create_session(b)
    assert step(b, sid, "first").status_code == 200
    assert lease_of(redis_url, sid)[b"node"] == b"b"

    took = pause_holder_and_step_through_other(b, a, sid, "req-unknown")
    assert took >= LEASE_TTL * 0.5  # not answered before the holder's lease could lapse
    time.sleep(resume_after)  # how long the holder stays paused after the 503: the parameter
    b.signal(signal.SIGCONT)
    # the request b found in its socket is answered (refused), and nothing was committed
    wait_until(lambda: served(b, "req-unknown"), what="b answering the stale request")
    assert [e["status"] for e in served(b, "req-unknown")] != [200]
    assert inputs_of(a, sid) == ["first"]
    assert step(a, sid, "next").status_code == 200
    assert inputs_of(b, sid) == ["first", "next"]
    assert served(b, "req-unknown")[0]["status"] in (421, 503)


@pytest.mark.slow
def test_a_step_answered_outcome_unknown_is_not_applied_by_a_killed_and_restarted_holder(
    start_node: StartNode, redis_url: str
) -> None:
    a, b = start_node("a"), start_node("b")
    sid = create_session(b)
    assert step(b, sid, "first").status_code == 200
    pause_holder_and_step_through_other(b, a, sid, "req-unknown")
    b.kill()
    b.start()  # same node id, same port
    assert inputs_of(b, sid) == ["first"]
    assert step(b, sid, "next").status_code == 200
    assert inputs_of(a, sid) == ["first", "next"]


@pytest.mark.slow
def test_a_request_forwarded_under_a_fenced_off_epoch_is_never_committed(
    start_node: StartNode, redis_url: str
) -> None:
    # what a holder does with a forwarded request that starts in time but under an
    # epoch that was fenced off meanwhile (the forwarder gave up on it)
    a, b = start_node("a"), start_node("b")
    sid = create_session(b)
    assert step(b, sid, "first").status_code == 200
    epoch = lease_of(redis_url, sid)[b"epoch"].decode()
    pause_holder_and_step_through_other(b, a, sid, "req-unknown")
    b.signal(signal.SIGCONT)
    deadline = f"{time.time() + 60:.3f}"
    mark = peer_mark(redis_url, "POST", f"/v1/sessions/{sid}/step", epoch, deadline)
    forged = step(
        b,
        sid,
        "forged",
        **{
            "x-actorflow-forwarded": mark,
            "x-actorflow-lease-epoch": epoch,
            "x-actorflow-deadline": deadline,
        },
    )
    assert forged.status_code in (421, 503), forged.text
    wait_until(lambda: served(b, "req-unknown"), what="b answering the stale request")
    assert inputs_of(a, sid) == ["first"]
    assert step(b, sid, "next").status_code == 200
    assert inputs_of(a, sid) == ["first", "next"]
    # the same marks, sent by a client itself (unsigned), are dropped: trusted, a would
    # serve the step here under b's epoch and refuse it (421); dropped, a forwards it to b
    unsigned = {"x-actorflow-forwarded": "1", "x-actorflow-lease-epoch": epoch}
    assert step(a, sid, "unsigned", **unsigned).status_code == 200
    assert inputs_of(b, sid) == ["first", "next", "unsigned"]
    assert a.events("forwarding_marks_dropped")
