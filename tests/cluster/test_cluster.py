"""Several actorflowd processes on one store: one live copy per session, forwarding,
takeover after a crash, fencing of a paused holder, and an outage of the store. Each
scenario taking ``backend`` runs on Redis and on PostgreSQL."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from cluster_nodes import (
    LEASE_TTL,
    TEST_GRAPHS,
    Backend,
    Node,
    RedisBackend,
    StartNode,
    create_session,
    sse_frames,
    wait_until,
)

STEADY = ("--lease-ttl", "10")
FORWARDED = "actorflow_forwarded_total"
ROUNDS = 2  # steps per session in the three-daemon test


def step(client: httpx.Client, session_id: str, text: str, **headers: str) -> httpx.Response:
    return client.post(f"/v1/sessions/{session_id}/step", json={"input": text}, headers=headers)


def inputs_of(node: Node, session_id: str, headers: dict[str, str] | None = None) -> list[str]:
    """The user inputs recorded in the session's chat history, read through ``node``."""
    response = node.http.get(f"/v1/sessions/{session_id}", headers=headers)
    assert response.status_code == 200, response.text
    return [m["content"] for m in response.json()["chat_history"] if m["role"] == "user"]


@pytest.mark.slow
def test_sixteen_clients_alternating_between_two_daemons_lose_no_step(
    start_shared_node: StartNode,
) -> None:
    # a long lease: on a loaded machine a 1 s lease may lapse, and this test is not about that
    a, b = start_shared_node("a", *STEADY), start_shared_node("b", *STEADY)
    sid = create_session(a)
    failures: list[tuple[int, str]] = []
    both_live: list[float] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if sid in a.live() and sid in b.live():
                both_live.append(time.monotonic())

    def client(i: int) -> None:
        with a.client() as ca, b.client() as cb:
            order = [ca, cb] if i % 2 == 0 else [cb, ca]
            for k in range(25):
                response = step(order[k % 2], sid, f"{i}-{k}")
                if response.status_code != 200:
                    failures.append((response.status_code, response.text))

    watcher = threading.Thread(target=watch)
    watcher.start()
    clients = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(60)
    done.set()
    watcher.join(10)

    assert failures == []
    detail = b.http.get(f"/v1/sessions/{sid}").json()
    assert detail["context"]["count"] == 400
    assert detail["revision"] == 400
    assert both_live == []
    assert [sid in node.live() for node in (a, b)].count(True) == 1
    # every request the other daemon got was forwarded to the holder, and served there
    # (a forward that raced the holder's own grant is refused with 421 and sent again)
    holder, other = (a, b) if sid in a.live() else (b, a)
    # a daemon logs a request after sending its answer: wait for the last lines
    wait_until(
        lambda: (
            len([e for e in step_lines(holder) if e["status"] == 200]) >= 400
            and len(step_lines(other)) >= 200
        ),
        what="every step's access line",
    )
    assert len([e for e in step_lines(holder) if e["status"] == 200]) == 400
    assert {e["status"] for e in step_lines(holder)} <= {200, 421}
    assert len(step_lines(other)) == 200


def logged(node: Node, request_id: str) -> list[dict[str, Any]]:
    """The access lines ``node`` wrote for ``request_id``, once there is one (a daemon logs
    a request after it has sent the answer: the line may come after the client has it)."""
    return wait_until(  # type: ignore[no-any-return]
        lambda: [e for e in node.events("request") if e.get("request_id") == request_id],
        what=f"{request_id}'s access line on node {node.name!r}",
    )


def step_lines(node: Node) -> list[dict[str, Any]]:
    return [e for e in node.events("request") if str(e.get("path", "")).endswith("/step")]


