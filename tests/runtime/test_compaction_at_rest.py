"""A passivated session's log is compacted when its records outweigh its base (while it
is live they may grow to ``LogPolicy.min_tail_bytes`` first); a shutdown asks for none."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from testkit import replayed_bytes

from flow.demo import GRAPHS
from flow.stores import SqliteStore
from runtime import InvalidInput, Runtime, RuntimeConfig
from runtime.testing import ManualClock, wait_hibernated


class RestSpy:
    """A SQLite store that notes which sessions it was told are at rest."""

    def __init__(self, path: Path) -> None:
        self.inner = SqliteStore(path)
        self.rested: list[str] = []
        self.told = threading.Event()

    def passivated(self, session_id: str) -> None:
        self.rested.append(session_id)
        self.inner.passivated(session_id)
        self.told.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_passivated_session_whose_records_outweigh_its_base_is_compacted(
    tmp_path: Path,
) -> None:
    spy = RestSpy(tmp_path / "sessions.db")
    with Runtime.open(data_dir=tmp_path, graphs=GRAPHS, store=spy) as rt:
        sid = rt.create_session("echo", owner="alice")
        for i in range(4):  # ~1 KB of records over a smaller base, below min_tail_bytes
            rt.step(sid, f"message {i}")
        spy.inner.flush()
        assert spy.inner.compactor.wait_idle(10)
        live = replayed_bytes(spy.inner, sid)
        assert live > 0  # left while live

        assert rt.passivate(sid) is True
        assert spy.told.wait(10)
        assert spy.inner.compactor.wait_idle(10)

        assert spy.rested == [sid]
        assert replayed_bytes(spy.inner, sid) == 0
        assert rt.step(sid, "after").response == "echo: after"  # loads from the new base
    spy.inner.close()


def test_a_shutdown_does_not_tell_the_store_its_sessions_rest(tmp_path: Path) -> None:
    spy = RestSpy(tmp_path / "sessions.db")
    with Runtime.open(data_dir=tmp_path, graphs=GRAPHS, store=spy) as rt:
        sid = rt.create_session("echo", owner="alice")
        for i in range(4):
            rt.step(sid, f"message {i}")
        assert rt.stats().live == 1

    assert spy.rested == []
    spy.inner.close()


def test_a_hibernated_session_that_is_passivated_is_compacted_too(tmp_path: Path) -> None:
    spy = RestSpy(tmp_path / "sessions.db")
    clock = ManualClock()
    config = RuntimeConfig(clock=clock, hibernate_after=10)
    with Runtime.open(data_dir=tmp_path, graphs=GRAPHS, store=spy, config=config) as rt:
        sid = rt.create_session("echo", owner="alice")
        for i in range(4):
            rt.step(sid, f"message {i}")
        clock.advance(11)
        rt.sweep_now()
        wait_hibernated(rt, sid)
        assert spy.rested == []  # hibernating is not resting: the bytes are in memory

        assert rt.passivate(sid) is True
        assert spy.told.wait(10)
        assert spy.inner.compactor.wait_idle(10)

        assert spy.rested == [sid]
        assert replayed_bytes(spy.inner, sid) == 0
    spy.inner.close()


class OldStore:
    """A store written before ``passivated`` (everything else goes to SQLite)."""

    def __init__(self, path: Path) -> None:
        self.inner = SqliteStore(path)

    def __getattr__(self, name: str) -> Any:
        if name == "passivated":
            raise AttributeError(name)
        return getattr(self.inner, name)


def test_a_store_without_passivated_is_refused_with_what_it_lacks(tmp_path: Path) -> None:
    old = OldStore(tmp_path / "sessions.db")
    with pytest.raises(InvalidInput, match=r"OldStore is not a SessionStore: it has no passivated"):
        Runtime.open(data_dir=tmp_path, graphs=GRAPHS, store=old)
    old.inner.close()
