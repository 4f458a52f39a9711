"""Leases with fencing epochs, two LeaseManagers on one real redis-server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from testkit import wait_until

from flow._context import Context
from flow._errors import StoreUnavailable
from flow._session import Session, SessionMetadata, SessionStatus
from flow.stores._lease import CHUNK, EpochPinned, Holder, Lease, LeaseLost, LeaseManager
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


def take_over(manager: LeaseManager, session_id: str) -> Lease:
    """Acquire ``session_id`` as soon as its current holder's lease runs out."""

    def attempt() -> Lease | None:
        result = manager.acquire(session_id)
        return result if isinstance(result, Lease) else None

    lease: Lease = wait_until(attempt)
    return lease


@pytest.fixture
def managers(redis_url: str) -> Iterator[tuple[LeaseManager, LeaseManager]]:
    a = LeaseManager(redis_url, "node-a", "http://a:8700", TTL)
    b = LeaseManager(redis_url, "node-b", "http://b:8700", TTL)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_a_lease_has_one_holder_and_others_learn_who(
    managers: tuple[LeaseManager, LeaseManager],
) -> None:
    a, b = managers
    lease = a.acquire("s1")
    assert isinstance(lease, Lease)
    assert (lease.node_id, lease.advertise, lease.fence) == ("node-a", "http://a:8700", ("s1", 1))
    seen = b.acquire("s1")
    assert isinstance(seen, Holder)
    assert (seen.node_id, seen.advertise, seen.epoch) == ("node-a", "http://a:8700", 1)
    assert 0 < seen.expires_in <= TTL
    holder = b.holder("s1")
    assert holder is not None
    assert (holder.node_id, holder.advertise, holder.epoch) == ("node-a", "http://a:8700", 1)
    assert b.held() == []
    assert a.held() == [lease]


