"""Items 5 and 8: a stalled or closed stdout never freezes the daemon; data is private."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from pathlib import Path

import httpx
import pytest
from daemon_harness import Daemon, daemon_env

EXIT_TIMEOUT = 30


def _popen_with_stdout(daemon: Daemon, stdout: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*daemon.command(), "--max-connections", "100"],
        cwd=daemon.workdir,
        env=daemon_env(),
        stdout=stdout,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.umask(0o022),  # the umask the daemon must not trust
    )


def _wait_ready(daemon: Daemon, process: subprocess.Popen[bytes]) -> None:
    daemon.process = process
    daemon.wait_ready()


@pytest.mark.slow
def test_a_stdout_nobody_reads_does_not_freeze_the_daemon_or_its_sigterm(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    daemon = Daemon(tmp_path, [], tmp_path / "data")
    process = _popen_with_stdout(daemon, write_end)
    os.close(write_end)
    try:
        _wait_ready(daemon, process)
        with httpx.Client(base_url=daemon.url, timeout=5.0) as client:
            for _ in range(1500):  # ~300 KB of access lines: far past a pipe's 64 KB
                assert client.get("/healthz").status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(EXIT_TIMEOUT) == 0
    finally:
        os.close(read_end)
        daemon.stop()


@pytest.mark.slow
def test_a_closed_stdout_does_not_stop_sigterm(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    daemon = Daemon(tmp_path, [], tmp_path / "data")
    process = _popen_with_stdout(daemon, write_end)
    os.close(write_end)
    try:
        _wait_ready(daemon, process)
        os.close(read_end)  # `actorflowd | head -2`: the reader is gone
        read_end = -1
        with httpx.Client(base_url=daemon.url, timeout=5.0) as client:
            for _ in range(200):
                assert client.get("/healthz").status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(EXIT_TIMEOUT) == 0
    finally:
        if read_end >= 0:
            os.close(read_end)
        daemon.stop()


def test_data_dir_and_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, [], tmp_path / "data")
    process = _popen_with_stdout(daemon, subprocess.DEVNULL)
    try:
        _wait_ready(daemon, process)
        with daemon.client() as client:
            assert client.post("/v1/sessions", json={"graph": "echo"}).status_code == 201
        assert stat.S_IMODE(daemon.data_dir.stat().st_mode) == 0o700
        files = [p for p in daemon.data_dir.iterdir() if p.name.startswith("sessions.db")]
        assert files
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    finally:
        daemon.stop()


def test_a_data_dir_others_can_read_is_warned_about(start_daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data_dir = tmp_path / "open"
    data_dir.mkdir()
    data_dir.chmod(0o755)
    daemon: Daemon = start_daemon(data_dir=data_dir)
    lines = daemon.wait_for_log("data_readable_by_others")
    assert str(data_dir) in lines[0]
