"""The stores' due-time index of timers, run against every store (memory, SQLite, Redis)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from flow import GraphBuilder, NextAction, TaskResult, new_session, step, task
from flow._context import Context
from flow._session import Session
from flow.stores import MemoryStore, SessionStore, SqliteStore
from flow.stores._timer_index import DueTimer


@task("plan", blocking=False)
def _plan(ctx: Context) -> TaskResult:
    """Schedules what its input says: {"name": seconds, ...}; a timer step does nothing."""
    if ctx.timer is None:
        for name, after in (ctx.input or {}).items():
            ctx.schedule(after, input=name, name=name)
    return TaskResult(None, NextAction.WaitForInput)


GRAPH = GraphBuilder("timers").add_task(_plan).build()


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    """Each store in turn: memory, SQLite on a real file, Redis and PostgreSQL on real servers."""
    made: SessionStore
    if request.param == "memory":
        made = MemoryStore()
    elif request.param == "sqlite":
        made = SqliteStore(tmp_path / "sessions.db")
    elif request.param == "redis":
        from flow.stores._redis import RedisStore

        made = RedisStore(request.getfixturevalue("redis_url"))
    else:
        from flow.stores._postgres import PostgresStore

        made = PostgresStore(request.getfixturevalue("postgres_url"))
    try:
        yield made
    finally:
        made.close()


def _created(store: SessionStore, sid: str) -> Session:
    session = new_session(GRAPH, owner="alice", session_id=sid, now=1000.0)
    store.save(session, None).result(timeout=10)
    return session


def _stepped(store: SessionStore, session: Session, now: float, **kwargs: object) -> Session:
    new, _ = step(GRAPH, session, now=now, **kwargs)  # type: ignore[arg-type]
    store.save(new, session.revision).result(timeout=10)
    return new


def test_a_step_that_sets_timers_indexes_its_earliest_in_the_same_save(
    store: SessionStore,
) -> None:
    session = _stepped(store, _created(store, "s1"), 1000.0, input={"late": 60, "soon": 10})

    assert store.due_timers(1009.0) == []
    assert store.due_timers(1010.0) == [DueTimer("s1", 1010.0)]
    loaded = store.load("s1")
    assert loaded is not None
    assert loaded.timers == session.timers
    assert [t.name for t in loaded.timers] == ["soon", "late"]


def test_firing_a_timer_moves_the_index_to_the_next_and_the_last_removes_it(
    store: SessionStore,
) -> None:
    session = _stepped(store, _created(store, "s1"), 1000.0, input={"late": 60, "soon": 10})

    session = _stepped(store, session, 1010.0, timer="soon")
    assert store.due_timers(math.inf) == [DueTimer("s1", 1060.0)]
    assert session.record is not None
    assert session.record.fired == "soon"
    _stepped(store, session, 1061.0, timer="late")
    assert store.due_timers(math.inf) == []
    loaded = store.load("s1")
    assert loaded is not None
    assert loaded.timers == ()


def test_a_step_that_leaves_timers_alone_keeps_the_index(store: SessionStore) -> None:
    session = _stepped(store, _created(store, "s1"), 1000.0, input={"t": 30})
    _stepped(store, session, 1001.0, input={})

    assert store.due_timers(math.inf) == [DueTimer("s1", 1030.0)]


def test_due_timers_pages_soonest_first(store: SessionStore) -> None:
    for i, sid in enumerate(["c", "a", "b"]):
        _stepped(store, _created(store, sid), 1000.0, input={"t": 30 - i})

    assert store.due_timers(math.inf, limit=2) == [DueTimer("b", 1028.0), DueTimer("a", 1029.0)]
    assert [d.session_id for d in store.due_timers(1029.5)] == ["b", "a"]
    assert store.due_timers(math.inf, since=1028.0) == [
        DueTimer("a", 1029.0),
        DueTimer("c", 1030.0),
    ]


def test_deleting_a_session_removes_its_timers(store: SessionStore) -> None:
    _stepped(store, _created(store, "s1"), 1000.0, input={"t": 30})

    assert store.delete("s1")
    assert store.due_timers(math.inf) == []


def test_a_whole_save_of_a_session_indexes_its_timers(store: SessionStore) -> None:
    session = _stepped(store, _created(store, "s1"), 1000.0, input={"t": 30})
    copy = session.copy()  # no step record: saved whole, as a fork or a rollback is
    copy.session_id = "s2"
    store.save(copy, None).result(timeout=10)

    assert {d.session_id for d in store.due_timers(math.inf)} == {"s1", "s2"}


@pytest.mark.redis
def test_redis_drops_the_index_entry_of_a_session_redis_expired(redis_url: str) -> None:
    from flow.stores._redis import RedisStore

    with RedisStore(redis_url) as store:
        _stepped(store, _created(store, "s1"), 1000.0, input={"t": 30})
        store.client.delete(store.session_key("s1"))  # as Redis's own expiry does

        assert store.due_timers(math.inf) == []
        assert store.client.zcard("actorflow:timers") == 0