def test_concurrent_acquires_grant_exactly_one_lease(redis_url: str) -> None:
    nodes = [LeaseManager(redis_url, f"node-{i}", f"http://{i}", 5.0) for i in range(8)]
    try:
        start = threading.Barrier(len(nodes))
        results: list[Lease | Holder] = []

        def take(manager: LeaseManager) -> None:
            start.wait()
            results.append(manager.acquire("hot"))

        threads = [threading.Thread(target=take, args=(m,)) for m in nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        granted = [r for r in results if isinstance(r, Lease)]
        assert len(results) == 8
        assert len(granted) == 1
        assert all(r.node_id == granted[0].node_id for r in results)
    finally:
        for m in nodes:
            m.close()


def test_epoch_grows_when_another_node_takes_over_after_expiry(
    managers: tuple[LeaseManager, LeaseManager],
) -> None:
    a, b = managers
    first = a.acquire("s1")
    assert isinstance(first, Lease)
    a.close(release=False)  # a stops renewing, as if it died
    second = take_over(b, "s1")
    assert second.epoch > first.epoch
    holder = b.holder("s1")
    assert holder is not None
    assert (holder.node_id, holder.epoch) == ("node-b", second.epoch)


def test_renewal_keeps_a_lease_alive_past_its_ttl(
    managers: tuple[LeaseManager, LeaseManager],
) -> None:
    a, b = managers
    lease = a.acquire("s1")
    assert isinstance(lease, Lease)
    until = time.monotonic() + TTL * 2.5
    while time.monotonic() < until:
        holder = b.acquire("s1")
        assert isinstance(holder, Holder), "the lease lapsed although it was being renewed"
        assert holder.epoch == lease.epoch
        time.sleep(0.02)  # sampling the lease over two and a half ttls
    assert a.held() == [lease]


def test_renew_all_renews_every_lease_in_chunked_calls(redis_url: str) -> None:
    count = CHUNK * 2 + 7
    manager = LeaseManager(redis_url, "node-a", "http://a", 60.0)
    client = redis.Redis.from_url(redis_url)
    try:
        leases = [manager.acquire(f"s{i}") for i in range(count)]
        assert all(isinstance(lease, Lease) for lease in leases)
        for i in range(count):  # 10 s: a loaded machine must not expire one before renew_all
            client.pexpire(f"actorflow:lease:s{i}", 10_000)
        client.delete("actorflow:lease:s5")  # one of them was lost meanwhile
        assert [lease.name for lease in manager.renew_all()] == ["s5"]
        ttls = [client.pttl(f"actorflow:lease:s{i}") for i in range(count) if i != 5]
        assert min(ttls) > 50_000
        assert len(manager.held()) == count - 1
    finally:
        client.close()
        manager.close()


def test_stale_epoch_save_is_refused_by_the_store(
    redis_url: str, managers: tuple[LeaseManager, LeaseManager]
) -> None:
    a, b = managers
    with RedisStore(redis_url) as store:
        old = a.acquire("s1")
        assert isinstance(old, Lease)
        store.save(make_session("s1"), None, fence=old.fence).result(timeout=5)
        a.close(release=False)  # a is paused: its lease runs out
        new = take_over(b, "s1")
        with pytest.raises(LeaseLost) as info:
            store.save(make_session("s1", 1), 0, fence=old.fence).result(timeout=5)
        assert (info.value.epoch, info.value.current) == (old.epoch, new.epoch)
        assert isinstance(info.value, StoreUnavailable)
        store.save(make_session("s1", 1), 0, fence=new.fence).result(timeout=5)
        loaded = store.load("s1")
        assert loaded is not None
        assert loaded.revision == 1


def test_losing_a_lease_to_another_node_is_reported(
    redis_url: str, managers: tuple[LeaseManager, LeaseManager]
) -> None:
    a, b = managers
    lost: list[tuple[Lease, str]] = []
    reported = threading.Event()

    def on_lost(lease: Lease, reason: str) -> None:
        lost.append((lease, reason))
        reported.set()

    a.on_lost = on_lost
    lease = a.acquire("s1")
    assert isinstance(lease, Lease)
    redis.Redis.from_url(redis_url).delete("actorflow:lease:s1")  # as if it had expired
    assert isinstance(b.acquire("s1"), Lease)
    assert reported.wait(5)
    assert lost == [(lease, "taken")]
    assert a.held() == []
    assert a.renew(lease) is False


def test_a_lease_that_cannot_be_renewed_is_reported_lost_after_its_ttl(
    redis_server: Any,
) -> None:
    reported = threading.Event()
    manager = LeaseManager(
        redis_server.url, "node-a", "http://a", TTL, on_lost=lambda lease, reason: reported.set()
    )
    try:
        assert isinstance(manager.acquire("s1"), Lease)
        redis_server.stop()
        stopped = time.monotonic()
        assert reported.wait(5)
        assert time.monotonic() - stopped < TTL + 1.5
        assert manager.held() == []
        with pytest.raises(StoreUnavailable):
            manager.acquire("s2")
    finally:
        manager.close()


def test_release_frees_the_lease_for_another_node(
    managers: tuple[LeaseManager, LeaseManager],
) -> None:
    a, b = managers
    lease = a.acquire("s1")
    assert isinstance(lease, Lease)
    assert a.release(lease) is True
    assert a.release(lease) is False
    taken = b.acquire("s1")
    assert isinstance(taken, Lease)
    assert taken.epoch == lease.epoch + 1


def test_acquiring_again_fences_the_older_grant_of_the_same_node(
    managers: tuple[LeaseManager, LeaseManager],
) -> None:
    a, _ = managers
    first = a.acquire("s1")
    second = a.acquire("s1")
    assert isinstance(first, Lease)
    assert isinstance(second, Lease)
    assert second.epoch == first.epoch + 1
    assert a.lease_for("s1") == second
    assert a.renew(second) is True


def test_acquire_reading_leases_only_what_exists_and_reads_it_in_the_same_call(
    redis_url: str, managers: tuple[LeaseManager, LeaseManager]
) -> None:
    a, b = managers
    client = redis.Redis.from_url(redis_url)
    assert a.acquire_reading("s1", "doc:s1", "body") == (None, None)
    assert a.holder("s1") is None
    client.hset("doc:s1", "body", b"\x00payload")
    lease, value = a.acquire_reading("s1", "doc:s1", "body")
    assert isinstance(lease, Lease)
    assert value == b"\x00payload"
    holder, nothing = b.acquire_reading("s1", "doc:s1", "body")
    assert isinstance(holder, Holder)
    assert (holder.node_id, nothing) == ("node-a", None)
    client.close()


def test_a_lease_that_lapsed_with_nobody_taking_it_is_reported_lapsed_not_taken(
    redis_url: str, managers: tuple[LeaseManager, LeaseManager]
) -> None:
    a, b = managers
    reasons: list[str] = []
    a.on_lost = lambda lease, reason: reasons.append(reason)
    lapsed, taken = a.acquire("s1"), a.acquire("s2")
    assert isinstance(lapsed, Lease)
    assert isinstance(taken, Lease)
    client = redis.Redis.from_url(redis_url)
    client.delete("actorflow:lease:s1", "actorflow:lease:s2")  # as if a had been paused
    client.close()
    assert isinstance(b.acquire("s2"), Lease)
    assert sorted(a.renew_all(), key=lambda x: x.name) == [lapsed, taken]
    assert sorted(reasons) == ["lapsed", "taken"]


def test_a_fenced_off_grant_can_commit_nothing_even_when_nobody_took_the_lease(
    redis_url: str, managers: tuple[LeaseManager, LeaseManager]
) -> None:
    a, b = managers
    store = RedisStore(redis_url)
    try:
        store.save(make_session("s1"), None).result(timeout=5)
        lease = a.acquire("s1")
        assert isinstance(lease, Lease)
        holder = b.holder("s1")
        assert holder is not None
        assert b.fence_off(holder) is True
        assert b.holder("s1") is None  # revoked, and nobody was granted it
        with pytest.raises(LeaseLost):
            store.save(make_session("s1", 1), 0, fence=lease.fence).result(timeout=5)
        assert b.fence_off(holder) is True  # idempotent: still fenced
        newer = b.acquire("s1")
        assert isinstance(newer, Lease)
        assert newer.epoch > lease.epoch + 1
        assert a.fence_off(holder) is False  # a newer grant holds it: left alone
        assert b.lease_for("s1") == newer
        store.save(make_session("s1", 1), 0, fence=newer.fence).result(timeout=5)
    finally:
        store.close()


def test_a_session_bound_to_an_epoch_is_never_granted_another_here(
    redis_url: str, managers: tuple[LeaseManager, LeaseManager]
) -> None:
    a, _ = managers
    lease = a.acquire("s1")
    assert isinstance(lease, Lease)
    assert a.bind("s1", lease.epoch + 1) is False  # not the grant held
    assert a.bind("s1", lease.epoch) is True
    assert a.bind("s1", lease.epoch) is True
    assert a.acquire("s1") == lease  # the bound grant, kept (no new epoch)
    redis.Redis.from_url(redis_url).delete("actorflow:lease:s1")  # the grant lapsed
    with pytest.raises(EpochPinned):
        a.acquire("s1")
    a.unbind("s1")
    with pytest.raises(EpochPinned):
        a.acquire("s1")
    a.unbind("s1")
    again = a.acquire("s1")
    assert isinstance(again, Lease)
    assert again.epoch == lease.epoch + 1
    assert a.bind("s1", lease.epoch) is False


def test_a_grant_not_renewed_within_its_ttl_cannot_be_bound(redis_url: str) -> None:
    # a process paused past its lease finds forwarded requests in its socket when it
    # resumes: it must refuse them before its renewal thread has even run
    manager = LeaseManager(redis_url, "paused", "", 0.3)
    try:
        manager._stop.set()  # no renewals from now on, as in a paused process
        lease = manager.acquire("s1")
        assert isinstance(lease, Lease)
        assert manager.bind("s1", lease.epoch) is True
        manager.unbind("s1")
        started = time.monotonic()

        def refused() -> bool:
            if manager.bind("s1", lease.epoch):
                manager.unbind("s1")
                return False
            return True

        wait_until(refused, what="the unrenewed grant refused")
        assert time.monotonic() - started >= 0.2
        assert manager.lease_for("s1") == lease  # still held as far as it knows
    finally:
        manager.close(release=False)
