"""Helpers for the daemon tests: a real actorflowd subprocess and HTTP assertions.

Test modules import these by name (``from daemon_harness import ...``); the
fixtures that use them live in conftest.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from testkit import assert_problem as assert_problem
from testkit import create as create
from testkit import free_port as free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
READY_TIMEOUT = 30.0
TEST_GRAPHS = ("flow.demo:GRAPHS", "graphs_for_tests:GRAPHS")


def daemon_env(**extra: str) -> dict[str, str]:
    """The environment for a daemon subprocess: no ACTORFLOW_* leaking in from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE), str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    env["ACTORFLOW_WORKERS"] = "1"  # one process (the default is one worker per core)
    env.update(extra)
    return env


class Daemon:
    """One actorflowd subprocess, its URL, data directory and log."""

    def __init__(
        self, workdir: Path, args: list[str], data_dir: Path | None, *, tls: bool = False
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.data_dir = data_dir or workdir / "data"
        self.log_path = workdir / f"daemon-{self.port}.log"
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def db_path(self) -> Path:
        """The SQLite file the daemon keeps its sessions in."""
        return self.data_dir / "sessions.db"

    def command(self) -> list[str]:
        """The daemon's command line."""
        graphs = [a for g in TEST_GRAPHS for a in ("--graphs", g)]
        return [
            sys.executable, "-m", "runtime",
            "--port", str(self.port),
            "--data-dir", str(self.data_dir),
            "--log-format", "json",
            *graphs,
            *self.args,
        ]  # fmt: skip

    def start(self) -> Daemon:
        """Start the daemon and wait until /readyz answers 200."""
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                env=daemon_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        """Poll /readyz until it answers 200, failing early if the process exits."""
        deadline = time.monotonic() + READY_TIMEOUT
        assert self.process is not None
        while True:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"actorflowd exited with {self.process.returncode} before it was ready:\n"
                    + self.log_tail()
                )
            try:
                ready = httpx.get(self.url + "/readyz", timeout=1.0, verify=False)
                if ready.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"actorflowd not ready after {READY_TIMEOUT} s:\n" + self.log_tail()
                )
            time.sleep(0.05)  # polling a subprocess's port: there is no event to wait on

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the daemon logged."""
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_lines(self) -> list[str]:
        """Every line the daemon logged."""
        return self.log_path.read_text(errors="replace").splitlines()

    def wait_for_log(self, fragment: str, timeout: float = 10.0) -> list[str]:
        """The logged lines holding ``fragment``, once there is one (info lines are buffered)."""
        wait_for(
            lambda: any(fragment in line for line in self.log_lines()),
            timeout,
            f"{fragment!r} in the daemon's log",
        )
        return [line for line in self.log_lines() if fragment in line]

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the daemon."""
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the daemon to exit; its exit status."""
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait for the exit (SIGKILL after ``timeout``); the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        """An httpx client for this daemon (with a bearer token when given)."""
        headers = {"authorization": f"Bearer {token}"} if token else {}
        kwargs.setdefault("verify", False)  # self-signed certificates in the TLS tests
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0, **kwargs)


StartDaemon = Callable[..., Daemon]


def write_tokens(path: Path, pairs: dict[str, str], mode: int = 0o600) -> Path:
    """Write a tokens file (``token user`` per line) with ``mode``."""
    path.write_text("".join(f"{token} {user}\n" for token, user in pairs.items()))
    path.chmod(mode)
    return path


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``condition`` until it is true (bounded); for state in another process."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)  # the state lives in another process: polling is the only way
