"""Paging a long conversation reads about what the page holds, not the whole log.

``messages(limit, before)`` must cost the same on a session with a long
retained history as on a short one: SQLite's work (its VM steps) and the bytes
Redis sends for one page are measured on both, and every page, at any
``before``, is checked against the whole conversation.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from testkit import talked

from flow import new_session, step
from flow.stores import MemoryStore, SessionStore, SqliteStore
from flow.stores._log import LogPolicy
from flow.stores._redis import RedisStore

KEEP_ALL = LogPolicy(keep_revisions=None, compact_after=10**9)


TURN = "turn {} " + "x" * 60  # two messages a step: the input and the echo


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_every_page_at_any_before_is_that_slice_of_the_whole_conversation(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # a short retention and frequent compactions: older messages live in the archive
    policy = LogPolicy(keep_revisions=7, compact_after=5)
    store: SessionStore
    if kind == "memory":
        store = MemoryStore(policy)
    elif kind == "sqlite":
        store = SqliteStore(tmp_path / "s.db", "commit", policy=policy)
    else:
        store = RedisStore(request.getfixturevalue("redis_url"), policy=policy)
    try:
        talked(store, 60, "s", text=TURN, owner="alice")
        store.flush()
        assert store.compactor.wait_idle(10)  # type: ignore[attr-defined]
        store.compact("s")
        whole = [(seq, m.content) for seq, m in store.messages("s", limit=1000).items]
        assert [seq for seq, _ in whole] == list(range(120))

        for before in (None, 0, 1, 2, 13, 50, 99, 100, 113, 119, 120, 500):
            for limit in (1, 5, 33):
                page = store.messages("s", limit=limit, before=before)
                below = [w for w in whole if before is None or w[0] < before]
                assert [(s, m.content) for s, m in page.items] == below[-limit:]
                more = len(below) > limit
                assert page.next_before == (below[-limit][0] if more else None)
    finally:
        store.close()


@contextlib.contextmanager
def counting_vm_steps(store: SqliteStore) -> Iterator[list[int]]:
    """Counts the SQLite VM steps (in hundreds) of the reads made inside the block."""
    counted = [0]
    original = store._reader

    @contextlib.contextmanager
    def reader(*, mapped: bool = False) -> Iterator[sqlite3.Connection]:
        with original(mapped=mapped) as conn:

            def tick() -> int:
                counted[0] += 1
                return 0

            conn.set_progress_handler(tick, 100)
            try:
                yield conn
            finally:
                conn.set_progress_handler(None, 0)

    store._reader = reader  # type: ignore[method-assign]
    try:
        yield counted
    finally:
        store._reader = original  # type: ignore[method-assign]


def test_a_sqlite_page_costs_the_same_after_a_long_history(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.db", "commit", policy=KEEP_ALL) as store:
        talked(store, 40, "short", text=TURN, owner="alice")
        talked(store, 1600, "long", text=TURN, owner="alice")
        store.flush()
        costs = {}
        for sid, newest in (("short", 80), ("long", 3200)):
            with counting_vm_steps(store) as newest_page:
                store.messages(sid, limit=10)
            with counting_vm_steps(store) as deep_page:
                page = store.messages(sid, limit=10, before=newest - 30)
            assert [seq for seq, _ in page.items] == list(range(newest - 40, newest - 30))
            costs[sid] = (newest_page[0], deep_page[0])

    # reading all 1,600 records took 40x the short session's steps (80 against 2)
    assert costs["long"][0] <= 2 * costs["short"][0] + 5, costs
    assert costs["long"][1] <= 2 * costs["short"][1] + 5, costs


def test_a_redis_page_sends_about_its_own_bytes_whatever_the_history(redis_url: str) -> None:
    store = RedisStore(redis_url, policy=KEEP_ALL)
    client = redis.Redis.from_url(redis_url)
    try:
        talked(store, 500, "long", text=TURN, owner="alice")
        store.flush()
        log_bytes = sum(len(raw) for raw in client.zrange(store._key("r", "long"), 0, -1))

        def sent() -> int:
            return int(client.info("stats")["total_net_output_bytes"])

        before = sent()
        page = store.messages("long", limit=10)
        newest_page = sent() - before
        before = sent()
        deep = store.messages("long", limit=10, before=300)
        deep_page = sent() - before
    finally:
        client.close()
        store.close()

    assert len(page.items) == len(deep.items) == 10
    assert log_bytes > 250_000
    # one page of 10 messages: a few records, plus the binary search's probes for ``before``
    # (6 KB and 13 KB; reading every record sent 290 KB)
    assert newest_page < 40_000, newest_page
    assert deep_page < 60_000, deep_page


def test_a_task_replacing_the_chat_history_keeps_the_numbering_and_logs_the_new_messages(
    tmp_path: Path,
) -> None:
    from flow import ChatHistory, Context, FunctionTask, GraphBuilder, NextAction, TaskResult

    def summarize(ctx: Context) -> TaskResult:
        if ctx.input == "summarize":
            summary = ChatHistory()
            summary.add_system(f"summary of {len(ctx.chat_history)} messages")
            ctx.chat_history = summary  # e.g. to keep a model's prompt short
        else:
            ctx.chat_history.add_assistant(f"noted {ctx.input}")
        return TaskResult("ok", NextAction.WaitForInput)

    graph = GraphBuilder("summarizer").add_task(FunctionTask("t", summarize)).build()
    store = SqliteStore(tmp_path / "s.db", "commit", policy=KEEP_ALL)
    try:
        session = new_session(graph, owner="alice", session_id="s")
        store.save(session, None).result(timeout=10)
        for text in ("a", "b", "summarize", "c"):
            new, _ = step(graph, session, text)
            assert new.record is not None, "a replaced history is recorded, not saved whole"
            store.save(new, session.revision).result(timeout=10)
            session = new
        store.flush()
        whole = [(seq, m.content) for seq, m in store.messages("s", limit=1000).items]
        assert whole == [
            (0, "a"),
            (1, "noted a"),
            (2, "b"),
            (3, "noted b"),
            (4, "summarize"),
            (5, "summary of 5 messages"),
            (6, "c"),
            (7, "noted c"),
        ]
        loaded = store.load("s")
        assert loaded is not None
        assert [m.content for m in loaded.context.chat_history.messages] == [
            "summary of 5 messages",
            "c",
            "noted c",
        ]
        assert loaded.context.chat_history.total == 8
        assert loaded.context.chat_history == session.context.chat_history
    finally:
        store.close()
