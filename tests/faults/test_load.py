"""Load: 10,000 sessions created and stepped with --max-live 1000.

32 asyncio clients (one keep-alive connection each) first create every session,
then step every one (so that nearly every step activates an evicted session from
the store). Meanwhile a monitor samples the daemon's VmRSS and
``actorflow_live_actors`` from /metrics. RSS must stay bounded, the live actors
must never exceed max_live, and every stored session must hold exactly the one
step it was sent.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx
import pytest
from fault_harness import Daemon, RawHttp, StartDaemon, metric, stored_counts

SESSIONS = 10_000
MAX_LIVE = 1000
CLIENTS = 32
SAMPLE_EVERY = 0.25
RSS_BOUND_MIB = 512  # generous: the daemon idles near 70 MiB and 1000 echo actors are small


@dataclass
class Samples:
    """What the monitor saw."""

    rss_max_kib: int = 0
    rss_first_kib: int = 0
    live_max: float = 0.0
    count: int = 0


async def _monitor(
    daemon: Daemon, client: httpx.AsyncClient, samples: Samples, done: asyncio.Event
) -> None:
    """Sample RSS and live actors until ``done`` is set."""
    samples.rss_first_kib = daemon.rss_kib()
    while not done.is_set():
        samples.rss_max_kib = max(samples.rss_max_kib, daemon.rss_kib())
        response = await client.get("/metrics")
        assert response.status_code == 200, response.text
        samples.live_max = max(samples.live_max, metric(response.text, "actorflow_live_actors"))
        samples.count += 1
        try:
            await asyncio.wait_for(done.wait(), SAMPLE_EVERY)
        except TimeoutError:
            continue  # time for the next sample


async def _create_all(daemon: Daemon, worker: int, ids: list[str]) -> None:
    async with RawHttp(daemon.port) as http:
        for index in range(worker, SESSIONS, CLIENTS):
            status, body = await http.request("POST", "/v1/sessions", {"graph": "echo"})
            assert status == 201, body
            ids[index] = body["session_id"]


async def _step_all(daemon: Daemon, worker: int, ids: list[str]) -> None:
    async with RawHttp(daemon.port) as http:
        for index in range(worker, SESSIONS, CLIENTS):
            path = f"/v1/sessions/{ids[index]}/step"
            status, body = await http.request("POST", path, {"input": index})
            assert status == 200, body
            assert body["response"] == f"echo: {index}"
            assert body["revision"] == 1


async def _load(daemon: Daemon) -> tuple[list[str], Samples, dict[str, float], str]:
    ids = [""] * SESSIONS
    samples = Samples()
    seconds = {}
    done = asyncio.Event()
    async with daemon.async_client() as client:
        monitor = asyncio.create_task(_monitor(daemon, client, samples, done))
        try:
            for name, phase in (("create", _create_all), ("step", _step_all)):
                started = time.monotonic()
                await asyncio.gather(*(phase(daemon, w, ids) for w in range(CLIENTS)))
                seconds[name] = time.monotonic() - started
        finally:
            done.set()
            await monitor
        final = (await client.get("/metrics")).text
    return ids, samples, seconds, final


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_ten_thousand_sessions_with_max_live_1000_stay_bounded_and_correct(
    start_daemon: StartDaemon,
) -> None:
    daemon = start_daemon("--max-live", str(MAX_LIVE))
    ids, samples, seconds, final = asyncio.run(_load(daemon))
    rss_end_kib = daemon.rss_kib()
    assert daemon.terminate() == 0, daemon.log_tail()
    print(
        f"\nload: {SESSIONS} sessions created in {seconds['create']:.1f} s "
        f"({SESSIONS / seconds['create']:.0f}/s), stepped in {seconds['step']:.1f} s "
        f"({SESSIONS / seconds['step']:.0f}/s); VmRSS {samples.rss_first_kib // 1024} MiB "
        f"at start, max {samples.rss_max_kib // 1024} MiB, {rss_end_kib // 1024} MiB at the end; "
        f"live actors max {samples.live_max:.0f} over {samples.count} samples; "
        f"evictions {metric(final, 'actorflow_evictions_total'):.0f}"
    )
    assert len(set(ids)) == SESSIONS
    assert samples.count >= 2
    assert samples.live_max <= MAX_LIVE
    assert metric(final, "actorflow_live_actors") <= MAX_LIVE
    assert metric(final, "actorflow_evictions_total") > 0, "max_live was never reached"
    assert max(samples.rss_max_kib, rss_end_kib) < RSS_BOUND_MIB * 1024
    counts = stored_counts(daemon.db_path, ids)
    wrong = {sid: count for sid, count in counts.items() if count != 1}
    assert not wrong, f"{len(wrong)} sessions do not hold their one step: {list(wrong.items())[:5]}"
