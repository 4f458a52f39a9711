"""FencedStore: leases taken on load, every save fenced, unneeded leases released."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from testkit import wait_until

from flow._context import Context
from flow._session import Session, SessionMetadata, SessionStatus
from flow.stores._fenced import FencedStore
from flow.stores._lease import LeaseHeldElsewhere, LeaseLost, LeaseManager
from flow.stores._redis import RedisStore

pytestmark = pytest.mark.redis

TTL = 1.0  # long enough that a loaded machine does not starve renewals past it


def make_session(session_id: str, revision: int = 0) -> Session:
    now = time.time()
    return Session(
        session_id=session_id,
        graph_id="echo",
        graph_version="1",
        current_task="echo",
        status=SessionStatus.PAUSED,
        context=Context(),
        metadata=SessionMetadata("alice", now, now),
        revision=revision,
    )


def fenced(url: str, node: str, in_use: Callable[[str], bool] | None = None) -> FencedStore:
    store = RedisStore(url)
    leases = LeaseManager(store.client, node, f"http://{node}", TTL, in_use=in_use)
    return FencedStore(store, leases)


@pytest.fixture
def nodes(redis_url: str) -> Iterator[tuple[FencedStore, FencedStore]]:
    a = fenced(redis_url, "a", in_use=lambda _: True)
    b = fenced(redis_url, "b", in_use=lambda _: True)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_loading_a_session_takes_its_lease_and_other_nodes_cannot_load_it(
    nodes: tuple[FencedStore, FencedStore],
) -> None:
    a, b = nodes
    a.save(make_session("s1"), None).result(timeout=5)
    assert a.leases.lease_for("s1") is None  # a new session is leased on activation
    loaded = a.load("s1")
    assert loaded is not None
    assert loaded.revision == 0
    assert a.leases.lease_for("s1") is not None
    with pytest.raises(LeaseHeldElsewhere) as info:
        b.load("s1")
    assert (info.value.holder.node_id, info.value.holder.advertise) == ("a", "http://a")
    assert "live on node 'a' at http://a" in str(info.value)


def test_a_save_without_a_lease_is_refused(nodes: tuple[FencedStore, FencedStore]) -> None:
    a, b = nodes
    a.save(make_session("s1"), None).result(timeout=5)
    assert a.load("s1") is not None
    with pytest.raises(LeaseLost, match="holds no lease"):
        b.save(make_session("s1", 1), 0).result(timeout=5)
    stored = a.inner.load("s1")
    assert stored is not None
    assert stored.revision == 0


def test_a_paused_holder_cannot_write_after_another_node_took_over(
    nodes: tuple[FencedStore, FencedStore],
) -> None:
    a, b = nodes
    a.save(make_session("s1"), None).result(timeout=5)
    assert a.load("s1") is not None
    lease = a.leases.lease_for("s1")
    a.leases.close(release=False)  # a stops renewing, as if SIGSTOPped
    wait_until(lambda: a.leases.holder("s1") is None)
    taken = b.load("s1")
    assert taken is not None
    b.save(make_session("s1", 1), 0).result(timeout=5)
    # a resumes and writes with the lease it still believes it holds
    assert lease is not None
    with pytest.raises(LeaseLost) as info:
        a.inner.save(make_session("s1", 1), 0, fence=lease.fence).result(timeout=5)
    assert info.value.epoch == lease.epoch
    assert info.value.current is not None
    assert info.value.current > lease.epoch


def test_loading_a_missing_session_leaves_no_lease(nodes: tuple[FencedStore, FencedStore]) -> None:
    a, b = nodes
    assert a.load("nope") is None
    assert a.leases.lease_for("nope") is None
    assert b.leases.holder("nope") is None


def test_a_lease_no_longer_in_use_is_released(redis_url: str) -> None:
    live: set[str] = set()
    a = fenced(redis_url, "a", in_use=live.__contains__)
    b = fenced(redis_url, "b", in_use=lambda _: True)
    try:
        a.save(make_session("kept"), None).result(timeout=5)
        a.save(make_session("idle"), None).result(timeout=5)
        assert a.load("kept") is not None
        assert a.load("idle") is not None
        live.add("kept")
        wait_until(lambda: a.leases.holder("idle") is None, timeout=10)
        assert b.load("idle") is not None
        with pytest.raises(LeaseHeldElsewhere):
            b.load("kept")
    finally:
        a.close()
        b.close()


def test_delete_releases_the_lease(nodes: tuple[FencedStore, FencedStore]) -> None:
    a, b = nodes
    a.save(make_session("s1"), None).result(timeout=5)
    assert a.load("s1") is not None
    assert a.delete("s1") is True
    assert b.leases.holder("s1") is None
    assert b.load("s1") is None


def test_after_losing_its_lease_a_node_is_refused_by_redis_not_by_itself(
    nodes: tuple[FencedStore, FencedStore],
) -> None:
    a, b = nodes
    a.save(make_session("s1"), None).result(timeout=5)
    assert a.load("s1") is not None
    old = a.leases.lease_for("s1")
    assert old is not None
    a.inner.client.delete("actorflow:lease:s1")  # as if a had been paused past its ttl
    assert b.load("s1") is not None
    assert a.leases.renew_all() == [old]
    assert a.leases.lost_lease("s1") == old
    with pytest.raises(LeaseLost, match="granted since") as info:
        a.save(make_session("s1", 1), 0).result(timeout=5)
    assert info.value.epoch == old.epoch
