"""Restarts and shutdown: sessions resume, SIGTERM drains in-flight steps, exit codes."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest
from daemon_harness import Daemon, StartDaemon, create, wait_for

from flow.stores import SqliteStore

IN_FLIGHT = 50


@pytest.mark.slow
def test_restarted_daemon_resumes_every_session(start_daemon: StartDaemon) -> None:
    first = start_daemon()
    with first.client() as client:
        sessions = [create(client) for _ in range(5)]
        for session_id in sessions:
            for i in range(3):
                assert (
                    client.post(
                        f"/v1/sessions/{session_id}/step", json={"input": str(i)}
                    ).status_code
                    == 200
                )
    assert first.stop() == 0
    second = start_daemon(data_dir=first.data_dir)
    with second.client() as client:
        for session_id in sessions:
            session = client.get(f"/v1/sessions/{session_id}").json()
            assert session["context"]["count"] == 3
            step = client.post(f"/v1/sessions/{session_id}/step", json={"input": "again"})
            assert step.status_code == 200
            assert step.json()["revision"] == session["revision"] + 1
        listed = {i["session_id"] for i in client.get("/v1/sessions").json()["items"]}
        assert set(sessions) <= listed


async def _step_all(url: str, sessions: list[str]) -> list[httpx.Response | BaseException]:
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0) as client:
        return await asyncio.gather(
            *(client.post(f"/v1/sessions/{sid}/step", json={"input": "drain"}) for sid in sessions),
            return_exceptions=True,
        )


def _inflight(daemon: Daemon) -> float:
    text = httpx.get(daemon.url + "/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("actorflow_steps_in_flight "))
    return float(line.split()[1])


@pytest.mark.slow
def test_sigterm_during_in_flight_steps_keeps_every_acknowledged_step(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    daemon = start_daemon("--drain-timeout", "20")
    gate = tmp_path / "gate"
    started = tmp_path / "started"
    started.mkdir()
    with daemon.client() as client:
        sessions = [
            create(client, "gated", gate=str(gate), started_dir=str(started))
            for _ in range(IN_FLIGHT)
        ]

    async def scenario() -> list[httpx.Response | BaseException]:
        steps = asyncio.create_task(_step_all(daemon.url, sessions))
        await asyncio.to_thread(
            wait_for, lambda: _inflight(daemon) >= IN_FLIGHT, 30.0, "50 steps in flight"
        )
        daemon.signal(signal.SIGTERM)
        # let the drain begin while every step is still held, then release them
        await asyncio.to_thread(daemon.wait_for_log, '"event":"draining"')
        gate.touch()
        return await steps

    results = asyncio.run(scenario())
    assert daemon.wait(40) == 0, daemon.log_tail()
    acknowledged = {
        r.json()["session_id"]: r.json()["revision"]
        for r in results
        if isinstance(r, httpx.Response) and r.status_code == 200
    }
    assert len(acknowledged) == IN_FLIGHT, [
        r if isinstance(r, BaseException) else r.status_code for r in results
    ]
    store = SqliteStore(daemon.db_path)
    try:
        for session_id, revision in acknowledged.items():
            stored = store.load(session_id)
            assert stored is not None
            assert stored.revision >= revision
            assert stored.context.get("count") == 1
    finally:
        store.close()


def test_sigterm_on_an_idle_daemon_exits_0(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    with daemon.client() as client:
        create(client)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    assert (daemon.data_dir / "sessions.db").exists()
    assert not (daemon.data_dir / "admin.sock").exists()


def test_sigint_drains_like_sigterm(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.signal(signal.SIGINT)
    assert daemon.wait(30) == 0


def test_second_signal_exits_at_once(start_daemon: StartDaemon, tmp_path: Path) -> None:
    daemon = start_daemon("--drain-timeout", "60")
    gate = tmp_path / "gate"
    started = tmp_path / "started"
    started.mkdir()
    with daemon.client() as client:
        session_id = create(client, "gated", gate=str(gate), started_dir=str(started))

    async def scenario() -> int:
        steps = asyncio.create_task(_step_all(daemon.url, [session_id]))
        await asyncio.to_thread(
            wait_for, lambda: (started / session_id).exists(), 30.0, "the step to start"
        )
        daemon.signal(signal.SIGTERM)
        await asyncio.to_thread(daemon.wait_for_log, '"event":"draining"')
        daemon.signal(signal.SIGTERM)
        status = await asyncio.to_thread(daemon.wait, 10.0)
        gate.touch()
        await steps
        return status

    assert asyncio.run(scenario()) != 0


def test_a_drain_delay_keeps_serving_while_readyz_says_503_and_a_second_signal_cuts_it(
    start_daemon: StartDaemon,
) -> None:
    """``--drain-delay``: after SIGTERM the daemon tells load balancers it is going
    (``/readyz`` 503) and serves what still reaches it; a second signal drains at once."""
    daemon = start_daemon("--drain-delay", "120")
    with daemon.client() as client:
        session_id = create(client)
        assert client.get("/readyz").status_code == 200
        daemon.signal(signal.SIGTERM)
        daemon.wait_for_log('"event":"drain_delay"')
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["type"].endswith(":draining")
        assert "still serving" in ready.json()["detail"]
        step = client.post(f"/v1/sessions/{session_id}/step", json={"input": "still"})
        assert step.status_code == 200, step.text
        assert client.get("/healthz").status_code == 200
    assert not any('"event":"draining"' in line for line in daemon.log_lines())
    daemon.signal(signal.SIGTERM)  # the second: no more waiting
    daemon.wait_for_log('"event":"draining"')
    assert daemon.wait(30) == 0, daemon.log_tail()


def test_a_drain_delay_ends_by_itself_then_the_daemon_drains_and_exits_0(
    start_daemon: StartDaemon,
) -> None:
    daemon = start_daemon("--drain-delay", "1")
    daemon.signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert daemon.wait(30) == 0, daemon.log_tail()
    assert time.monotonic() - signalled >= 1.0
    lines = daemon.log_lines()
    delay = next(i for i, line in enumerate(lines) if '"event":"drain_delay"' in line)
    drain = next(i for i, line in enumerate(lines) if '"event":"draining"' in line)
    assert delay < drain
