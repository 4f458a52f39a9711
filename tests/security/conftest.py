"""Fixtures for the attack tests: a real actorflowd subprocess with tight limits.

The daemon harness (``daemon_harness``) lives in tests/daemon; this directory
imports it from there.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))

from daemon_harness import Daemon  # after the path above

TIGHT = (
    "--max-connections", "40",
    "--header-timeout", "1",
    "--body-timeout", "1",
    "--keepalive-timeout", "1",
    "--max-header-bytes", "16K",
)  # fmt: skip


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[object]:
    """Start daemons (the tight limits plus ``args``) for one test; all stopped after it."""
    started: list[Daemon] = []

    def start(*args: str, data_dir: Path | None = None) -> Daemon:
        workdir = tmp_path / f"d{len(started)}"
        workdir.mkdir()
        daemon = Daemon(workdir, [*TIGHT, *args], data_dir or workdir / "data")
        started.append(daemon)
        return daemon.start()

    try:
        yield start
    finally:
        for daemon in started:
            daemon.stop()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon with the tight limits, shared by a module's tests."""
    workdir = tmp_path_factory.mktemp("daemon")
    started = Daemon(workdir, list(TIGHT), None).start()
    try:
        yield started
    finally:
        started.stop()
