"""GET /v1/sessions and /metrics fanned out to two real workers (runtime/daemon/_shards.py)."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from shards_harness import Shards, header

from runtime.daemon._shard_cursor import encode_cursor
from runtime.daemon._shards import FanOutRequest, close_fan_out, fan_out

ALICE, BOB = "tok-alice", "tok-bob"


@pytest.fixture(scope="module")
def shards() -> Iterator[Shards]:
    """Two workers with sessions: alice 5 on worker 0 and 4 on worker 1, bob 1 on each."""
    started = Shards()
    try:
        for worker, count in zip(started.workers, (5, 4), strict=True):
            with worker.client(ALICE) as alice, worker.client(BOB) as bob:
                for n in range(count):
                    created = alice.post("/v1/sessions", json={"graph": "echo"})
                    assert created.status_code == 201, created.text
                    sid = created.json()["session_id"]
                    step = alice.post(f"/v1/sessions/{sid}/step", json={"input": f"hi {n}"})
                    assert step.status_code == 200, step.text
                assert bob.post("/v1/sessions", json={"graph": "echo"}).status_code == 201
        yield started
    finally:
        started.close()


def _ids_on(worker_client_token: tuple[Shards, str]) -> set[str]:
    shards, token = worker_client_token
    ids: set[str] = set()
    for worker in shards.workers:
        with worker.client(token) as client:
            ids |= {item["session_id"] for item in client.get("/v1/sessions").json()["items"]}
    return ids


def test_the_list_pages_through_every_workers_sessions_in_id_order(shards: Shards) -> None:
    expected = sorted(_ids_on((shards, ALICE)))
    assert len(expected) == 9
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        target = "/v1/sessions?limit=4" + (f"&cursor={cursor}" if cursor else "")
        answer = shards.get(target, ALICE)
        assert answer.status == 200, answer.body
        assert header(answer, "content-type").startswith("application/json")
        assert int(header(answer, "content-length")) == len(answer.body)
        body = json.loads(answer.body)
        assert len(body["items"]) <= 4
        assert {"graph", "status", "revision"} <= set(body["items"][0])
        seen += [item["session_id"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == expected  # every session once, in id order, across both workers
    assert pages == 3
    assert not set(seen) & _ids_on((shards, BOB))  # each worker checked the caller's scope


def test_the_list_answers_the_callers_scope_and_a_page_of_the_default_size(
    shards: Shards,
) -> None:
    answer = shards.get("/v1/sessions", BOB)
    body = json.loads(answer.body)
    assert answer.status == 200
    assert len(body["items"]) == 2
    assert body["next_cursor"] is None


@pytest.mark.parametrize(
    "cursor",
    ["%%%not-base64", "bm90IGpzb24", encode_cursor(["a", None, None]), encode_cursor([True, True])],
)
def test_a_cursor_this_daemon_did_not_give_out_is_a_400_problem(
    shards: Shards, cursor: str
) -> None:
    answer = shards.get(f"/v1/sessions?cursor={cursor}", ALICE)
    assert answer.status == 400
    assert header(answer, "content-type") == "application/problem+json"
    problem = json.loads(answer.body)
    assert problem["type"].endswith(":bad-request")
    assert "cursor" in problem["detail"]


def test_a_workers_refusal_is_the_answer(shards: Shards) -> None:
    unauthenticated = shards.get("/v1/sessions")
    assert unauthenticated.status == 401
    assert json.loads(unauthenticated.body)["type"].endswith(":unauthorized")
    too_big = shards.get("/v1/sessions?limit=5000", ALICE)
    assert too_big.status == 422
    assert header(too_big, "content-type").startswith("application/problem+json")


def test_metrics_sum_counters_merge_histograms_and_label_gauges(shards: Shards) -> None:
    per_worker = []
    for worker in shards.workers:
        with worker.client(ALICE) as client:
            per_worker.append(_families(client.get("/metrics").text))
    answer = shards.get("/metrics", ALICE)
    assert answer.status == 200
    assert header(answer, "content-type").startswith("text/plain")
    merged = _families(answer.body.decode())

    steps = [_value(f, "actorflow_steps_total") for f in per_worker]
    assert steps[0] > 0
    assert steps[1] > 0
    assert _value(merged, "actorflow_steps_total") == sum(steps)  # 9 steps in all

    buckets = [
        (s.labels["le"], s.value)
        for s in merged["actorflow_step_duration_seconds"].samples
        if s.name.endswith("_bucket")
    ]
    counts = [value for _, value in buckets]
    assert counts == sorted(counts)  # cumulative, as a histogram must be
    assert buckets[-1][0] == "+Inf"
    assert buckets[-1][1] == _value(merged, "actorflow_step_duration_seconds_count") == sum(steps)

    live = {s.labels["worker"]: s.value for s in merged["actorflow_live_actors"].samples}
    assert set(live) == {"0", "1"}
    assert live == {str(k): _value(f, "actorflow_live_actors") for k, f in enumerate(per_worker)}


def test_the_workers_listen_on_sockets_only_their_user_can_open(shards: Shards) -> None:
    for worker in shards.workers:
        mode = stat.S_IMODE(worker.http_socket.stat().st_mode)
        assert mode == 0o600
    assert stat.S_IMODE(shards.admin_socket.stat().st_mode) == 0o600


def test_a_worker_that_does_not_answer_makes_a_503_naming_it(shards: Shards) -> None:
    missing = shards.root / "shard-9" / "http.sock"
    workers: list[Path] = [*(w.http_socket for w in shards.workers), missing]
    headers = [(b"host", b"localhost"), (b"authorization", f"Bearer {ALICE}".encode())]
    request = FanOutRequest("GET", b"/v1/sessions", headers)
    try:
        answer = shards.loop.run(fan_out(request, workers))
    finally:
        shards.loop.run(close_fan_out())
    assert answer.status == 503
    assert header(answer, "retry-after") == "1"
    problem = json.loads(answer.body)
    assert problem["type"].endswith(":worker-unavailable")
    assert "worker 2" in problem["detail"]
    assert str(missing) in problem["detail"]


def test_a_stopped_worker_removes_its_socket_and_the_list_is_503_not_partial(
    shards: Shards,
) -> None:
    """Runs last in this module: it stops worker 1."""
    worker = shards.workers[1]
    assert worker.stop() == 0
    assert not worker.http_socket.exists()
    answer = shards.get("/v1/sessions", ALICE)
    assert answer.status == 503
    assert "worker 1" in json.loads(answer.body)["detail"]


def _families(text: str) -> dict[str, object]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def _value(families: dict[str, object], sample_name: str) -> float:
    for family in families.values():
        for sample in family.samples:  # type: ignore[attr-defined]
            if sample.name == sample_name and "worker" not in sample.labels:
                return float(sample.value)
    raise AssertionError(f"no sample {sample_name}")
