"""The client against a real daemon behind a fault-injecting proxy (client_harness.FaultProxy).

The daemon honours ``Idempotency-Key``: once a step's answer says so
(``Idempotent-Replayed``), the client retries a step whose request was reset
or whose answer was dropped with the same key, and the daemon answers the
retry of a committed step from its key table. Every step then applies exactly
once. Before the client knows, it never replays a step that may have run: it
fails with ``DaemonUnavailable(maybe_applied=True)``.
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


def test_steps_through_resets_and_dropped_answers_apply_exactly_once(
    daemon: Daemon, direct: Client
) -> None:
    dice = random.Random(15)
    lock = threading.Lock()
    faults_on = threading.Event()  # once the client has seen that the daemon honours keys

    def plan(request: bytes) -> Fault:
        if not SESSION_IN_PATH.match(request) or not faults_on.is_set():
            return Fault.PASS
        with lock:
            roll = dice.random()
        return Fault.DROP if roll < 0.20 else Fault.RESET if roll < 0.25 else Fault.PASS

    proxy = FaultProxy(daemon.port, plan).start()
    client = Client(proxy.url, retry=FAST)
    sessions = [direct.create_session("echo") for _ in range(SESSIONS)]
    made: Counter[str] = Counter()
    failed: list[tuple[str, DaemonUnavailable]] = []
    revisions: dict[str, list[int]] = {sid: [] for sid in sessions}
    replayed: Counter[str] = Counter()

    def drive(sid: str) -> None:
        for n in range(STEPS_PER_SESSION):
            try:
                result = client.step(sid, n)
            except DaemonUnavailable as exc:
                with lock:
                    failed.append((sid, exc))
                continue
            with lock:
                made[sid] += 1
                revisions[sid].append(result.revision)
                replayed[sid] += result.replayed

    try:
        client.step(sessions[0], "first")  # learns that the daemon honours keys
        made[sessions[0]] += 1
        assert client.idempotent_server
        faults_on.set()
        with ThreadPoolExecutor(SESSIONS) as pool:
            for future in [pool.submit(drive, sid) for sid in sessions]:
                future.result()
    finally:
        client.close()
        proxy.stop()
    assert proxy.counts[Fault.DROP] > 100
    assert proxy.counts[Fault.RESET] > 0
    assert sum(replayed.values()) > 0, "no dropped answer was replayed from the key table"
    assert failed == [], "every step should succeed within the retry policy"
    for sid in sessions:
        view = direct.get_session(sid)
        # exactly the steps the client made, and none that it reported failed
        assert view.context["count"] == made[sid], (sid, made[sid])
        assert view.revision == made[sid]
        first = 1 if sid != sessions[0] else 2
        assert revisions[sid] == list(range(first, made[sid] + 1))


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
    faults = iter([Fault.RESET, Fault.PASS, Fault.DROP, Fault.PASS, Fault.DROP, Fault.PASS])

    def plan(request: bytes) -> Fault:
        return next(faults, Fault.PASS)

    sid = direct.create_session("echo")
    proxy = FaultProxy(daemon.port, plan).start()

    async def scenario() -> tuple[bool, bool]:
        async with AsyncClient(proxy.url, retry=FAST) as client:
            view = await client.get_session(sid)  # reset once, then read
            assert view.revision == 0
            try:
                await client.step(sid, "x")  # answered by the daemon, dropped by the proxy
            except DaemonUnavailable as exc:
                maybe_applied = exc.maybe_applied  # the client cannot know yet that keys work
            else:
                raise AssertionError("a dropped step was retried before keys were known")
            await client.step(sid, "y")  # its answer says the daemon honours keys
            retried = await client.step(sid, "z")  # dropped once, then replayed
            return maybe_applied, retried.replayed and retried.revision == 3

    try:
        maybe_applied, replayed = asyncio.run(scenario())
    finally:
        proxy.stop()
    assert maybe_applied is True
    assert replayed is True
    assert proxy.counts == {Fault.RESET: 1, Fault.PASS: 3, Fault.DROP: 2}
    assert direct.get_session(sid).context["count"] == 3
