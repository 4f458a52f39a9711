"""A daemon SIGKILLed under load 20 times loses no acknowledged step.

16 asyncio clients step 64 echo sessions (whose task counts every step in
context key ``count``) and record, per session, every 200 they got and every
request that was sent but never answered. Each load phase ends with a SIGKILL
at a random point; the daemon is then started again on the same data. After
the last restart every session must be readable, and its stored count must lie
between the acknowledged steps and those plus the unanswered ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
from fault_harness import Daemon, RawHttp, StartDaemon, create, stored_counts

SESSIONS = 64
CLIENTS = 16
RESTARTS = 20
FIRST_ACK_TIMEOUT = 15.0
PHASE_MAX_SECONDS = 1.0  # of load after the phase's first ack
PHASE_ACKS = (50, 600)  # each phase is killed after a random number of acks in this range
REQUEST_TIMEOUT = 15.0


@dataclass
class Ledger:
    """What the clients saw, per session."""

    acked: Counter[str] = field(default_factory=Counter)
    unanswered: Counter[str] = field(default_factory=Counter)
    not_sent: int = 0
    refused: Counter[int] = field(default_factory=Counter)
    phase_acks: int = 0
    phases_killed_in_flight: int = 0


async def _client(
    daemon: Daemon,
    session_ids: list[str],
    ledger: Ledger,
    stop: asyncio.Event,
    first: asyncio.Event,
    target: asyncio.Event,
    target_acks: int,
    rng: random.Random,
) -> None:
    """Step random sessions until ``stop`` is set or the daemon is gone."""
    http = RawHttp(daemon.port)
    try:
        await http.connect()
    except OSError:
        ledger.not_sent += 1  # no connection, so no request reached the daemon
        return
    try:
        while not stop.is_set():
            session_id = rng.choice(session_ids)
            try:
                status, _ = await asyncio.wait_for(
                    http.request("POST", f"/v1/sessions/{session_id}/step", {"input": "x"}),
                    REQUEST_TIMEOUT,
                )
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                ledger.unanswered[session_id] += 1  # sent; it may or may not have committed
                return
            if status == 200:
                ledger.acked[session_id] += 1
                ledger.phase_acks += 1
                first.set()
                if ledger.phase_acks >= target_acks:
                    target.set()
            else:
                ledger.refused[status] += 1
    finally:
        await http.close()


async def _load_phase(daemon: Daemon, session_ids: list[str], ledger: Ledger, seed: int) -> None:
    """Run the clients until a random number of acks (or the time bound), then SIGKILL."""
    rng = random.Random(seed)
    stop = asyncio.Event()
    first = asyncio.Event()
    target = asyncio.Event()
    ledger.phase_acks = 0
    unanswered_before = sum(ledger.unanswered.values())
    clients = [
        asyncio.create_task(
            _client(
                daemon,
                session_ids,
                ledger,
                stop,
                first,
                target,
                rng.randint(*PHASE_ACKS),
                random.Random(rng.random()),
            )
        )
        for _ in range(CLIENTS)
    ]
    await asyncio.wait_for(first.wait(), FIRST_ACK_TIMEOUT)
    with contextlib.suppress(TimeoutError):  # a slow phase is killed at its time bound instead
        await asyncio.wait_for(target.wait(), PHASE_MAX_SECONDS)
    daemon.kill()  # with requests in flight: that is the point
    stop.set()
    await asyncio.wait_for(asyncio.gather(*clients), REQUEST_TIMEOUT + 5)
    if sum(ledger.unanswered.values()) > unanswered_before:
        ledger.phases_killed_in_flight += 1


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_under_load_loses_no_acknowledged_step(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    with daemon.client() as client:
        session_ids = [create(client) for _ in range(SESSIONS)]
    ledger = Ledger()
    started = time.monotonic()
    for restart in range(RESTARTS):
        if restart:
            daemon.start()
        asyncio.run(_load_phase(daemon, session_ids, ledger, seed=restart))
    daemon.start()
    with daemon.client() as client:
        served = {}
        for session_id in session_ids:
            response = client.get(f"/v1/sessions/{session_id}")
            assert response.status_code == 200, response.text
            served[session_id] = response.json()
    assert daemon.terminate() == 0, daemon.log_tail()
    stored = stored_counts(daemon.db_path, session_ids)
    elapsed = time.monotonic() - started

    acked_total = sum(ledger.acked.values())
    unanswered_total = sum(ledger.unanswered.values())
    print(
        f"\ncrash loop: {RESTARTS} SIGKILLs in {elapsed:.1f} s, {acked_total} steps acked, "
        f"{unanswered_total} unanswered ({ledger.phases_killed_in_flight} kills with steps "
        f"in flight), {ledger.not_sent} not sent, refused {dict(ledger.refused)}"
    )
    assert acked_total >= RESTARTS * 10, "the load phases did too little"
    assert ledger.phases_killed_in_flight >= RESTARTS // 2, "too few kills hit steps in flight"
    assert not ledger.refused, f"steps refused with statuses {dict(ledger.refused)}"
    for session_id in session_ids:
        acked = ledger.acked[session_id]
        bound = acked + ledger.unanswered[session_id]
        assert served[session_id]["context"].get("count", 0) == stored[session_id]
        assert served[session_id]["revision"] == stored[session_id]
        assert acked <= stored[session_id] <= bound, (
            f"session {session_id}: stored {stored[session_id]} steps, "
            f"{acked} acknowledged, {ledger.unanswered[session_id]} unanswered"
        )
