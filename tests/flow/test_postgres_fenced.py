"""Leases and fencing in PostgreSQL: one live copy per session, stale epochs refused by the
database in the commit's own transaction."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from testkit import wait_until

from flow._context import Context
from flow._session import Session, SessionMetadata, SessionStatus
from flow.stores._fenced import FencedStore
from flow.stores._lease import Lease, LeaseHeldElsewhere, LeaseLost
from flow.stores._postgres import PostgresStore
from flow.stores._postgres_lease import PostgresLeaseManager

pytestmark = pytest.mark.postgres

TTL = 1.0


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
    store = PostgresStore(url)
    leases = PostgresLeaseManager(
        store.pool, store.where, node, f"http://{node}", TTL, in_use=in_use
    )
    return FencedStore(store, leases)


@pytest.fixture
def nodes(postgres_url: str) -> Iterator[tuple[FencedStore, FencedStore]]:
    a = fenced(postgres_url, "a", in_use=lambda _: True)
    b = fenced(postgres_url, "b", in_use=lambda _: True)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_loading_takes_the_lease_and_another_node_is_told_where_the_session_lives(
    nodes: tuple[FencedStore, FencedStore],
) -> None:
    a, b = nodes
    a.save(make_session("s1"), None).result(timeout=5)
    assert a.leases.lease_for("s1") is None
    assert a.load("s1") is not None
    assert a.leases.lease_for("s1") is not None
    with pytest.raises(LeaseHeldElsewhere) as info:
        b.load("s1")
    assert (info.value.holder.node_id, info.value.holder.advertise) == ("a", "http://a")
    assert 0 < info.value.holder.expires_in <= TTL
    assert b.load("missing") is None
    assert b.leases.holder("missing") is None


def test_a_save_without_a_lease_is_refused(nodes: tuple[FencedStore, FencedStore]) -> None:
    a, b = nodes
    a.save(make_session("s1"), None).result(timeout=5)
    assert a.load("s1") is not None
    with pytest.raises(LeaseLost, match="holds no lease"):
        b.save(make_session("s1", 1), 0).result(timeout=5)
    stored = a.inner.load("s1")
    assert stored is not None
    assert stored.revision == 0


def test_a_paused_holders_late_write_is_refused_by_the_database(
    nodes: tuple[FencedStore, FencedStore],
) -> None:
    a, b = nodes
    a.save(make_session("s1"), None).result(timeout=5)
    assert a.load("s1") is not None
    lease = a.leases.lease_for("s1")
    assert lease is not None
    a.leases.close(release=False)  # a stops renewing, as if SIGSTOPped
    wait_until(lambda: a.leases.holder("s1") is None, timeout=10)
    assert b.load("s1") is not None
    b.save(make_session("s1", 1), 0).result(timeout=5)
    with pytest.raises(LeaseLost) as info:
        a.inner.save(make_session("s1", 2), 1, fence=lease.fence).result(timeout=5)
    assert info.value.epoch == lease.epoch
    assert info.value.current is not None
    assert info.value.current > lease.epoch
    stored = b.inner.load("s1")
    assert stored is not None
    assert stored.revision == 1


def test_fencing_off_a_grant_refuses_its_saves_and_epochs_survive_a_delete(
    nodes: tuple[FencedStore, FencedStore],
) -> None:
    a, b = nodes
    a.save(make_session("s1"), None).result(timeout=5)
    assert a.load("s1") is not None
    holder = b.leases.holder("s1")
    assert holder is not None
    assert holder.node_id == "a"
    assert b.leases.fence_off(holder) is True
    assert b.leases.holder("s1") is None
    with pytest.raises(LeaseLost):
        a.save(make_session("s1", 1), 0).result(timeout=5)
    assert b.load("s1") is not None
    newer = b.leases.lease_for("s1")
    assert newer is not None
    assert newer.epoch > holder.epoch
    assert b.leases.fence_off(holder) is False  # a newer grant holds it: nothing to do
    assert b.delete("s1") is True
    with psycopg.connect(str(b.inner.url)) as conn:
        row = conn.execute("SELECT epoch FROM leases WHERE session_id = 's1'").fetchone()
    assert row is not None
    assert row[0] >= newer.epoch


def test_a_lease_no_longer_in_use_is_released_and_a_taken_one_is_reported_lost(
    postgres_url: str,
) -> None:
    live: set[str] = set()
    lost: list[str] = []
    a = fenced(postgres_url, "a", in_use=live.__contains__)
    b = fenced(postgres_url, "b", in_use=lambda _: True)
    a.leases.on_lost = lambda lease, reason: lost.append(f"{lease.name}:{reason}")
    try:
        for sid in ("kept", "idle"):
            a.save(make_session(sid), None).result(timeout=5)
            assert a.load(sid) is not None
        live.add("kept")
        wait_until(lambda: a.leases.holder("idle") is None, timeout=10)
        assert b.load("idle") is not None
        with pytest.raises(LeaseHeldElsewhere):
            b.load("kept")
        kept = a.leases.lease_for("kept")
        assert kept is not None
        holder = b.leases.holder("kept")
        assert holder is not None
        b.leases.fence_off(holder)
        assert b.load("kept") is not None
        assert a.leases.renew_all() == [kept]
        assert lost == ["kept:lapsed"] or lost == ["kept:taken"]
        assert a.leases.lost_lease("kept") == kept
    finally:
        a.close()
        b.close()


def test_a_renewal_locks_its_leases_in_id_order_so_a_writers_fence_check_never_deadlocks(
    postgres_url: str,
) -> None:
    """A writer's batch holds its fences ``FOR SHARE``, taken in id order. A renewal that
    walked the rows in another order could hold one the writer is about to take while it
    waits for one the writer holds: the server would fail one side after a second."""
    store = PostgresStore(postgres_url)
    leases = PostgresLeaseManager(store.pool, store.where, "a", "http://a", 60.0)
    try:
        with psycopg.connect(postgres_url, autocommit=True) as setup:
            for sid in ("s3", "s1", "s2"):  # stored out of id order
                setup.execute(
                    "INSERT INTO leases VALUES (%s, 'a', 'http://a', 1, now() + interval '1 min')",
                    (sid,),
                )
        held = [Lease(sid, "a", "http://a", 1) for sid in ("s3", "s2", "s1")]
        with (
            psycopg.connect(postgres_url) as writer,
            psycopg.connect(postgres_url, autocommit=True) as watcher,  # fresh statistics
        ):
            writer.execute("SELECT 1 FROM leases WHERE session_id = 's2' FOR SHARE")
            renewed: list[list[int]] = []
            renewal = threading.Thread(target=lambda: renewed.append(leases._renew_many(held)))
            renewal.start()

            def renewal_waits() -> bool:
                row = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%%UPDATE leases%%'"
                ).fetchone()
                return row is not None and row[0] == 1

            wait_until(renewal_waits, timeout=10, what="the renewal waiting for s2")
            # the renewal holds s1 at most: the writer takes s3, the next in its order, at
            # once (a renewal holding s3 makes it wait, a deadlock)
            writer.execute("SET lock_timeout = '250ms'")
            writer.execute("SELECT 1 FROM leases WHERE session_id = 's3' FOR SHARE")
            writer.commit()
            renewal.join(10)
        assert renewed == [[1, 1, 1]]
    finally:
        store.close()
