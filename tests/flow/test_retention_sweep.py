"""SQLite's retention sweep: the records a compaction drops wait below the session's oldest
base, unseen by every read, until the writer deletes many sessions' worth in one
transaction (each page they share is written once, not once per session)."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest

from flow import Session, new_session, step
from flow.demo import echo
from flow.stores import SqliteStore
from flow.stores import _sqlite as sqlite_module
from flow.stores._log import LogPolicy

POLICY = LogPolicy(keep_revisions=5, compact_after=2, min_tail_bytes=0)

_LEFTOVERS = (
    "SELECT count(*) FROM records r JOIN sessions s ON s.sess = r.sess "
    "WHERE s.session_id = ?1 AND r.revision < "
    "(SELECT min(revision) FROM bases WHERE session_id = ?1)"
)


def leftovers(path: Path, session_id: str) -> int:
    """Records of ``session_id`` below its oldest base, read by a connection of our own."""
    with sqlite3.connect(path) as conn:
        return int(conn.execute(_LEFTOVERS, (session_id,)).fetchone()[0])


def talked(store: SqliteStore, session_id: str, steps: int) -> Session:
    """A new echo session saved, then stepped ``steps`` times, each step saved."""
    session = new_session(echo, owner="t", session_id=session_id)
    store.save(session, None).result(timeout=10)
    for i in range(steps):
        new, _ = step(echo, session, f"message {i}")
        store.save(new, session.revision).result(timeout=10)
        session = new
        # a base at every revision: retention's cut falls on a base, and the compactor
        # alone (which passes over offers made while it works) leaves them where its
        # timing puts them, and with them how many records a cut drops
        store.compact(session_id)
    store.flush()
    assert store.compactor.wait_idle(10)
    return session


def test_dropped_records_wait_unseen_and_closing_the_store_sweeps_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "_SWEEP_AFTER", 3600.0)  # however slow the machine
    path = tmp_path / "sessions.db"
    store = SqliteStore(path, "commit", policy=POLICY)
    try:
        session = talked(store, "talker", 30)
        sid = session.session_id
        waiting = leftovers(path, sid)
        assert waiting > 0  # retention dropped them; one session is not a sweep's worth
        span = store.history_range(sid)
        assert span is not None
        assert span.oldest > 1
        revisions = [info.revision for info in store.revisions(sid, limit=1000)]
        assert revisions == list(range(30, span.oldest - 1, -1))
        said = [message.content for _, message in store.messages(sid, limit=1000).items]
        assert said == [text for i in range(30) for text in (f"message {i}", f"echo: message {i}")]
    finally:
        store.close()
    assert leftovers(path, sid) == 0


def test_a_sweep_runs_once_enough_sessions_wait_or_the_first_has_waited_long_enough(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "_SWEEP_SESSIONS", 3)
    monkeypatch.setattr(sqlite_module, "_SWEEP_AFTER", 3600.0)  # not by time, at first
    path = tmp_path / "sessions.db"
    with SqliteStore(path, "commit", policy=POLICY) as store:
        talked(store, "a", 20)
        talked(store, "b", 20)
        assert leftovers(path, "a") > 0
        assert leftovers(path, "b") > 0
        talked(store, "c", 20)  # its compaction makes three waiting: a sweep
        store.flush()  # (a batch after it)
        assert [leftovers(path, sid) for sid in "ab"] == [0, 0]

        monkeypatch.setattr(sqlite_module, "_SWEEP_AFTER", 0.0)
        talked(store, "e", 20)
        talked(store, "f", 1)  # one session waiting, but for longer than _SWEEP_AFTER
        assert leftovers(path, "e") == 0


def test_closing_sweeps_every_waiting_session_however_many_a_statement_may_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "_SWEEP_AFTER", 3600.0)
    monkeypatch.setattr(sqlite_module, "_ROWS_PER_STATEMENT", 2)  # five sessions: 3 statements
    path = tmp_path / "sessions.db"
    store = SqliteStore(path, "commit", policy=POLICY)
    names = [f"s{i}" for i in range(5)]
    try:
        for name in names:
            talked(store, name, 12)
        assert all(leftovers(path, name) > 0 for name in names)
    finally:
        store.close()
    assert [leftovers(path, name) for name in names] == [0] * 5


def test_a_sweep_keeps_every_record_of_a_session_made_again_under_the_same_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "_SWEEP_AFTER", 3600.0)
    path = tmp_path / "sessions.db"
    store = SqliteStore(path, "commit", policy=POLICY)
    try:
        talked(store, "again", 30)
        assert leftovers(path, "again") > 0
        assert store.delete("again")
        again = talked(store, "again", 3)  # revisions 0-3, below the old one's cut
    finally:
        store.close()  # sweeps "again", still waiting from its first life
    with SqliteStore(path, "commit", policy=POLICY) as reopened:
        span = reopened.history_range("again")
        assert span is not None
        assert (span.oldest, span.newest) == (0, 3)
        for revision in range(4):
            assert reopened.load("again", revision) is not None
        loaded = reopened.load("again")
        assert loaded is not None
        assert loaded.context.chat_history.messages == again.context.chat_history.messages


def test_a_sweep_drains_a_bounded_number_of_records_per_commit_oldest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "_SWEEP_AFTER", 3600.0)
    monkeypatch.setattr(sqlite_module, "_SWEEP_SESSIONS", 1000)  # none yet
    path = tmp_path / "sessions.db"
    with SqliteStore(path, "commit", policy=POLICY) as store:
        talked(store, "drained", 40)
        waiting = leftovers(path, "drained")
        assert waiting > 10, waiting
        monkeypatch.setattr(sqlite_module, "_SWEEP_SESSIONS", 1)
        monkeypatch.setattr(sqlite_module, "_SWEEP_ROWS", 4)
        seen = [waiting]
        while seen[-1]:
            store.flush()  # one commit: up to 4 of them deleted
            seen.append(leftovers(path, "drained"))
            assert len(seen) < 40
        assert all(
            before - after == min(4, before) for before, after in itertools.pairwise(seen)
        ), seen
        with sqlite3.connect(path) as conn:
            oldest_kept = conn.execute(
                "SELECT min(r.revision) FROM records r JOIN sessions s ON s.sess = r.sess "
                "WHERE s.session_id = 'drained'"
            ).fetchone()[0]
        span = store.history_range("drained")
        assert span is not None
        assert oldest_kept == span.oldest  # every retained record is still there
