"""Helpers for testing graphs and host applications against a real runtime.

- ``ManualClock``: a clock to pass as ``RuntimeConfig(clock=...)``; time moves
  only when you ``advance`` it, so idle passivation and TTL expiry are driven
  by the test (call ``runtime.sweep_now()`` after advancing).
- ``open_test_runtime(tmp_path, graphs=..., **config)``: a ``Runtime`` on a
  temporary directory (real SQLite), closed on exit.
- ``wait_passivated(runtime, session_id, timeout)``: wait until a session has
  no live actor and its last save is done (waits on the runtime's condition
  variable, not a sleep loop).
- ``crash_session(runtime, session_id)``: fault injection: the session's actor
  raises an unexpected exception, as a bug inside it would; the supervisor
  restarts it from its last committed snapshot.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from actors.messages import Crash
from flow._graph import Graph
from flow.demo import GRAPHS
from runtime._config import RuntimeConfig
from runtime._core import open_cores
from runtime._runtime import AsyncRuntime, Runtime

__all__ = [
    "ManualClock",
    "close_all_runtimes",
    "crash_session",
    "open_test_runtime",
    "wait_hibernated",
    "wait_passivated",
]


class ManualClock:
    """A wall clock (epoch seconds) that moves only when told to.

    Args:
        start: the initial time.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        """The current time."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds``; returns the new time."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go back: advance({seconds})")
        with self._lock:
            self._now += seconds
            return self._now


@contextmanager
def open_test_runtime(
    tmp_path: Path, graphs: Iterable[Graph] | None = None, **config: Any
) -> Iterator[Runtime]:
    """A ``Runtime`` on ``tmp_path / "runtime"`` with ``RuntimeConfig(**config)``.

    The demo graphs are registered unless ``graphs`` is given. The runtime is
    closed when the block ends.
    """
    runtime = Runtime.open(
        data_dir=tmp_path / "runtime",
        graphs=list(GRAPHS if graphs is None else graphs),
        config=RuntimeConfig(**config),
    )
    try:
        yield runtime
    finally:
        runtime.close()


def wait_passivated(runtime: Runtime | AsyncRuntime, session_id: str, timeout: float = 5.0) -> None:
    """Wait until ``session_id`` is not live and its actor's last save is done.

    Raises:
        TimeoutError: it was still live after ``timeout`` seconds.
    """
    if not runtime._core.index.wait_gone(session_id, timeout):
        raise TimeoutError(f"session {session_id!r} still live after {timeout:g} s")


def wait_hibernated(runtime: Runtime | AsyncRuntime, session_id: str, timeout: float = 5.0) -> None:
    """Wait until ``session_id`` is hibernated (live, its actor stopped, its session
    kept as bytes): after a ``sweep_now`` past ``hibernate_after``.

    Raises:
        TimeoutError: it was not hibernated after ``timeout`` seconds.
    """
    index = runtime._core.index
    with index.changed:
        if not index.changed.wait_for(lambda: index.hibernated(session_id) is not None, timeout):
            raise TimeoutError(f"session {session_id!r} not hibernated after {timeout:g} s")


def crash_session(runtime: Runtime | AsyncRuntime, session_id: str) -> bool:
    """Make the live actor of ``session_id`` raise an unexpected exception.

    Returns:
        False if the session was not live.
    """
    entry = runtime._core.index.get(session_id)
    if entry is None or entry.ref is None:
        return False
    entry.ref.tell(Crash())
    return True


def close_all_runtimes() -> int:
    """Close every runtime still open in this process (for test teardown); how many."""
    cores = open_cores()
    for core in cores:
        core.close()
    return len(cores)
