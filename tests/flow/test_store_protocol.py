"""One suite for the store protocol, run against every store (memory, SQLite, Redis, PostgreSQL)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from flow import new_session, step
from flow._errors import InvalidInput, RevisionConflict, SnapshotDecodeError, StoreUnavailable
from flow._session import Session
from flow.demo import echo
from flow.stores import MemoryStore, SessionStore, SqliteStore
from flow.stores._protocol import LOAD_MANY_LIMIT

MakeSession = Callable[..., Session]


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    """Each store in turn: memory, SQLite on a real file, Redis and PostgreSQL on real servers."""
    made: SessionStore
    if request.param == "memory":
        made = MemoryStore()
    elif request.param == "sqlite":
        made = SqliteStore(tmp_path / "sessions.db")
    elif request.param == "redis":
        from flow.stores._redis import RedisStore  # the Redis backend is optional

        made = RedisStore(request.getfixturevalue("redis_url"))
    else:
        from flow.stores._postgres import PostgresStore

        made = PostgresStore(request.getfixturevalue("postgres_url"))
    try:
        yield made
    finally:
        made.close()


def corrupt(store: SessionStore, session_id: str, garbage: bytes) -> None:
    """Overwrite a stored snapshot's bytes behind the store's back."""
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            conn.execute("UPDATE bases SET data = ? WHERE session_id = ?", (garbage, session_id))
        return
    store.put_raw(session_id, garbage)  # type: ignore[attr-defined]  # the other stores have it


def saved(store: SessionStore, session: Session, expected: int | None) -> Session:
    """Save and wait for the acknowledgement."""
    store.save(session, expected).result(timeout=10)
    return session


def test_saved_session_loads_back_equal_as_an_independent_copy(
    store: SessionStore, make_session: MakeSession
) -> None:
    session = saved(store, make_session("s1", expires_at=time.time() + 3600), None)

    loaded = store.load("s1")
    assert loaded == session
    assert loaded is not session
    assert loaded is not None
    loaded.context.set("count", 99)
    assert store.load("s1") == session


def test_sessions_whose_times_are_whole_numbers_save_beside_others(
    store: SessionStore,
) -> None:
    """A host may make sessions and steps with ``now=`` an int. Saved in one batch with
    sessions whose times are floats (PostgreSQL's writer sends each column of a batch as
    one typed array, and psycopg refuses a list of ints and floats)."""
    now = time.time()
    sessions = [
        new_session(echo, owner="alice", session_id=f"s{i}", now=int(now) if i % 2 else now)
        for i in range(40)
    ]
    for future in [store.save(session, None) for session in sessions]:
        future.result(timeout=10)
    stepped = [
        step(echo, session, "hello", now=int(now) + 1 if i % 2 else now + 1)[0]
        for i, session in enumerate(sessions)
    ]
    for future in [store.save(session, 0) for session in stepped]:
        future.result(timeout=10)

    for i in (0, 1):
        loaded = store.load(f"s{i}")
        assert loaded is not None
        assert loaded.revision == 1
        assert loaded.metadata.created_at == sessions[i].metadata.created_at
        assert loaded.metadata.last_accessed == stepped[i].metadata.last_accessed


def test_load_of_a_session_never_saved_is_none(store: SessionStore) -> None:
    assert store.load("nobody") is None


def test_the_store_provides_every_method_of_the_protocol(store: SessionStore) -> None:
    assert isinstance(store, SessionStore)


def test_save_against_a_stale_revision_fails_and_keeps_the_stored_one(
    store: SessionStore, make_session: MakeSession
) -> None:
    saved(store, make_session("s1", revision=0), None)
    saved(store, make_session("s1", revision=1), 0)

    with pytest.raises(RevisionConflict) as caught:
        store.save(make_session("s1", revision=2), 0).result(timeout=10)

    assert caught.value.expected == 0
    assert caught.value.actual == 1
    loaded = store.load("s1")
    assert loaded is not None
    assert loaded.revision == 1


def test_save_expecting_no_session_fails_when_one_exists(
    store: SessionStore, make_session: MakeSession
) -> None:
    saved(store, make_session("s1", revision=3), None)

    with pytest.raises(RevisionConflict):
        store.save(make_session("s1", revision=4), None).result(timeout=10)

    loaded = store.load("s1")
    assert loaded is not None
    assert loaded.revision == 3


def test_save_expecting_a_revision_fails_when_the_session_does_not_exist(
    store: SessionStore, make_session: MakeSession
) -> None:
    with pytest.raises(RevisionConflict):
        store.save(make_session("ghost", revision=1), 0).result(timeout=10)

    assert store.load("ghost") is None


def test_delete_removes_the_session_and_says_whether_it_existed(
    store: SessionStore, make_session: MakeSession
) -> None:
    saved(store, make_session("s1"), None)
    saved(store, make_session("s2"), None)

    assert store.delete("s1") is True
    assert store.delete("s1") is False
    assert store.load("s1") is None
    assert store.load("s2") is not None
    saved(store, make_session("s1", revision=7), None)
    loaded = store.load("s1")
    assert loaded is not None
    assert loaded.revision == 7


def test_delete_is_ordered_after_saves_queued_before_it(
    store: SessionStore, make_session: MakeSession
) -> None:
    futures = [store.save(make_session("s1", revision=0), None)]
    futures += [store.save(make_session("s1", revision=r), r - 1) for r in range(1, 20)]

    assert store.delete("s1") is True

    for future in futures:
        future.result(timeout=10)
    assert store.load("s1") is None


def test_list_pages_one_owners_sessions_in_id_order(
    store: SessionStore, make_session: MakeSession
) -> None:
    alice = [f"a-{i:02d}" for i in (5, 1, 9, 3, 7, 2, 8)]
    for i, sid in enumerate(alice):
        saved(store, make_session(sid, owner="alice", revision=i), None)
    for sid in ("b-1", "b-2", "b-3"):
        saved(store, make_session(sid, owner="bob"), None)

    pages = []
    cursor = None
    for _ in range(10):
        page = store.list("alice", cursor, limit=3)
        pages.append([info.session_id for info in page.items])
        cursor = page.next_cursor
        if cursor is None:
            break

    assert pages == [["a-01", "a-02", "a-03"], ["a-05", "a-07", "a-08"], ["a-09"]]
    info = {i.session_id: i for i in store.list("alice", limit=100).items}["a-09"]
    assert (info.owner, info.graph_id, info.current_task) == ("alice", "g", "echo")
    assert info.status == "waiting_for_input"
    assert info.revision == 2
    assert info.size > 0


def test_list_without_owner_pages_every_session(
    store: SessionStore, make_session: MakeSession
) -> None:
    ids = sorted(f"s-{i:02d}" for i in range(12))
    for i, sid in enumerate(ids):
        saved(store, make_session(sid, owner="alice" if i % 2 else "bob"), None)

    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = store.list(None, cursor, limit=5)
        seen += [info.session_id for info in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break

    assert seen == ids
    assert store.list("carol").items == []


def test_list_refuses_a_limit_below_one(store: SessionStore) -> None:
    with pytest.raises(InvalidInput, match="limit"):
        store.list("alice", limit=0)


def test_expired_returns_sessions_past_their_expiry_up_to_the_limit(
    store: SessionStore, make_session: MakeSession
) -> None:
    now = time.time()
    for i in range(5):
        saved(store, make_session(f"old-{i}", expires_at=now + 100 + i), None)
    saved(store, make_session("later", expires_at=now + 1000), None)
    saved(store, make_session("forever", expires_at=None), None)

    assert sorted(store.expired(now + 500)) == [f"old-{i}" for i in range(5)]
    assert len(store.expired(now + 500, limit=2)) == 2
    assert set(store.expired(now + 500, limit=2)) <= {f"old-{i}" for i in range(5)}
    assert store.expired(now) == []


def test_count_counts_stored_sessions(store: SessionStore, make_session: MakeSession) -> None:
    assert store.count() == 0
    for i in range(4):
        saved(store, make_session(f"s{i}"), None)
    store.delete("s0")

    assert store.count() == 3


def test_many_queued_saves_of_one_session_commit_in_order(
    store: SessionStore, make_session: MakeSession
) -> None:
    futures: list[Future[None]] = [store.save(make_session("s1", revision=0), None)]
    futures += [store.save(make_session("s1", revision=r), r - 1) for r in range(1, 300)]

    for future in futures:
        future.result(timeout=10)
    loaded = store.load("s1")
    assert loaded is not None
    assert loaded.revision == 299
    assert loaded.context.get("count") == 299


def test_a_conflicting_save_in_a_queue_fails_alone(
    store: SessionStore, make_session: MakeSession
) -> None:
    first = store.save(make_session("s1", revision=0), None)
    second = store.save(make_session("s1", revision=1), 0)
    stale = store.save(make_session("s1", revision=9), 0)
    third = store.save(make_session("s1", revision=2), 1)
    other = store.save(make_session("s2", revision=0), None)

    for future in (first, second, third, other):
        assert future.result(timeout=10) is None
    with pytest.raises(RevisionConflict):
        stale.result(timeout=10)
    loaded = store.load("s1")
    assert loaded is not None
    assert loaded.revision == 2


def test_flush_returns_after_every_queued_save_is_committed(
    store: SessionStore, make_session: MakeSession
) -> None:
    futures = [store.save(make_session(f"s{i:03d}"), None) for i in range(200)]

    store.flush()

    assert all(future.done() for future in futures)
    assert store.count() == 200


def test_a_snapshot_that_does_not_decode_is_quarantined_with_its_bytes(
    store: SessionStore, make_session: MakeSession
) -> None:
    saved(store, make_session("bad"), None)
    saved(store, make_session("good"), None)
    garbage = b"\xc1 not msgpack \x00\xff"
    corrupt(store, "bad", garbage)

    with pytest.raises(SnapshotDecodeError) as caught:
        store.load("bad")

    assert caught.value.raw == garbage
    assert store.load("bad") is None
    assert store.load("good") is not None
    [row] = store.quarantined()
    assert (row.session_id, row.raw) == ("bad", garbage)
    assert row.error


def test_saves_and_deletes_after_close_raise_store_unavailable(
    store: SessionStore, make_session: MakeSession
) -> None:
    saved(store, make_session("s1"), None)
    store.close()

    with pytest.raises(StoreUnavailable):
        store.save(make_session("s2"), None)
    with pytest.raises(StoreUnavailable):
        store.delete("s1")


def test_load_many_reads_every_stored_session_with_its_records_in_one_call(
    store: SessionStore,
) -> None:
    sessions = [new_session(echo, owner="alice", session_id=f"m{i}") for i in range(5)]
    for session in sessions:
        saved(store, session, None)
    newest = {}
    for session in sessions[:3]:  # records after the base
        current = session
        for said in ("one", "two"):
            after, _ = step(echo, current, said)
            saved(store, after, current.revision)
            current = after
        newest[session.session_id] = current

    found = store.load_many([s.session_id for s in sessions] + ["nobody", "m0"])

    assert sorted(found) == [s.session_id for s in sessions], "missing ids have no key"
    for session in sessions:
        loaded = found[session.session_id]
        assert isinstance(loaded, Session)
        assert loaded == store.load(session.session_id)
    assert found["m0"] == newest["m0"]
    assert found["m0"].revision == 2  # type: ignore[union-attr]


def test_load_many_quarantines_a_row_that_does_not_decode_and_reads_the_others(
    store: SessionStore, make_session: MakeSession
) -> None:
    saved(store, make_session("bad"), None)
    saved(store, make_session("good"), None)
    corrupt(store, "bad", b"\xc1 not msgpack")

    found = store.load_many(["bad", "good"])

    assert isinstance(found["bad"], SnapshotDecodeError)
    assert isinstance(found["good"], Session)
    assert [row.session_id for row in store.quarantined()] == ["bad"]
    assert store.load_many(["bad"]) == {}


def test_load_many_refuses_more_ids_than_its_limit(store: SessionStore) -> None:
    assert store.load_many([]) == {}
    with pytest.raises(InvalidInput):
        store.load_many([f"s{i}" for i in range(LOAD_MANY_LIMIT + 1)])
