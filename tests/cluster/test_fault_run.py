"""A bounded fault run (issue 22): three daemons on one Redis, clients stepping through
random daemons while daemons are paused, killed and restarted and Redis restarts.

Asserted at the end, from what Redis holds: no acknowledged step lost, no revision
acknowledged twice, and no step answered 503 outcome-unknown applied after that answer
(each client steps its own session one request at a time, so a late application would
land after a step the client sent later).
"""

from __future__ import annotations

import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from cluster_nodes import LEASE_TTL, Node, StartNode, create_session, wait_until

pytestmark = pytest.mark.redis

CHAOS_SECONDS = 12.0
CLIENTS = 4


@dataclass
class Record:
    """What one client sent to its session, and what it was told."""

    sent: list[str] = field(default_factory=list)
    acknowledged: dict[str, int] = field(default_factory=dict)  # text -> revision
    unknown: list[str] = field(default_factory=list)  # 503 outcome-unknown
    no_answer: set[str] = field(default_factory=set)  # connection error: may land later


def client_loop(nodes: list[Node], sid: str, record: Record, stop: threading.Event) -> None:
    pick = random.Random(sid)
    clients = [httpx.Client(base_url=node.url, timeout=10.0) for node in nodes]
    try:
        k = 0
        while not stop.is_set():
            text = f"{sid[:8]}-{k}"
            k += 1
            record.sent.append(text)
            try:
                response = pick.choice(clients).post(
                    f"/v1/sessions/{sid}/step", json={"input": text}
                )
            except httpx.TransportError:
                record.no_answer.add(text)
                continue
            if response.status_code == 200:
                record.acknowledged[text] = response.json()["revision"]
            elif response.status_code == 503 and response.json()["type"].endswith(
                ":outcome-unknown"
            ):
                record.unknown.append(text)
    finally:
        for c in clients:
            c.close()


def _told(record: Record, text: str) -> str:
    if text in record.acknowledged:
        return f"revision {record.acknowledged[text]}"
    if text in record.no_answer:
        return "no answer"
    return "outcome unknown" if text in record.unknown else "refused"


def chaos(nodes: list[Node], redis_server: Any, rng: random.Random) -> dict[str, int]:
    actions = {"pause": 0, "kill": 0, "redis": 0}
    until = time.monotonic() + CHAOS_SECONDS
    while time.monotonic() < until:
        action = rng.choice(["pause", "pause", "kill", "redis"])
        actions[action] += 1
        node = rng.choice(nodes)
        if action == "pause":
            node.signal(signal.SIGSTOP)
            time.sleep(rng.uniform(LEASE_TTL * 1.2, LEASE_TTL * 3))  # the pause itself
            node.signal(signal.SIGCONT)
        elif action == "kill":
            node.kill()
            node.start()
        else:
            redis_server.stop()
            time.sleep(rng.uniform(0.2, 1.0))  # the outage itself
            redis_server.start()
        time.sleep(rng.uniform(0.2, 1.0))  # quiet time between faults
    return actions


@pytest.mark.slow
def test_a_fault_run_loses_no_acknowledged_step_and_applies_no_unknown_step_late(
    start_node: StartNode, redis_server: Any
) -> None:
    nodes = [start_node(name) for name in ("a", "b", "c")]
    rng = random.Random(22)
    sessions = [create_session(nodes[i % 3]) for i in range(CLIENTS)]
    records = {sid: Record() for sid in sessions}
    stop = threading.Event()
    threads = [
        threading.Thread(target=client_loop, args=(nodes, sid, records[sid], stop))
        for sid in sessions
    ]
    for t in threads:
        t.start()
    try:
        actions = chaos(nodes, redis_server, rng)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads)

    reader = nodes[0]

    def history(sid: str) -> list[str] | None:
        # the whole log, page by page: a session's view holds only its newest 1,000
        # messages, and a fast run steps a session more than 500 times
        pages: list[list[str]] = []
        before: int | None = None
        while True:
            params = {"limit": 1000} if before is None else {"limit": 1000, "before": before}
            response = reader.http.get(f"/v1/sessions/{sid}/messages", params=params)
            if response.status_code != 200:
                return None
            body = response.json()
            pages.append([m["content"] for m in body["items"] if m["role"] == "user"])
            before = body["next_before"]
            if before is None:
                return [text for page in reversed(pages) for text in page]

    acknowledged = sum(len(r.acknowledged) for r in records.values())
    unknown = sum(len(r.unknown) for r in records.values())
    no_answer = sum(len(r.no_answer) for r in records.values())
    print(f"fault run: {actions}, {acknowledged} acknowledged, {unknown} outcome-unknown, "
          f"{no_answer} unanswered")  # fmt: skip
    assert acknowledged >= 20, (acknowledged, actions)
    for sid, record in records.items():
        stored: list[str] = wait_until(lambda sid=sid: history(sid), what="reading " + sid)
        lost = [t for t in record.acknowledged if t not in stored]
        assert lost == [], f"acknowledged steps lost in {sid}: {lost}"
        assert len(stored) == len(set(stored)), f"a step applied twice in {sid}"
        revisions = list(record.acknowledged.values())
        assert len(revisions) == len(set(revisions)), f"a revision acknowledged twice: {sid}"
        # what was answered (200, 503s) lands in send order; only unanswered requests
        # (connection errors) may land late
        order = {text: i for i, text in enumerate(record.sent)}
        answered = [t for t in stored if t not in record.no_answer]
        assert answered == sorted(answered, key=order.__getitem__), (
            f"a step landed after one sent later in {sid} (unknown: {record.unknown})"
        )
        for text, revision in record.acknowledged.items():
            if stored.index(text) + 1 != revision:
                # the evidence, for a failure seen only on another machine: the revisions
                # around it (a step with input None was how a body cut short showed)
                near = reader.http.get(
                    f"/v1/sessions/{sid}/revisions", params={"limit": 12, "before": revision + 3}
                ).json()
                rows = [(r["revision"], r["kind"], r["input"]) for r in near.get("items", [])]
                at = record.sent.index(text)
                told = [(t, _told(record, t)) for t in record.sent[max(0, at - 10) : at + 1]]
                raise AssertionError(
                    f"{sid}: {text!r} was acknowledged as revision {revision} but is user "
                    f"message {stored.index(text) + 1}; revisions near it (revision, kind, "
                    f"input): {rows}; what the client was told for the steps it sent before: "
                    f"{told}"
                )
