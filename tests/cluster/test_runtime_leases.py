"""Two in-process runtimes on one store (``RuntimeConfig(store=...)``, Redis and
PostgreSQL): a session is live in one of them at a time, and moves once passivated."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_nodes import Backend
from structlog.testing import capture_logs
from testkit import wait_until

from flow.demo import echo
from flow.stores._lease import LeaseHeldElsewhere
from runtime import Runtime, RuntimeConfig, StoreUnavailable

LEASE_TTL = 1.0


def open_node(tmp_path: Path, url: str, name: str) -> Runtime:
    config = RuntimeConfig(store=url, node_id=name, advertise=f"http://{name}", lease_ttl=LEASE_TTL)
    return Runtime.open(data_dir=tmp_path / name, graphs=[echo], config=config)


@pytest.fixture
def nodes(tmp_path: Path, backend: Backend) -> Iterator[tuple[Runtime, Runtime]]:
    with open_node(tmp_path, backend.url, "a") as a, open_node(tmp_path, backend.url, "b") as b:
        yield a, b


def live_ids(rt: Runtime) -> set[str]:
    return {info.session_id for info in rt.live_sessions()}


def test_a_session_live_in_one_runtime_is_refused_by_the_other_with_its_holder(
    nodes: tuple[Runtime, Runtime],
) -> None:
    a, b = nodes
    sid = a.create_session("echo", owner="u")
    assert a.step(sid, "one").response == "echo: one"
    with pytest.raises(LeaseHeldElsewhere) as info:
        b.step(sid, "two")
    assert isinstance(info.value, StoreUnavailable)
    assert (info.value.holder.node_id, info.value.holder.advertise) == ("a", "http://a")
    assert live_ids(b) == set()


def test_a_passivated_session_moves_to_the_other_runtime(nodes: tuple[Runtime, Runtime]) -> None:
    a, b = nodes
    sid = a.create_session("echo", owner="u")
    a.step(sid, "one")
    assert a.passivate(sid) is True

    def step_on_b() -> bool:
        try:
            b.step(sid, "two")
        except LeaseHeldElsewhere:
            return False  # a has not released the lease yet (next renewal)
        return True

    wait_until(step_on_b)
    assert live_ids(b) == {sid}
    assert b.get_session(sid).context["count"] == 2


def test_losing_a_lease_kills_the_live_actor_and_says_so(
    nodes: tuple[Runtime, Runtime], backend: Backend
) -> None:
    a, b = nodes
    sid = a.create_session("echo", owner="u")
    a.step(sid, "one")
    assert live_ids(a) == {sid}
    with capture_logs() as logs:
        backend.drop_lease(sid)  # as if a had been paused past its ttl
        assert b.step(sid, "two").response == "echo: two"
        wait_until(lambda: live_ids(a) == set())
    lost = [e for e in logs if e["event"] == "session_lease_lost"]
    assert [e["session_id"] for e in lost] == [sid]
    with pytest.raises(LeaseHeldElsewhere):
        a.step(sid, "three")
    assert b.get_session(sid).context["count"] == 2


def test_a_lease_that_lapsed_with_nobody_taking_it_is_reported_as_lapsed(
    nodes: tuple[Runtime, Runtime], backend: Backend
) -> None:
    a, _ = nodes
    sid = a.create_session("echo", owner="u")
    a.step(sid, "one")
    with capture_logs() as logs:
        backend.drop_lease(sid)  # as if a had been paused past its ttl
        wait_until(lambda: live_ids(a) == set())
    lost = [e for e in logs if e["event"] == "session_lease_lost"]
    assert [(e["session_id"], e["reason"]) for e in lost] == [(sid, "lapsed")]
    assert "nobody took the lease over" in lost[0]["action"]
    assert a.step(sid, "two").response == "echo: two"  # activated again, here
