"""The client against a real daemon behind a fault-injecting proxy (client_harness.FaultProxy).

Until the daemon honours ``Idempotency-Key``, the client must never replay a
step that may have run: a step whose request was reset or whose answer was
dropped fails with ``DaemonUnavailable(maybe_applied=True)``, and the session's
count is exactly the steps that succeeded plus those the daemon answered but
the proxy dropped. (Exactly-once through the same faults comes with the
server's idempotency keys.)
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import stamina.instrumentation
from client_harness import Daemon, Fault, FaultProxy
from testkit import free_port

from runtime.client import AsyncClient, Client, DaemonUnavailable, RetryPolicy

FAST = RetryPolicy(deadline=10.0, wait_initial=0.01, wait_max=0.1, wait_jitter=0.0)
SESSIONS = 10
STEPS_PER_SESSION = 100  # 1,000 steps: 20% of answers dropped, 5% of requests reset
SESSION_IN_PATH = re.compile(rb"^POST /v1/sessions/([^/ ]+)/step ")


def _session_of(request: bytes) -> str:
    found = SESSION_IN_PATH.match(request)
    return found[1].decode() if found else ""


@pytest.fixture
def direct(daemon: Daemon) -> Iterator[Client]:
    """A client straight to the daemon, to read what really happened."""
    with Client(daemon.url) as c:
        yield c


def test_steps_through_resets_and_dropped_answers_are_never_applied_twice(
    daemon: Daemon, direct: Client
) -> None:
    dice = random.Random(15)
    lock = threading.Lock()

    def plan(request: bytes) -> Fault:
        if not SESSION_IN_PATH.match(request):
            return Fault.PASS
        with lock:
            roll = dice.random()
        return Fault.DROP if roll < 0.20 else Fault.RESET if roll < 0.25 else Fault.PASS

    proxy = FaultProxy(daemon.port, plan).start()
    sessions = [direct.create_session("echo") for _ in range(SESSIONS)]
    ok: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    outcomes: list[bool] = []

    def drive(client: Client, sid: str) -> None:
        for n in range(STEPS_PER_SESSION):
            try:
                client.step(sid, n)
                with lock:
                    ok[sid] += 1
            except DaemonUnavailable as exc:
                with lock:
                    failed[sid] += 1
                    outcomes.append(exc.maybe_applied)

    try:
        with Client(proxy.url, retry=FAST) as client, ThreadPoolExecutor(SESSIONS) as pool:
            for future in [pool.submit(drive, client, sid) for sid in sessions]:
                future.result()
    finally:
        proxy.stop()
    dropped = Counter(_session_of(request) for request in proxy.dropped)
    assert proxy.counts[Fault.DROP] > 100
    assert proxy.counts[Fault.RESET] > 0
    assert all(outcomes), "a failure after the request was sent must say it may have run"
    for sid in sessions:
        assert ok[sid] + failed[sid] == STEPS_PER_SESSION
        count = direct.get_session(sid).context["count"]
        assert count == ok[sid] + dropped[sid], (sid, ok[sid], dropped[sid])


def test_reads_and_deletes_are_retried_through_lost_connections(
    daemon: Daemon, direct: Client
) -> None:
    seen: Counter[bytes] = Counter()
    lock = threading.Lock()

    def plan(request: bytes) -> Fault:
        method = request.split(b" ", 1)[0]
        with lock:
            seen[method] += 1
            first = seen[method] == 1
        if method == b"GET" and first:
            return Fault.RESET
        if method == b"DELETE" and first:
            return Fault.DROP  # the daemon deletes it; the client never hears so
        return Fault.PASS

    sid = direct.create_session("echo")
    direct.step(sid, "x")
    proxy = FaultProxy(daemon.port, plan).start()
    try:
        with Client(proxy.url, retry=FAST) as client:
            assert client.get_session(sid).context["count"] == 1
            client.delete_session(sid)
    finally:
        proxy.stop()
    assert seen[b"GET"] == 2
    assert seen[b"DELETE"] == 2
    assert proxy.counts[Fault.DROP] == 1
    assert all(info.session_id != sid for info in direct.list_sessions().items)


def test_a_refused_connection_is_retried_until_the_daemon_listens(
    daemon: Daemon, direct: Client
) -> None:
    sid = direct.create_session("echo")
    port = free_port()
    retried = threading.Event()
    hooks = stamina.instrumentation.get_on_retry_hooks()
    stamina.instrumentation.set_on_retry_hooks([*hooks, lambda details: retried.set()])
    try:
        with (
            Client(f"http://127.0.0.1:{port}", retry=FAST) as client,
            ThreadPoolExecutor(1) as pool,
        ):
            future = pool.submit(client.step, sid, "late")
            assert retried.wait(10), "the client did not retry the refused connection"
            proxy = FaultProxy(daemon.port, lambda request: Fault.PASS, port=port).start()
            try:
                assert future.result(timeout=20).response == "echo: late"
            finally:
                proxy.stop()
    finally:
        stamina.instrumentation.set_on_retry_hooks(hooks)
    assert direct.get_session(sid).context["count"] == 1


def test_the_async_client_meets_the_same_faults_the_same_way(
    daemon: Daemon, direct: Client
) -> None:
    faults = iter([Fault.RESET, Fault.PASS, Fault.DROP, Fault.PASS])

    def plan(request: bytes) -> Fault:
        return next(faults, Fault.PASS)

    sid = direct.create_session("echo")
    proxy = FaultProxy(daemon.port, plan).start()

    async def scenario() -> bool:
        async with AsyncClient(proxy.url, retry=FAST) as client:
            view = await client.get_session(sid)  # reset once, then read
            assert view.revision == 0
            try:
                await client.step(sid, "x")  # answered by the daemon, dropped by the proxy
            except DaemonUnavailable as exc:
                return exc.maybe_applied
            return False

    try:
        maybe_applied = asyncio.run(scenario())
    finally:
        proxy.stop()
    assert maybe_applied is True
    assert proxy.counts == {Fault.RESET: 1, Fault.PASS: 1, Fault.DROP: 1}
    assert direct.get_session(sid).context["count"] == 1
