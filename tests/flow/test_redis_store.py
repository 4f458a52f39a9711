"""RedisStore against a real redis-server: CAS in Lua, TTL, order, group commit, outages."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest
import redis
from testkit import wait_until

from flow._context import Context
from flow._errors import RevisionConflict, SnapshotDecodeError, StoreUnavailable
from flow._session import Session, SessionMetadata, SessionStatus
from flow.stores._redis import _WRITE, RedisStore

pytestmark = pytest.mark.redis


def make_session(
    session_id: str, *, owner: str = "alice", revision: int = 0, expires_at: float | None = None
) -> Session:
    now = time.time()
    context = Context()
    context.set("n", revision)
    return Session(
        session_id=session_id,
        graph_id="echo",
        graph_version="1",
        current_task="echo",
        status=SessionStatus.PAUSED,
        context=context,
        metadata=SessionMetadata(owner, now, now, revision, None, expires_at),
        revision=revision,
    )


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    with RedisStore(redis_url) as s:
        yield s


def test_saved_session_loads_back_equal(store: RedisStore) -> None:
    session = make_session("s1", expires_at=time.time() + 60)
    store.save(session, None).result(timeout=5)
    assert store.load("s1") == session
    assert store.load("missing") is None


def test_compare_and_set_refuses_a_stale_or_missing_revision(store: RedisStore) -> None:
    store.save(make_session("s1"), None).result(timeout=5)
    with pytest.raises(RevisionConflict) as info:
        store.save(make_session("s1", revision=1), None).result(timeout=5)
    assert (info.value.expected, info.value.actual) == (None, 0)
    with pytest.raises(RevisionConflict):
        store.save(make_session("s1", revision=5), 3).result(timeout=5)
    with pytest.raises(RevisionConflict) as info:
        store.save(make_session("new", revision=1), 0).result(timeout=5)
    assert info.value.actual is None
    loaded = store.load("s1")
    assert loaded is not None
    assert loaded.revision == 0


def test_two_writers_racing_on_one_revision_exactly_one_wins(redis_url: str) -> None:
    with RedisStore(redis_url) as a, RedisStore(redis_url) as b:
        for round_ in range(30):
            sid = f"race-{round_}"
            a.save(make_session(sid), None).result(timeout=5)
            outcomes = race_two_saves(sid, a, b)
            assert len(outcomes) == 2
            assert outcomes.count("conflict") == 1, outcomes
            winner = next(o for o in outcomes if o != "conflict")
            loaded = a.load(sid)
            assert loaded is not None
            assert (loaded.revision, loaded.metadata.owner) == (1, winner)


def race_two_saves(sid: str, a: RedisStore, b: RedisStore) -> list[str]:
    """Both stores save revision 1 of ``sid`` over revision 0 at the same moment."""
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def write(store: RedisStore, who: str) -> None:
        start.wait()
        try:
            store.save(make_session(sid, owner=who, revision=1), 0).result(timeout=5)
            outcomes.append(who)
        except RevisionConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=write, args=(s, w)) for s, w in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return outcomes


def test_replayed_save_after_a_dropped_reply_is_not_a_conflict(store: RedisStore) -> None:
    # redis-py retries a pipeline whose connection dropped; the replayed script
    # must recognise its own write instead of reporting a conflict.
    future: Future[Any] = Future()
    write = store._save_call(make_session("s1"), None, None, future)
    assert _WRITE.run(store.client, write.keys, write.args)[0] == b"ok"
    assert _WRITE.run(store.client, write.keys, write.args) == [b"ok"]  # recognised, not redone
    other: Future[Any] = Future()
    again = store._save_call(make_session("s1"), None, None, other)
    assert _WRITE.run(store.client, again.keys, again.args) == [b"conflict", b"0"]


def test_session_key_expires_at_the_sessions_expires_at(store: RedisStore) -> None:
    expires = time.time() + 100
    store.save(make_session("ttl", expires_at=expires), None).result(timeout=5)
    store.save(make_session("forever"), None).result(timeout=5)
    key_expiry_ms = store.client.pexpiretime("actorflow:s:ttl")
    assert abs(key_expiry_ms - expires * 1000) < 2
    assert store.client.pttl("actorflow:s:forever") == -1


def test_store_ttl_applies_to_sessions_without_expires_at(redis_url: str) -> None:
    with RedisStore(redis_url, ttl=50) as store:
        store.save(make_session("s1"), None).result(timeout=5)
        assert 45_000 < store.client.pttl("actorflow:s:s1") <= 50_000


def test_expired_session_disappears_from_load_list_and_count(store: RedisStore) -> None:
    # 2 s: long enough that both saves and the count below come first on a loaded machine
    store.save(make_session("short", expires_at=time.time() + 2.0), None).result(timeout=5)
    store.save(make_session("long", expires_at=time.time() + 60), None).result(timeout=5)
    assert store.count() == 2
    wait_until(lambda: store.load("short") is None)
    assert [i.session_id for i in store.list().items] == ["long"]
    assert [i.session_id for i in store.list("alice").items] == ["long"]
    assert store.count() == 1
    assert store.client.zscore("actorflow:ids", "short") is None


def test_expired_lists_ids_by_expires_at(store: RedisStore) -> None:
    now = time.time()
    for i, offset in enumerate([10, 20, 30]):
        store.save(make_session(f"s{i}", expires_at=now + offset), None)
    store.save(make_session("never"), None)
    store.flush()
    assert store.expired(now + 25) == ["s0", "s1"]
    assert store.expired(now + 100, limit=1) == ["s0"]
    assert store.expired(now) == []


def test_session_saved_already_expired_waits_for_the_sweep(store: RedisStore) -> None:
    # a manual clock can put expires_at in the past: the session stays until deleted
    store.save(make_session("old", expires_at=1000.0), None).result(timeout=5)
    assert store.load("old") is not None
    assert store.expired(2000.0) == ["old"]
    assert store.delete("old") is True
    assert store.expired(2000.0) == []
    assert store.count() == 0


def test_saves_of_one_session_commit_in_the_order_queued(store: RedisStore) -> None:
    futures = [store.save(make_session("s1"), None)]
    futures += [store.save(make_session("s1", revision=r), r - 1) for r in range(1, 300)]
    for f in futures:
        f.result(timeout=10)
    loaded = store.load("s1")
    assert loaded is not None
    assert loaded.revision == 299
    assert loaded.context.get("n") == 299


def test_queued_saves_are_group_committed_in_one_pipeline(
    store: RedisStore, redis_url: str
) -> None:
    admin = redis.Redis.from_url(redis_url)
    store.save(make_session("warm"), None).result(timeout=5)
    pipelines_before = store.pipelines
    admin.client_pause(400, all=True)  # the writer blocks on its first pipeline
    futures = [store.save(make_session(f"s{i}"), None) for i in range(200)]
    for f in futures:
        f.result(timeout=10)
    admin.close()
    assert store.pipelines - pipelines_before <= 3
    assert store.count() == 201


def test_flush_waits_for_every_queued_save(store: RedisStore) -> None:
    futures = [store.save(make_session(f"s{i}"), None) for i in range(100)]
    store.flush()
    assert all(f.done() for f in futures)
    assert store.count() == 100


def test_list_pages_by_id_per_owner_and_overall(store: RedisStore) -> None:
    for i in range(7):
        store.save(make_session(f"s{i}", owner="bob" if i % 2 else "alice"), None)
    store.flush()
    page = store.list(limit=3)
    assert [i.session_id for i in page.items] == ["s0", "s1", "s2"]
    assert page.next_cursor == "s2"
    page = store.list(cursor=page.next_cursor, limit=3)
    assert [i.session_id for i in page.items] == ["s3", "s4", "s5"]
    page = store.list(cursor=page.next_cursor, limit=3)
    assert [i.session_id for i in page.items] == ["s6"]
    assert page.next_cursor is None
    bob = store.list("bob")
    assert [i.session_id for i in bob.items] == ["s1", "s3", "s5"]
    info = bob.items[0]
    assert (info.owner, info.graph_id, info.current_task, info.status) == (
        "bob",
        "echo",
        "echo",
        "paused",
    )
    assert info.size == len(store.client.zrange("actorflow:b:s1", 0, 0)[0])


def test_delete_removes_the_session_and_its_index_entries(store: RedisStore) -> None:
    store.save(make_session("s1", owner="bob"), None)
    assert store.delete("s1") is True
    assert store.delete("s1") is False
    assert store.load("s1") is None
    assert store.list("bob").items == []
    assert store.count() == 0


def test_undecodable_snapshot_is_quarantined_not_deleted(store: RedisStore) -> None:
    store.save(make_session("bad"), None).result(timeout=5)
    store.put_raw("bad", b"\xc1not msgpack")
    with pytest.raises(SnapshotDecodeError) as info:
        store.load("bad")
    assert info.value.raw == b"\xc1not msgpack"
    assert "quarantine" in str(info.value)
    assert store.load("bad") is None
    assert store.count() == 0
    [row] = store.quarantined()
    assert (row.session_id, row.raw) == ("bad", b"\xc1not msgpack")
    assert "msgpack" in row.error


def test_key_prefix_separates_two_stores_on_one_database(redis_url: str) -> None:
    with RedisStore(redis_url, key_prefix="a:") as a, RedisStore(redis_url, key_prefix="b:") as b:
        a.save(make_session("s1"), None).result(timeout=5)
        assert b.load("s1") is None
        assert (a.count(), b.count()) == (1, 0)


def test_save_after_close_raises_store_unavailable(redis_url: str) -> None:
    store = RedisStore(redis_url)
    store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        store.save(make_session("s1"), None)


def test_redis_down_fails_fast_and_service_resumes_intact(redis_server: Any) -> None:
    with RedisStore(redis_server.url) as store:
        for i in range(5):
            store.save(make_session(f"s{i}"), None)
        store.save(make_session("s0", revision=1), 0).result(timeout=5)
        redis_server.stop()

        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"redis at 127\.0\.0\.1"):
            store.save(make_session("s0", revision=2), 1).result(timeout=5)
        with pytest.raises(StoreUnavailable):
            store.load("s0")
        with pytest.raises(StoreUnavailable):
            store.list()
        with pytest.raises(StoreUnavailable):
            store.delete("s1")
        assert time.monotonic() - started < 3

        redis_server.start()
        loaded = store.load("s0")
        assert loaded is not None
        assert loaded.revision == 1
        assert store.count() == 5
        # scripts were forgotten by the restarted server: the writer loads them again
        store.save(make_session("s0", revision=2), 1).result(timeout=5)
        reloaded = store.load("s0")
        assert reloaded is not None
        assert reloaded.revision == 2


def test_writer_survives_an_unexpected_error_and_answers_every_caller(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = _WRITE.run_many
    calls = 0

    def broken_once(client: Any, batch: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return real(client, batch)

    monkeypatch.setattr(_WRITE, "run_many", broken_once)
    with pytest.raises(StoreUnavailable, match="boom"):
        store.save(make_session("s1"), None).result(timeout=5)
    store.save(make_session("s1"), None).result(timeout=5)
    assert store.load("s1") is not None
