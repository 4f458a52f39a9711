"""Fixtures for the fault tests: daemons stopped after each test, and a disk that fills up.

``start_daemon(*args, data_dir=None)`` starts a ``fault_harness.Daemon`` (the
demo graphs plus ``fault_graphs``, a free loopback port, a temporary data
directory unless one is given) and waits until it is ready. Every daemon a test
started is stopped after it (SIGTERM, then SIGKILL).

``tmpfs_dir`` mounts a small tmpfs and skips the test, with the reason, where
mounting is not permitted.

The helpers themselves are in fault_harness.py, which tests import by that name.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_harness import TMPFS_SIZE, Daemon, StartDaemon


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[StartDaemon]:
    """Start daemons for one test; every one is stopped after it."""
    started: list[Daemon] = []

    def start(*args: str, data_dir: Path | None = None) -> Daemon:
        workdir = tmp_path / f"d{len(started)}"
        workdir.mkdir()
        daemon = Daemon(workdir, data_dir or tmp_path / "data", list(args))
        started.append(daemon)
        return daemon.start()

    try:
        yield start
    finally:
        for daemon in started:
            daemon.terminate(timeout=30.0)


@pytest.fixture
def tmpfs_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a fresh tmpfs of ``TMPFS_SIZE`` (skips where mount is not permitted).

    Request it before ``start_daemon`` so that daemons stop before it is unmounted.
    """
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs to fill up (needs root or CAP_SYS_ADMIN): "
            f"{mounted.stderr.strip() or mounted.returncode}"
        )
    try:
        yield mount_point
    finally:
        unmounted = subprocess.run(["umount", str(mount_point)], check=False)
        if unmounted.returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)