@pytest.mark.slow
def test_three_daemons_random_routing_keep_every_session_correct_and_single(
    start_shared_node: StartNode,
) -> None:
    nodes = [start_shared_node(name, *STEADY) for name in ("a", "b", "c")]
    rng = random.Random(7)
    sessions = [create_session(rng.choice(nodes)) for _ in range(150)]
    failures: list[tuple[int, str]] = []
    lock = threading.Lock()
    chunks = [sessions[i::6] for i in range(6)]

    def client(mine: list[str], seed: int) -> None:
        pick = random.Random(seed)
        clients = [node.client() for node in nodes]
        try:
            for round_ in range(ROUNDS):
                for sid in mine:
                    response = step(pick.choice(clients), sid, f"{sid[:8]}-{round_}")
                    if response.status_code != 200:
                        with lock:
                            failures.append((response.status_code, response.text))
        finally:
            for c in clients:
                c.close()

    threads = [threading.Thread(target=client, args=(c, i)) for i, c in enumerate(chunks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert failures == []
    live = Counter(sid for node in nodes for sid in node.live())
    assert max(live.values(), default=1) == 1
    for sid in sessions:
        node = rng.choice(nodes)
        assert inputs_of(node, sid) == [f"{sid[:8]}-{r}" for r in range(ROUNDS)]


@pytest.mark.slow
def test_a_killed_daemons_sessions_are_served_by_the_other_after_the_lease_ttl(
    start_shared_node: StartNode, backend: Backend
) -> None:
    a, b = start_shared_node("a"), start_shared_node("b")
    sessions = [create_session(a) for _ in range(4)]
    with a.client() as ca:
        for sid in sessions:
            assert step(ca, sid, "warm").status_code == 200
    assert all(backend.lease_node(sid) == "a" for sid in sessions)

    acknowledged: dict[str, list[str]] = {sid: ["warm"] for sid in sessions}
    statuses: Counter[int | str] = Counter()
    killed = threading.Event()
    served_after_kill = threading.Event()
    lock = threading.Lock()

    def client(sid: str) -> None:
        with a.client() as ca, b.client() as cb:
            for k in range(400):
                target = cb if killed.is_set() or k % 2 else ca
                text = f"{sid[:8]}-{k}"
                try:
                    response = step(target, sid, text)
                except httpx.TransportError:
                    with lock:
                        statuses["unreachable"] += 1
                    continue
                with lock:
                    statuses[response.status_code] += 1
                    if response.status_code == 200:
                        acknowledged[sid].append(text)
                        if killed.is_set():
                            served_after_kill.set()
                if served_after_kill.is_set() and k > 60:
                    return

    threads = [threading.Thread(target=client, args=(sid,)) for sid in sessions]
    for t in threads:
        t.start()
    wait_until(lambda: statuses[200] >= 40, what="steps acknowledged before the kill")
    a.kill()
    killed.set()
    killed_at = time.monotonic()
    assert served_after_kill.wait(LEASE_TTL * 10)
    took_over_after = time.monotonic() - killed_at
    for t in threads:
        t.join(60)

    assert took_over_after < LEASE_TTL * 5
    assert all(backend.lease_node(sid) in ("b", None) for sid in sessions)
    for sid in sessions:
        stored = inputs_of(b, sid)
        missing = [text for text in acknowledged[sid] if text not in stored]
        assert missing == [], f"acknowledged steps lost in {sid}: {missing}"
        # each input was sent once: the cluster itself never applied a step twice
        assert len(stored) == len(set(stored)), f"a step was applied twice in {sid}"
    assert set(statuses) <= {200, 503, "unreachable"}, statuses


@pytest.mark.slow
def test_a_paused_daemon_cannot_write_after_its_lease_was_taken_over(
    start_shared_node: StartNode, backend: Backend
) -> None:
    a, b = start_shared_node("a"), start_shared_node("b")
    sid = create_session(a)
    with a.client() as ca:
        assert step(ca, sid, "first").status_code == 200
    assert backend.lease_node(sid) == "a"

    a.signal(signal.SIGSTOP)
    stale: dict[str, Any] = {}
    mark = backend.peer_mark("POST", f"/v1/sessions/{sid}/step")

    def stale_request() -> None:
        # sent to the paused daemon itself, marked forwarded (as a peer would) so it is
        # served there
        with a.client() as ca:
            response = step(ca, sid, "stale", **{"X-Actorflow-Forwarded": mark})
            stale["status"] = response.status_code
            stale["body"] = response.text

    sender = threading.Thread(target=stale_request)
    sender.start()
    with b.client() as cb:
        # forwarded to the paused holder, unanswered until its lease lapsed: whether it
        # was applied is unknown to b, which says so rather than running the step twice
        response = step(cb, sid, "fresh")
        if response.status_code == 503:  # (unless a's lease had lapsed before the pause)
            assert "unknown" in response.json()["detail"], response.text
            response = step(cb, sid, "fresh")
    assert response.status_code == 200, response.text
    assert backend.lease_node(sid) == "b"

    a.signal(signal.SIGCONT)
    sender.join(30)
    # refused either way (docs/cluster.md, forwarding 6): run before a noticed its lost lease,
    # its commit is fenced off (503); accepted after, it is refused unrun (421, misdirected)
    assert stale["status"] in (421, 503), stale
    assert inputs_of(b, sid) == ["first", "fresh"]

    # a says so: its renewal found the lease taken, and a save it tried was fenced by the store
    def fenced() -> list[dict[str, Any]]:
        return [e for e in a.events("commit_failed") if e.get("error") == "LeaseLost"]

    wait_until(lambda: fenced() or a.events("lease_lost"), what=a.log_tail())  # logged after
    assert all("granted since" in e["detail"] for e in fenced()), fenced()


@pytest.mark.slow
def test_a_store_outage_gives_503_and_leaves_no_session_corrupted(
    start_shared_node: StartNode, backend: Backend
) -> None:
    a, b = start_shared_node("a"), start_shared_node("b")
    sessions = [create_session(a) for _ in range(4)]
    acknowledged: dict[str, list[str]] = {sid: [] for sid in sessions}
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    restarted = threading.Event()
    recovered = threading.Event()

    def client(sid: str, seed: int) -> None:
        pick = random.Random(seed)
        with a.client() as ca, b.client() as cb:
            for k in range(2000):
                text = f"{sid[:8]}-{k}"
                response = step(pick.choice([ca, cb]), sid, text)
                with lock:
                    statuses[response.status_code] += 1
                    if response.status_code == 200:
                        acknowledged[sid].append(text)
                        if restarted.is_set():
                            recovered.set()
                if recovered.is_set() and k > 100:
                    return

    threads = [threading.Thread(target=client, args=(s, i)) for i, s in enumerate(sessions)]
    for t in threads:
        t.start()
    wait_until(lambda: statuses[200] >= 40, what="steps before the outage")
    backend.stop()
    wait_until(lambda: statuses[503] >= 8, what="503s while the store is down")
    assert a.http.get("/readyz").status_code == 503
    backend.start()
    restarted.set()
    assert recovered.wait(20), "no step succeeded after the store came back"
    for t in threads:
        t.join(60)

    assert set(statuses) <= {200, 503}, statuses
    wait_until(lambda: a.http.get("/readyz").status_code == 200)
    for sid in sessions:
        stored = inputs_of(b, sid)
        missing = [text for text in acknowledged[sid] if text not in stored]
        assert missing == [], f"acknowledged steps lost in {sid}: {missing}"
    assert backend.quarantined() == 0


@pytest.mark.redis
def test_forwarding_passes_credentials_and_returns_the_holders_answer_unchanged(
    start_node: StartNode, tmp_path: Path, redis_server: Any
) -> None:
    backend = RedisBackend(redis_server)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("tok-alice alice\ntok-bob bob\n")
    tokens.chmod(0o600)
    a = start_node("a", "--tokens", str(tokens), *STEADY)
    b = start_node("b", "--tokens", str(tokens), *STEADY)
    alice = {"authorization": "Bearer tok-alice"}
    bob = {"authorization": "Bearer tok-bob"}
    created = a.http.post("/v1/sessions", json={"graph": "echo"}, headers=alice)
    sid = created.json()["session_id"]
    assert a.http.post(f"/v1/sessions/{sid}/step", json={"input": "1"}, headers=alice).is_success
    assert backend.lease_node(sid) == "a"

    # through b, forwarded to a with alice's token: served as alice
    via_b = b.http.post(
        f"/v1/sessions/{sid}/step",
        json={"input": "2"},
        headers={**alice, "x-request-id": "req-forwarded-1"},
    )
    assert via_b.status_code == 200
    assert via_b.json()["revision"] == 2
    assert via_b.headers["x-request-id"] == "req-forwarded-1"
    forwarded = logged(a, "req-forwarded-1")
    assert [e["user"] for e in forwarded] == ["alice"]

    # bob's token is passed through too: a answers 404 and b relays it unchanged
    direct = a.http.post(f"/v1/sessions/{sid}/step", json={"input": "x"}, headers=bob)
    relayed = b.http.post(f"/v1/sessions/{sid}/step", json={"input": "x"}, headers=bob)
    assert (direct.status_code, relayed.status_code) == (404, 404)
    assert relayed.headers["content-type"] == direct.headers["content-type"]
    assert relayed.json() == direct.json()

    # the session's history routes are forwarded too: the holder answers them
    for path in ("messages", "revisions"):
        request_id = f"req-history-{path}"
        page = b.http.get(
            f"/v1/sessions/{sid}/{path}", headers={**alice, "x-request-id": request_id}
        )
        assert page.status_code == 200, page.text
        assert [e["user"] for e in logged(a, request_id)] == ["alice"]
    assert [r["revision"] for r in page.json()["items"]] == [2, 1, 0]
    messages = b.http.get(f"/v1/sessions/{sid}/messages", headers=alice).json()["items"]
    assert [m["content"] for m in messages if m["role"] == "user"] == ["1", "2"]

    # graph-flow's execute names the session in its body: forwarded as well
    executed = b.http.post(
        "/v1/execute",
        json={"session_id": sid, "content": "4"},
        headers={**alice, "x-request-id": "req-forwarded-2"},
    )
    assert executed.status_code == 200, executed.text
    assert [e["path"] for e in logged(a, "req-forwarded-2")] == ["/v1/execute"]

    # a request already forwarded (its mark signed by a daemon of the cluster) is served
    # where it lands, never forwarded again
    mark = backend.peer_mark("POST", f"/v1/sessions/{sid}/step")
    marked = b.http.post(
        f"/v1/sessions/{sid}/step",
        json={"input": "3"},
        headers={**alice, "x-actorflow-forwarded": mark},
    )
    assert marked.status_code == 503
    assert "live on node 'a'" in marked.json()["detail"]
    assert inputs_of(a, sid, alice) == ["1", "2", "4"]

    # sharing changes the session through its actor: forwarded to the holder as well
    shared = b.http.post(
        f"/v1/sessions/{sid}/members",
        json={"user": "bob", "access": "read"},
        headers={**alice, "x-request-id": "req-forwarded-3"},
    )
    assert shared.status_code == 200, shared.text
    assert shared.json()["members"] == {"bob": "read"}
    assert logged(a, "req-forwarded-3")
    assert b.http.get(f"/v1/sessions/{sid}", headers=bob).status_code == 200
    unshared = b.http.delete(f"/v1/sessions/{sid}/members/bob", headers=alice)
    assert unshared.json()["members"] == {}
    assert backend.lease_node(sid) == "a"


def _teller_held_by(node: Node, backend: Backend, gate: Path) -> str:
    """A ``teller`` session waiting on ``gate``, live on ``node`` (holding its lease) after
    one step made there; ``gate`` is shut again on return."""
    created = node.http.post(
        "/v1/sessions", json={"graph": "teller", "context": {"gate": str(gate)}}
    )
    sid = str(created.json()["session_id"])
    gate.touch()  # the first step, made on node so that it holds the lease, does not wait
    assert node.http.post(f"/v1/sessions/{sid}/step", json={}).is_success
    assert backend.lease_node(sid) == node.name
    gate.unlink()
    return sid


@pytest.mark.redis
def test_a_streamed_step_and_a_tail_are_relayed_from_the_holder_as_they_happen(
    start_node: StartNode, tmp_path: Path, redis_server: Any
) -> None:
    backend = RedisBackend(redis_server)
    a = start_node("a", *TEST_GRAPHS, *STEADY)
    b = start_node("b", *TEST_GRAPHS, *STEADY)
    gate = tmp_path / "gate"
    sid = _teller_held_by(a, backend, gate)

    # a tail opened through b is a's tail (relayed); a streamed step through b is a's
    # step, its first token relayed while the task still waits for the gate
    with (
        b.client() as watcher,
        watcher.stream("GET", f"/v1/sessions/{sid}/events") as tail,
        b.client() as stepper,
        stepper.stream(
            "POST", f"/v1/sessions/{sid}/step", json={}, headers={"accept": "text/event-stream"}
        ) as streamed,
    ):
        assert (tail.status_code, streamed.status_code) == (200, 200)
        got = []
        for frame in sse_frames(streamed.iter_lines()):
            got.append(frame)
            if frame["event"] == "token" and frame["data"]["text"] == "first":
                gate.touch()  # the task on a is still waiting for this
            if frame["event"] in ("committed", "error"):
                break
        tailed = []
        for frame in sse_frames(tail.iter_lines()):
            tailed.append(frame)
            if frame["event"] == "committed":
                break
    assert [f["data"]["text"] for f in got if f["event"] == "token"] == ["first", " second"]
    assert got[-1]["event"] == "committed", got[-1]
    assert got[-1]["data"]["response"] == "told: gate opened"  # so "first" came before the end
    assert [f["data"]["text"] for f in tailed if f["event"] == "token"] == ["first", " second"]
    assert backend.lease_node(sid) == "a"  # served by the holder, never activated on b
    assert a.http.get(f"/v1/sessions/{sid}").json()["revision"] == 2
    assert (a.metric(FORWARDED), b.metric(FORWARDED)) == (0, 2)  # the tail and the step, by b


@pytest.mark.redis
def test_a_relayed_stream_whose_holder_dies_ends_with_outcome_unknown(
    start_node: StartNode, tmp_path: Path, redis_server: Any
) -> None:
    backend = RedisBackend(redis_server)
    a = start_node("a", *TEST_GRAPHS, *STEADY)
    b = start_node("b", *TEST_GRAPHS, *STEADY)
    gate = tmp_path / "gate"
    sid = _teller_held_by(a, backend, gate)
    events = []
    with (
        b.client() as stepper,
        stepper.stream(
            "POST", f"/v1/sessions/{sid}/step", json={}, headers={"accept": "text/event-stream"}
        ) as streamed,
    ):
        for frame in sse_frames(streamed.iter_lines()):
            events.append(frame)
            if frame["event"] == "token":
                a.kill()  # mid-step, before it could commit
            if frame["event"] in ("committed", "error"):
                break
    assert events[-1]["event"] == "error", events
    assert events[-1]["data"]["type"] == "urn:actorflow:problem:outcome-unknown", events[-1]
    # fenced off: a restarted a cannot commit it, and b serves the session from revision 1
    assert b.http.get(f"/v1/sessions/{sid}").json()["revision"] == 1


@pytest.mark.redis
def test_a_create_takes_no_lease_so_the_first_step_activates_where_it_lands(
    start_node: StartNode, redis_server: Any
) -> None:
    backend = RedisBackend(redis_server)
    a = start_node("a", *STEADY)
    b = start_node("b", *STEADY)
    created = a.http.post("/v1/sessions", json={"graph": "echo"})
    assert created.status_code == 201, created.text
    assert created.json()["revision"] == 0
    assert created.json()["current_task"] == "echo"
    sid = created.json()["session_id"]
    assert backend.lease_node(sid) is None  # a load balancer may send its steps anywhere
    assert b.http.post(f"/v1/sessions/{sid}/step", json={"input": "hi"}).status_code == 200
    assert backend.lease_node(sid) == "b"  # activated where the step landed, not forwarded
    assert (a.metric(FORWARDED), b.metric(FORWARDED)) == (0, 0)


@pytest.mark.redis
def test_reading_a_session_takes_no_lease_but_a_live_one_is_read_from_its_holder(
    start_node: StartNode, redis_server: Any
) -> None:
    backend = RedisBackend(redis_server)
    a = start_node("a", *STEADY)
    b = start_node("b", *STEADY)
    sid = a.http.post("/v1/sessions", json={"graph": "echo"}).json()["session_id"]
    for path in ("", "/revisions", "/messages"):
        assert a.http.get(f"/v1/sessions/{sid}{path}").status_code == 200
    assert backend.lease_node(sid) is None  # the reads on a pulled nothing there
    assert b.http.post(f"/v1/sessions/{sid}/step", json={"input": "hi"}).status_code == 200
    assert backend.lease_node(sid) == "b"
    read = a.http.get(f"/v1/sessions/{sid}")  # live on b: read from b
    assert read.json()["revision"] == 1
    assert (a.metric(FORWARDED), b.metric(FORWARDED)) == (1, 0)
    assert backend.lease_node(sid) == "b"
