"""Hypothesis against a real actorflowd: random steps, rollbacks and forks through the
time-travel routes give, at every revision, the state a plain replay of the steps gives.

The model keeps, per session, each revision's echo state (the count and the chat)
as replaying the steps would make it: a step extends the previous state, a
rollback repeats an older one, a fork starts a new session from one. Bounded:
a few dozen sequences of at most ten operations.
"""

from __future__ import annotations

from typing import Any

import httpx
from daemon_harness import Daemon
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

State = tuple[int, tuple[str, ...]]  # the echo count, the chat's contents

step_op = st.tuples(st.just("step"), st.text("abcxyz ", min_size=1, max_size=8))
travel_op = st.tuples(st.sampled_from(["rollback", "fork"]), st.floats(0, 1))
operations = st.lists(st.one_of(step_op, travel_op), min_size=1, max_size=10)


def state_of(view: dict[str, Any]) -> State:
    chat = tuple(message["content"] for message in view["chat_history"])
    return view["context"].get("count", 0), chat


def stepped(state: State, text: str) -> State:
    count, chat = state
    return count + 1, (*chat, text, f"echo: {text}")


def pick(revisions: dict[int, State], fraction: float) -> int:
    known = sorted(revisions)
    return known[min(int(fraction * len(known)), len(known) - 1)]


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
def test_random_steps_rollbacks_and_forks_match_a_replay(
    shared_daemon: Daemon, ops: list[tuple[str, Any]]
) -> None:
    with shared_daemon.client() as api:
        created = api.post("/v1/sessions", json={"graph": "echo"})
        assert created.status_code == 201, created.text
        current = created.json()["session_id"]
        models: dict[str, dict[int, State]] = {current: {0: (0, ())}}
        for op, arg in ops:
            model = models[current]
            newest = max(model)
            if op == "step":
                answer = api.post(f"/v1/sessions/{current}/step", json={"input": arg})
                assert answer.status_code == 200, answer.text
                assert answer.json()["revision"] == newest + 1
                model[newest + 1] = stepped(model[newest], arg)
            elif op == "rollback":
                target = pick(model, arg)
                answer = api.post(f"/v1/sessions/{current}/rollback", json={"revision": target})
                assert answer.status_code == 200, answer.text
                assert answer.json()["revision"] == newest + 1
                model[newest + 1] = model[target]
            else:
                target = pick(model, arg)
                answer = api.post(f"/v1/sessions/{current}/fork", json={"revision": target})
                assert answer.status_code == 201, answer.text
                current = answer.json()["session_id"]
                models[current] = {answer.json()["revision"]: model[target]}
        for sid, model in models.items():
            check_against_the_replay(api, sid, model)


def check_against_the_replay(api: httpx.Client, sid: str, model: dict[int, State]) -> None:
    newest = max(model)
    assert state_of(api.get(f"/v1/sessions/{sid}").json()) == model[newest]
    for revision, state in model.items():
        past = api.get(f"/v1/sessions/{sid}", params={"revision": revision})
        assert past.status_code == 200, past.text
        assert past.json()["revision"] == revision
        assert state_of(past.json()) == state
    listed = api.get(f"/v1/sessions/{sid}/revisions", params={"limit": 100}).json()
    revisions = [r["revision"] for r in listed["items"]]
    assert revisions[0] == newest
    assert set(model) <= set(revisions)
    missing = api.get(f"/v1/sessions/{sid}", params={"revision": newest + 1})
    assert missing.status_code == 404
    assert missing.json()["type"].endswith("revision-not-found")
