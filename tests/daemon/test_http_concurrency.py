"""Concurrent HTTP clients on one session, per-session queue bounds and the in-flight bound."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import pytest
from daemon_harness import StartDaemon, assert_problem, create, wait_for

CLIENTS = 32
STEPS_EACH = 25


async def _hammer(url: str, session_id: str) -> list[int]:
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0) as client:

        async def one_client(n: int) -> list[int]:
            revisions = []
            for i in range(STEPS_EACH):
                response = await client.post(
                    f"/v1/sessions/{session_id}/step", json={"input": f"{n}-{i}"}
                )
                assert response.status_code == 200, response.text
                revisions.append(response.json()["revision"])
            return revisions

        results = await asyncio.gather(*(one_client(n) for n in range(CLIENTS)))
    return [revision for revisions in results for revision in revisions]


@pytest.mark.slow
def test_concurrent_clients_on_one_session_lose_no_step(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    with daemon.client() as client:
        session_id = create(client)
        start_revision = client.get(f"/v1/sessions/{session_id}").json()["revision"]
        revisions = asyncio.run(_hammer(daemon.url, session_id))
        session = client.get(f"/v1/sessions/{session_id}").json()
    total = CLIENTS * STEPS_EACH
    assert session["context"]["count"] == total
    assert session["revision"] == start_revision + total
    assert sorted(revisions) == list(range(start_revision + 1, start_revision + total + 1))


def _gated_session(client: httpx.Client, tmp_path: Path) -> tuple[str, Path, Path]:
    gate = tmp_path / "gate"
    started = tmp_path / "started"
    started.mkdir(exist_ok=True)
    session_id = create(client, "gated", gate=str(gate), started_dir=str(started))
    return session_id, gate, started


def _step_in_thread(
    url: str, path: str, body: dict[str, object]
) -> tuple[threading.Thread, list[httpx.Response]]:
    responses: list[httpx.Response] = []

    def run() -> None:
        responses.append(httpx.post(url + path, json=body, timeout=60.0))

    thread = threading.Thread(target=run)
    thread.start()
    return thread, responses


def test_reject_while_a_step_runs_is_409_and_enqueue_waits(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    daemon = start_daemon()
    with daemon.client() as client:
        session_id, gate, started = _gated_session(client, tmp_path)
        path = f"/v1/sessions/{session_id}/step"
        first, first_responses = _step_in_thread(daemon.url, path, {"input": "held"})
        wait_for(lambda: (started / session_id).exists(), what="the gated step to start")
        body = assert_problem(
            client.post(path, json={"input": "x", "on_busy": "reject"}), 409, "session-busy"
        )
        assert body["session_id"] == session_id
        assert body["mailbox_full"] is False
        queued, queued_responses = _step_in_thread(daemon.url, path, {"input": "queued"})
        gate.touch()
        first.join(30)
        queued.join(30)
    assert first_responses[0].status_code == 200
    assert queued_responses[0].status_code == 200
    assert queued_responses[0].json()["revision"] == first_responses[0].json()["revision"] + 1


def test_full_mailbox_is_429(start_daemon: StartDaemon, tmp_path: Path) -> None:
    daemon = start_daemon("--max-pending", "2")
    with daemon.client() as client:
        session_id, gate, started = _gated_session(client, tmp_path)
        path = f"/v1/sessions/{session_id}/step"
        held = [_step_in_thread(daemon.url, path, {"input": "held"})]
        wait_for(lambda: (started / session_id).exists(), what="the gated step to start")
        held += [_step_in_thread(daemon.url, path, {"input": f"q{i}"}) for i in range(6)]
        wait_for(lambda: sum(len(r) for _, r in held) >= 1, what="a queued step to be refused")
        gate.touch()
        for thread, _ in held:
            thread.join(30)
    statuses = sorted(r[0].status_code for _, r in held)
    assert 429 in statuses, statuses
    assert 200 in statuses
    refused = next(r[0] for _, r in held if r[0].status_code == 429)
    assert_problem(refused, 429, "mailbox-full")
    assert refused.json()["mailbox_full"] is True


def test_step_past_its_deadline_is_504(start_daemon: StartDaemon, tmp_path: Path) -> None:
    daemon = start_daemon("--step-timeout", "0.3")
    with daemon.client() as client:
        session_id, gate, _ = _gated_session(client, tmp_path)
        before = client.get(f"/v1/sessions/{session_id}").json()["revision"]
        response = client.post(f"/v1/sessions/{session_id}/step", json={"input": "slow"})
        gate.touch()
        body = assert_problem(response, 504, "step-timeout")
        assert body["session_id"] == session_id
        wait_for(
            lambda: client.get(f"/v1/sessions/{session_id}").status_code == 200,
            what="the session to answer again",
        )
        assert client.get(f"/v1/sessions/{session_id}").json()["revision"] == before


@pytest.mark.slow
def test_steps_beyond_max_inflight_get_503_at_once(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    daemon = start_daemon("--max-inflight", "1")
    with daemon.client() as client:
        session_id, gate, started = _gated_session(client, tmp_path)
        other = create(client)
        held, held_responses = _step_in_thread(
            daemon.url, f"/v1/sessions/{session_id}/step", {"input": "held"}
        )
        wait_for(lambda: (started / session_id).exists(), what="the gated step to start")
        response = client.post(f"/v1/sessions/{other}/step", json={"input": "x"})
        assert_problem(response, 503, "overloaded")
        assert response.headers["retry-after"] == "1"
        gate.touch()
        held.join(30)
        assert held_responses[0].status_code == 200
        assert client.post(f"/v1/sessions/{other}/step", json={"input": "x"}).status_code == 200
