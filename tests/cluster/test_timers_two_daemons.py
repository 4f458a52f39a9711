"""Two actorflowd processes on one Redis fire each durable timer exactly once.

Sessions are created through both daemons with a timer due two seconds later; a
short idle timeout passivates them first, so when they come due both daemons'
timer threads see them in the shared index and race to take the lease: exactly
one fires each (the session's own state counts the firings)."""

from __future__ import annotations

import re

import pytest
from cluster_nodes import Node, StartNode, wait_until

pytestmark = pytest.mark.redis

SESSIONS = 12
FAST = ("--graphs", "timer_graph:GRAPH", "--idle-timeout", "0.5", "--sweep-interval", "0.2",
        "--timer-poll-interval", "0.2", "--lease-ttl", "5")  # fmt: skip


def fired_counter(node: Node) -> float:
    text = node.http.get("/metrics").text
    match = re.search(r"^actorflow_timers_fired_total (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.mark.slow
def test_two_daemons_fire_each_timer_once(start_node: StartNode) -> None:
    a, b = start_node("a", *FAST), start_node("b", *FAST)
    sessions: list[str] = []
    for i in range(SESSIONS):
        node = (a, b)[i % 2]
        created = node.http.post("/v1/sessions", json={"graph": "timers"})
        assert created.status_code == 201, created.text
        sid = created.json()["session_id"]
        stepped = node.http.post(
            f"/v1/sessions/{sid}/step", json={"input": {"schedule": {"t": 2.0}}}
        )
        assert stepped.status_code == 200, stepped.text
        sessions.append(sid)

    def fired(sid: str) -> list[str] | None:
        response = a.http.get(f"/v1/sessions/{sid}")
        if response.status_code != 200:
            return None
        view = response.json()
        return None if view["timers"] else list(view["context"].get("fired", []))

    for sid in sessions:
        assert wait_until(lambda sid=sid: fired(sid), what=f"{sid}'s timer firing") == ["t"]
    # every firing was counted by the daemon that committed it: once per timer in all
    assert wait_until(lambda: fired_counter(a) + fired_counter(b) == SESSIONS)
    assert fired_counter(a) + fired_counter(b) == SESSIONS
