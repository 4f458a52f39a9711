"""A real actorflowd subprocess for the shell and CLI tests, and the shell under pexpect."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pexpect
import pytest
from testkit import free_port

from runtime.admin import AdminClient, AdminError

ROOT = Path(__file__).resolve().parents[2]
ACTORFLOW = str(Path(sys.executable).parent / "actorflow")
READY_TIMEOUT = 30.0


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess: no ACTORFLOW_* settings leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORFLOW_")}
    env["ACTORFLOW_WORKERS"] = "1"  # one process (the default is one worker per core)
    env.update(extra)
    return env


class Daemon:
    """``python -m runtime`` on a free port and a data directory; stopped with SIGTERM."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        """The daemon's admin socket."""
        return self.data_dir / "admin.sock"

    def start(self) -> Daemon:
        """Start it and wait until the admin socket answers."""
        command = [
            sys.executable, "-m", "runtime",
            "--port", str(self.port),
            "--data-dir", str(self.data_dir),
            "--log-format", "json",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=clean_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"actorflowd exited early:\n{self.log_tail()}")
            try:
                with AdminClient(self.socket, timeout=5.0) as client:
                    client.call("stats")
                return self
            except AdminError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"admin socket not ready:\n{self.log_tail()}") from None
            time.sleep(0.05)  # polling a subprocess's socket: there is no event to wait on

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the daemon logged."""
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout``); the exit status."""
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

    def http(self) -> httpx.Client:
        """An HTTP client of the daemon (local user: no token)."""
        return httpx.Client(base_url=self.url, timeout=30.0)

    def create(self, graph: str) -> str:
        """A new session's id, created over HTTP."""
        with self.http() as client:
            response = client.post("/v1/sessions", json={"graph": graph})
            assert response.status_code == 201, response.text
            return str(response.json()["session_id"])

    def step(self, session_id: str, text: str | None = None) -> dict[str, object]:
        """One step over HTTP; the response body."""
        with self.http() as client:
            response = client.post(f"/v1/sessions/{session_id}/step", json={"input": text})
            assert response.status_code == 200, response.text
            body: dict[str, object] = response.json()
            return body


StartDaemon = Callable[[Path], Daemon]
SpawnShell = Callable[..., pexpect.spawn]
RunActorflow = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[StartDaemon]:
    """Start daemons on a data directory; every one is stopped after the test."""
    started: list[Daemon] = []

    def start(data_dir: Path) -> Daemon:
        daemon = Daemon(data_dir, tmp_path / f"daemon{len(started)}.log")
        started.append(daemon)
        return daemon.start()

    try:
        yield start
    finally:
        for daemon in started:
            daemon.stop()


@pytest.fixture
def daemon(start_daemon: StartDaemon, tmp_path: Path) -> Daemon:
    """A running daemon with its data in ``tmp_path/var``."""
    return start_daemon(tmp_path / "var")


@pytest.fixture
def spawn_shell(tmp_path: Path) -> Iterator[SpawnShell]:
    """``actorflow shell ARGS`` on a pseudo-terminal: no colours, no cursor queries, HOME=tmp."""
    children: list[pexpect.spawn] = []

    def spawn(*args: str) -> pexpect.spawn:
        env = clean_env(NO_COLOR="1", PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm", HOME=str(tmp_path))
        child = pexpect.spawn(
            ACTORFLOW,
            ["shell", *args],
            env=env,
            encoding="utf-8",
            dimensions=(50, 200),
            timeout=20,
        )
        children.append(child)
        return child

    try:
        yield spawn
    finally:
        for child in children:
            child.close(force=True)


@pytest.fixture
def actorflow() -> RunActorflow:
    """Run the ``actorflow`` console script; its completed process (text)."""

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ACTORFLOW, *argv], capture_output=True, text=True, timeout=30, env=clean_env()
        )

    return run
