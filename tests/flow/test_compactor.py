"""The compactor thread: one compaction per request, and none on figures a running
compaction makes stale (a second base a few records after the first)."""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import threading
from pathlib import Path

from flow.demo import echo
from flow.stores import SqliteStore
from flow.stores._log import Compactor, LogPolicy
from runtime import Runtime, RuntimeConfig

POLICY = LogPolicy(min_tail_bytes=0)
DUE = (100, 200, 3)  # base size, tail bytes, tail count: records outweigh the base
NOT_DUE = (100, 10, 1)


class BlockingCompaction:
    """A compaction that waits for ``release`` once started, noting each session it ran."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.ran: list[str] = []

    def __call__(self, session_id: str) -> bool:
        self.ran.append(session_id)
        self.started.set()
        assert self.release.wait(10)
        return True


def test_an_offer_while_its_session_is_being_compacted_is_ignored() -> None:
    compact = BlockingCompaction()
    compactor = Compactor("test", compact, POLICY)
    try:
        compactor.offer("a", *DUE)
        assert compact.started.wait(10)
        compactor.offer("a", *DUE)  # figures from before the new base: stale
        compactor.offer("b", *DUE)  # another session's are not
        compact.release.set()
        assert compactor.wait_idle(10)
        assert compact.ran == ["a", "b"]
        assert compactor.compactions == 2
        compactor.offer("a", *DUE)  # after the compaction: taken again
        assert compactor.wait_idle(10)
        assert compact.ran == ["a", "b", "a"]
    finally:
        compact.release.set()
        compactor.close()


def test_offers_that_do_not_call_for_a_base_run_nothing() -> None:
    compact = BlockingCompaction()
    compact.release.set()
    compactor = Compactor("test", compact, POLICY)
    try:
        compactor.offer("a", *NOT_DUE)
        compactor.offer("a", *DUE)
        compactor.offer("a", *DUE)  # queued once however often it is asked
        assert compactor.wait_idle(10)
        assert compact.ran == ["a"]
    finally:
        compactor.close()


def test_a_session_that_keeps_talking_gets_about_one_base_per_base_size_of_records(
    tmp_path: Path,
) -> None:
    """Steps racing the compactor (four threads on one session): each base comes enough
    records after the one before it to outweigh it, never a few records after it."""
    store = SqliteStore(tmp_path / "sessions.db", policy=POLICY)
    config = RuntimeConfig(max_sessions_per_user=0)
    with Runtime.open(data_dir=tmp_path, graphs=[echo], config=config, store=store) as rt:
        sid = rt.create_session("echo", owner="t", max_messages=50)
        errors: list[BaseException] = []

        def talk() -> None:
            try:
                for i in range(150):
                    rt.step(sid, f"message {i}")
            except BaseException as exc:  # seen by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=talk) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors
        assert store.compactor.wait_idle(10)
    with contextlib.closing(sqlite3.connect(tmp_path / "sessions.db")) as conn:
        bases = [
            rev
            for (rev,) in conn.execute(
                "SELECT revision FROM bases WHERE session_id = ? ORDER BY revision", (sid,)
            )
        ]
    # past the first 100 revisions the chat window (50 messages) is full, the base
    # keeps its size and about ten records outweigh it; a base made on stale figures
    # came 2-4 records after the one before it
    late = [rev for rev in bases if rev >= 100]
    gaps = [b - a for a, b in itertools.pairwise(late)]
    assert len(gaps) >= 20, bases
    assert min(gaps) >= 6, bases
