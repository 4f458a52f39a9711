"""``actorflowd --workers 2``: a real parent, its front and two worker subprocesses.

Each test reads the shard's own SQLite file or the worker's pid (its shard's
``daemon.lock``) to check where a session lives and what a crash did.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from daemon_harness import (
    Daemon,
    StartDaemon,
    assert_problem,
    create,
    daemon_env,
    wait_for,
)
from prometheus_client.parser import text_string_to_metric_families

from runtime.admin import AdminClient
from runtime.daemon._sharding import ShardMismatch, record_workers, shard_of

pytestmark = pytest.mark.timeout(90)

WORKERS = 2


def _shard_sessions(data_dir: Path, shard: int) -> dict[str, int]:
    """Session id -> revision in shard ``shard``'s own SQLite file."""
    with sqlite3.connect(data_dir / f"shard-{shard}" / "sessions.db") as db:
        return dict(db.execute("SELECT session_id, revision FROM sessions").fetchall())


def _worker_pid(data_dir: Path, shard: int) -> int:
    return int((data_dir / f"shard-{shard}" / "daemon.lock").read_text().strip() or 0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def workers(start_daemon: StartDaemon) -> Daemon:
    """A daemon with two workers for one test (it kills or stops them)."""
    return start_daemon("--workers", str(WORKERS))


@pytest.fixture(scope="module")
def shared_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon with two workers that the read-and-step tests of this module share."""
    workdir = tmp_path_factory.mktemp("workers")
    daemon = Daemon(workdir, ["--workers", str(WORKERS)], None).start()
    try:
        yield daemon
    finally:
        daemon.stop()


def test_steps_land_on_the_shard_that_owns_their_session(shared_workers: Daemon) -> None:
    workers = shared_workers
    with workers.client() as api:
        sessions = [create(api) for _ in range(8)]
        executed = api.post("/v1/execute", json={"content": "hi"})
        assert executed.status_code == 200, executed.text
        sessions.append(executed.json()["session_id"])
        for round_ in range(3):
            for session_id in sessions:
                step = api.post(f"/v1/sessions/{session_id}/step", json={"input": round_})
                assert step.status_code == 200, step.text
        assert api.post(
            "/v1/execute", json={"session_id": sessions[-1], "content": "again"}
        ).json()["response"]
        listed = api.get("/v1/sessions", params={"limit": 1000}).json()["items"]
        assert set(sessions) <= {item["session_id"] for item in listed}
        metrics = api.get("/metrics")
        assert metrics.status_code == 200
        assert 'worker="1"' in metrics.text
    with AdminClient(workers.data_dir / "admin.sock") as admin:
        live = {row["session_id"] for row in admin.call("ls")["sessions"]}
    assert set(sessions) <= live  # the parent's admin socket sees every worker's actors
    on_disk = [_shard_sessions(workers.data_dir, k) for k in range(WORKERS)]
    for k, held in enumerate(on_disk):
        assert held, f"round robin left shard {k} without a session"
        assert all(shard_of(session_id, WORKERS) == k for session_id in held)
    revisions = {sid: rev for held in on_disk for sid, rev in held.items()}
    assert set(sessions) <= set(revisions)
    created_revision = 0
    assert all(revisions[sid] == created_revision + 3 for sid in sessions[:-1])
    assert revisions[sessions[-1]] == created_revision + 5  # execute's create, step, 3, execute
    assert (workers.data_dir / "workers").read_text().strip() == str(WORKERS)
    assert not (workers.data_dir / "sessions.db").exists()


def test_workers_see_the_clients_address_not_the_fronts_and_never_a_clients_claim(
    shared_workers: Daemon,
) -> None:
    with shared_workers.client() as api:
        spoofed = {"x-actorflow-client": "203.0.113.9 4444"}
        created = [
            api.post("/v1/sessions", json={"graph": "echo"}, headers=spoofed) for _ in range(2)
        ]  # round robin: one on each worker
        for answer in created:
            assert answer.status_code == 201, answer.text
            view = api.get(f"/v1/sessions/{answer.json()['session_id']}").json()
            assert view["metadata"]["client_addr"] == "127.0.0.1"


def test_a_worker_killed_is_restarted_and_its_sessions_recover(
    workers: Daemon, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    started.mkdir()
    with workers.client() as api:
        sessions = [create(api) for _ in range(6)]
        for session_id in sessions:
            assert api.post(f"/v1/sessions/{session_id}/step", json={"input": 1}).status_code == 200
        held = create(api, "gated", gate=str(tmp_path / "never"), started_dir=str(started))
        if shard_of(held, WORKERS) != 0:  # creates alternate: the next one is on worker 0
            held = create(api, "gated", gate=str(tmp_path / "never"), started_dir=str(started))
        assert shard_of(held, WORKERS) == 0
        in_flight: list[httpx.Response] = []
        stepper = threading.Thread(
            target=lambda: in_flight.append(
                api.post(f"/v1/sessions/{held}/step", json={"input": "x"})
            )
        )
        stepper.start()
        wait_for(lambda: (started / held).exists(), 20, "the step to start on worker 0")
        victim = _worker_pid(workers.data_dir, 0)
        os.kill(victim, signal.SIGKILL)
        stepper.join(30)
        assert len(in_flight) == 1
        assert_problem(in_flight[0], 503, "outcome-unknown")
        on_victim = next(s for s in sessions if shard_of(s, WORKERS) == 0)

        def served_again() -> bool:
            answer = api.get(f"/v1/sessions/{on_victim}")
            if answer.status_code == 503:
                assert_problem(answer, 503, "worker-unavailable")
                assert answer.headers["retry-after"]
                return False
            return answer.status_code == 200

        wait_for(served_again, 30, "the killed worker's sessions served again")
        assert _worker_pid(workers.data_dir, 0) != victim
        for session_id in sessions:
            view = api.get(f"/v1/sessions/{session_id}")
            assert view.status_code == 200, view.text
            assert view.json()["revision"] == 1, "an acknowledged step was lost"
            assert api.post(f"/v1/sessions/{session_id}/step", json={"input": 2}).status_code == 200
    workers.wait_for_log("worker_restarted")


def test_sigterm_drains_a_step_in_flight_and_stops_every_worker(
    workers: Daemon, tmp_path: Path
) -> None:
    gate, started = tmp_path / "gate", tmp_path / "started"
    started.mkdir()
    pids = [_worker_pid(workers.data_dir, k) for k in range(WORKERS)]
    with workers.client() as api:
        session_id = create(api, "gated", gate=str(gate), started_dir=str(started))
        answers: list[httpx.Response] = []
        stepper = threading.Thread(
            target=lambda: answers.append(
                api.post(f"/v1/sessions/{session_id}/step", json={"input": "last"})
            )
        )
        stepper.start()
        wait_for(lambda: (started / session_id).exists(), 20, "the step to start")
        workers.signal(signal.SIGTERM)
        workers.wait_for_log("draining")
        gate.touch()
        stepper.join(30)
    assert len(answers) == 1
    assert answers[0].status_code == 200, answers[0].text
    assert answers[0].json()["response"] == "gated: last"
    assert workers.wait(30) == 0
    assert not any(_alive(pid) for pid in pids)
    owner = shard_of(session_id, WORKERS)
    assert _shard_sessions(workers.data_dir, owner)[session_id] == 1


def test_a_drain_delay_keeps_the_front_and_workers_serving_while_readyz_says_503(
    start_daemon: StartDaemon,
) -> None:
    """With ``--workers``, the front waits out the delay: it answers ``/readyz`` 503
    itself and relays the rest; the workers are told to drain only after it."""
    workers = start_daemon("--workers", str(WORKERS), "--drain-delay", "120")
    with workers.client() as api:
        sessions = [create(api) for _ in range(4)]  # on both workers
        workers.signal(signal.SIGTERM)
        workers.wait_for_log('"event":"drain_delay"')
        ready = api.get("/readyz")
        assert ready.status_code == 503
        assert "still serving" in ready.json()["detail"]
        for session_id in sessions:
            step = api.post(f"/v1/sessions/{session_id}/step", json={"input": "still"})
            assert step.status_code == 200, step.text
        assert api.get("/v1/sessions").status_code == 200  # a fan-out to every worker
    assert not any('"event":"draining"' in line for line in workers.log_lines())
    workers.signal(signal.SIGTERM)
    workers.wait_for_log('"event":"draining"')
    assert workers.wait(30) == 0, workers.log_tail()


def test_another_number_of_workers_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "workers").write_text("2\n")
    daemon = Daemon(tmp_path, ["--workers", "3"], data_dir)
    refused = subprocess.run(
        daemon.command(), env=daemon_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert refused.returncode == 2, refused.stderr
    assert "sharded for --workers 2" in refused.stderr
    with pytest.raises(ShardMismatch, match="start with --workers 2"):
        record_workers(data_dir, 1)
    single = tmp_path / "single"
    single.mkdir()
    (single / "sessions.db").touch()
    with pytest.raises(ShardMismatch, match=r"a single daemon's sessions\.db"):
        record_workers(single, 2)
    record_workers(data_dir, 2)  # the recorded N starts


def _exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on one connection and read until the front closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(data)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_the_front_keeps_pipelined_answers_in_order_and_refuses_big_bodies(
    shared_workers: Daemon,
) -> None:
    workers = shared_workers
    with workers.client() as api:
        first, second = create(api), create(api)
    assert shard_of(first, WORKERS) != shard_of(second, WORKERS)  # round robin
    host = f"host: 127.0.0.1:{workers.port}\r\n"
    pipelined = b"".join(
        (
            f"GET /v1/sessions/{sid} HTTP/1.1\r\n{host}"
            + ("connection: close\r\n" if last else "")
            + "\r\n"
        ).encode()
        for sid, last in ((first, False), (second, False), (first, True))
    )
    answers = _exchange(workers.port, pipelined).split(b"HTTP/1.1 200 OK")[1:]
    assert [first in a.decode() for a in answers] == [True, False, True]
    assert second in answers[1].decode()
    too_big = (
        f"POST /v1/sessions/{first}/step HTTP/1.1\r\n{host}"
        f"content-type: application/json\r\ncontent-length: {2 * 1024 * 1024}\r\n\r\n"
    ).encode()
    answer = _exchange(workers.port, too_big)
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"body-too-large" in answer


def _metric_sums(api: httpx.Client) -> dict[str, float]:
    """Every /metrics sample summed over its labels (the workers' gauges are labelled)."""
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(api.get("/metrics").text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


def test_daemon_wide_caps_are_shared_out_and_hibernation_is_counted_across_workers(
    start_daemon: StartDaemon,
) -> None:
    max_live = 2
    workers = start_daemon(
        "--workers", str(WORKERS), "--max-live", str(max_live),
        "--hibernate-after", "0.2", "--sweep-interval", "0.1",
    )  # fmt: skip
    with workers.client() as api:
        sessions = [create(api) for _ in range(2 * WORKERS)]  # round robin: two per worker
        for session_id in sessions:
            step = api.post(f"/v1/sessions/{session_id}/step", json={"input": "hi"})
            assert step.status_code == 200, step.text
        figures = _metric_sums(api)
        assert figures["actorflow_live_actors"] <= max_live  # one per worker, not two each
        assert figures["actorflow_evictions_total"] >= len(sessions) - max_live
        wait_for(
            lambda: _metric_sums(api)["actorflow_hibernated_sessions"] >= WORKERS,
            10.0,
            "every worker's live session hibernated",
        )
        asleep = _metric_sums(api)
        assert asleep["actorflow_hibernations_total"] >= WORKERS
        assert asleep["actorflow_wakes_total"] == 0
        step = api.post(f"/v1/sessions/{sessions[-1]}/step", json={"input": "wake up"})
        assert step.status_code == 200, step.text
        assert _metric_sums(api)["actorflow_wakes_total"] == 1
