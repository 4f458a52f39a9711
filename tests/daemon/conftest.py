"""Fixtures for the daemon tests: a real actorflowd subprocess on a free loopback port.

``start_daemon(*args, data_dir=None, tokens=None)`` starts ``python -m runtime``
with a temporary data directory (or the one given), the demo graphs plus
``graphs_for_tests``, JSON logs into a file, and waits until ``/readyz`` answers
200. Every daemon a test started is stopped (SIGTERM, then SIGKILL) after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from daemon_harness import Daemon, StartDaemon


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[StartDaemon]:
    """Start daemons for one test; all are stopped after it."""
    started: list[Daemon] = []

    def start(*args: str, data_dir: Path | None = None, tls: bool = False) -> Daemon:
        workdir = tmp_path / f"d{len(started)}"
        workdir.mkdir()
        daemon = Daemon(workdir, list(args), data_dir or tmp_path / "data", tls=tls)
        started.append(daemon)
        return daemon.start()

    try:
        yield start
    finally:
        for daemon in started:
            daemon.stop()


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon (local user, defaults) shared by the tests of a module."""
    workdir = tmp_path_factory.mktemp("daemon")
    daemon = Daemon(workdir, [], None).start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def api(shared_daemon: Daemon) -> Iterator[httpx.Client]:
    """A client of the shared daemon."""
    with shared_daemon.client() as client:
        yield client
