"""Every start-up mistake in docs/configuration.md's table: one line on stderr, exit 2.

Each case runs a real ``actorflowd`` subprocess and checks its whole stderr: one
line, starting ``actorflowd: error:``, no traceback, naming the setting.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from daemon_harness import ROOT, StartDaemon, daemon_env, free_port

DOC = (ROOT / "docs" / "configuration.md").read_text()


@dataclass(frozen=True)
class Case:
    """A start-up mistake: how to make it (args, env) and the line's start as documented."""

    args: list[str]
    env: dict[str, str]
    expected: str


def _run(case: Case) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime", *case.args],
        cwd=ROOT,
        env=daemon_env(**case.env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _assert_one_line(case: Case) -> str:
    result = _run(case)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("actorflowd: error: "), lines[0]
    assert re.search(case.expected, lines[0]), lines[0]
    return lines[0]


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def _unwritable_dir(tmp_path: Path) -> Path:
    if os.geteuid() == 0:
        # root writes through file modes; sysfs refuses new files even to root.
        return Path("/sys/kernel")
    path = tmp_path / "readonly"
    path.mkdir(mode=0o500)
    return path


CASES: dict[str, Callable[[Path], Case]] = {
    "environment value of the wrong type": lambda tmp: Case(
        ["--data-dir", str(tmp / "d")],
        {"ACTORFLOW_PORT": "abc"},
        r"environment ACTORFLOW_PORT: 'abc' is invalid: expected an integer",
    ),
    "value out of range": lambda tmp: Case(
        ["--data-dir", str(tmp / "d"), "--task-threads", "0"],
        {},
        r"--task-threads: '0' is invalid: expected an integer >= 1",
    ),
    "data directory not writable": lambda tmp: Case(
        ["--data-dir", str(_unwritable_dir(tmp)), "--port", str(free_port())],
        {},
        r"--data-dir: '.+' is not writable \(permission denied\)",
    ),
    "tokens file is a directory": lambda tmp: Case(
        ["--data-dir", str(tmp / "d"), "--tokens", str(tmp)],
        {},
        r"--tokens: '.+' is not a file",
    ),
    "non-ASCII token": lambda tmp: Case(
        ["--data-dir", str(tmp / "d"), "--tokens", str(_tokens(tmp, "tökén alice\n"))],
        {},
        r"--tokens: .+:1: the token has a non-ASCII character",
    ),
    "duplicate token": lambda tmp: Case(
        [
            "--data-dir",
            str(tmp / "d"),
            "--tokens",
            str(_tokens(tmp, "same alice\nsame bob\n")),
        ],
        {},
        r"--tokens: .+:2: this token is already on an earlier line",
    ),
}


def _tokens(tmp: Path, text: str) -> Path:
    path = tmp / "tokens"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_start_up_mistake_is_one_line_and_exit_2(name: str, tmp_path: Path) -> None:
    _assert_one_line(CASES[name](tmp_path))


def test_a_port_in_use_is_one_line_and_exit_2(listening_port: int, tmp_path: Path) -> None:
    case = Case(
        ["--data-dir", str(tmp_path / "d"), "--port", str(listening_port)],
        {},
        rf"--port {listening_port}: 127\.0\.0\.1:{listening_port} is already in use",
    )
    _assert_one_line(case)


def test_a_unix_socket_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # a socket path is at most 107 bytes
        path = Path(short) / "http.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(str(path))
            server.listen()
            case = Case(
                ["--data-dir", str(tmp_path / "d"), "--uds", str(path)],
                {},
                rf"--uds: another process is already serving the socket {re.escape(str(path))}",
            )
            _assert_one_line(case)
        assert path.exists()  # another's socket is never removed


def test_a_second_daemon_on_the_same_data_dir_is_one_line_and_exit_2(
    start_daemon: StartDaemon,
) -> None:
    first = start_daemon()
    assert first.process is not None
    case = Case(
        ["--data-dir", str(first.data_dir), "--port", str(free_port())],
        {},
        rf"--data-dir: '.+' is in use by another actorflowd \(pid {first.process.pid}\)",
    )
    _assert_one_line(case)
    with first.client() as client:
        assert client.get("/healthz").status_code == 200


def test_every_start_up_error_is_in_the_docs_table() -> None:
    section = DOC.split("## Start-up errors", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| ([^|]+?) \| `actorflowd: error: ", section, re.MULTILINE)
    names = {
        *CASES,
        "port in use",
        "unix socket in use",
        "a second daemon on the same data directory",
    }
    assert set(documented) == names
