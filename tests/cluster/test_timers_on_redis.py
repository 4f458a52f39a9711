"""Two in-process runtimes on one Redis fire each durable timer once.

Sessions live in runtime ``a`` are refused by ``b`` (``LeaseHeldElsewhere``) and
fired by ``a``; passivated ones are fired by whichever runtime takes the lease
first. Both share one ManualClock, and both fire at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit import wait_until
from timer_graph import GRAPH

from flow.stores._redis import RedisStore
from runtime import Runtime, RuntimeConfig
from runtime.testing import ManualClock, wait_passivated

pytestmark = pytest.mark.redis


def open_node(tmp_path: Path, redis_url: str, name: str, clock: ManualClock) -> Runtime:
    config = RuntimeConfig(
        store=redis_url, node_id=name, advertise=f"http://{name}", lease_ttl=1.0, clock=clock
    )
    return Runtime.open(data_dir=tmp_path / name, graphs=[GRAPH], config=config)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(time.time())


@pytest.fixture
def nodes(tmp_path: Path, redis_url: str, clock: ManualClock) -> Iterator[tuple[Runtime, Runtime]]:
    with (
        open_node(tmp_path, redis_url, "a", clock) as a,
        open_node(tmp_path, redis_url, "b", clock) as b,
    ):
        yield a, b


def test_two_runtimes_on_redis_fire_each_timer_once(
    nodes: tuple[Runtime, Runtime], clock: ManualClock, redis_url: str
) -> None:
    a, b = nodes
    sids = [a.create_session("timers", owner="u") for _ in range(8)]
    for i, sid in enumerate(sids):
        a.step(sid, {"schedule": {"t": 10}})
        if i % 2:  # half passivated (either runtime may take them), half live in a
            assert a.passivate(sid)
            wait_passivated(a, sid)
    clock.advance(10)
    reader = RedisStore(redis_url)  # reads without taking leases

    def fired() -> list[list[str]]:
        sessions = [reader.load(sid) for sid in sids]
        return [s.context.get("fired", []) if s is not None else [] for s in sessions]

    def fire_on_both() -> bool:
        racers = [threading.Thread(target=rt.fire_due_timers) for rt in (a, b)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join()
        clock.advance(1)  # past the other runtime's retry of a session it found held
        return all(fired())

    try:
        wait_until(fire_on_both, timeout=20, what="every timer fired")
        assert fired() == [["t"]] * len(sids)
        assert reader.due_timers(float("inf")) == []
    finally:
        reader.close()
    figures = [rt.stats().timers for rt in (a, b)]
    assert sum(f.fired for f in figures if f is not None) == len(sids)
