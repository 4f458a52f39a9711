"""Helpers for the fault tests: real actorflowd subprocesses that a test may kill.

A ``Daemon`` runs ``python -m runtime`` on a free loopback port with the demo
graphs plus ``fault_graphs``, JSON logs into a file, and waits until ``/readyz``
answers 200; it can be SIGKILLed and started again on the same port and data
directory. ``RawHttp`` is a keep-alive HTTP/1.1 connection cheap enough for
load phases. The fixtures built on these live in conftest.py.

This module has a name of its own (not ``conftest``) so that the tests import it
unambiguously when pytest collects several test directories, each with its own
conftest.py, in one run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
from testkit import assert_problem as assert_problem
from testkit import create as create
from testkit import free_port as free_port
from testkit import wait_until as wait_until

from flow.stores import SqliteStore

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
READY_TIMEOUT = 60.0  # a cold start on a busy 2-core machine takes several seconds
GRAPHS = ("flow.demo:GRAPHS", "fault_graphs:GRAPHS")
TMPFS_SIZE = "4m"


def daemon_env() -> dict[str, str]:
    """A daemon subprocess's environment: fault_graphs importable, no ACTORFLOW_* from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE), str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    env["ACTORFLOW_WORKERS"] = "1"  # one process (the default is one worker per core)
    return env


class Daemon:
    """One actorflowd subprocess: its port, data directory and log; killable and restartable."""

    def __init__(self, workdir: Path, data_dir: Path, args: list[str]) -> None:
        self.workdir = workdir
        self.data_dir = data_dir
        self.args = args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def db_path(self) -> Path:
        """The SQLite file the daemon keeps its sessions in."""
        return self.data_dir / "sessions.db"

    @property
    def pid(self) -> int:
        """The running process's id."""
        assert self.process is not None, "the daemon was never started"
        return self.process.pid

    def command(self) -> list[str]:
        """The daemon's command line."""
        graphs = [arg for g in GRAPHS for arg in ("--graphs", g)]
        return [
            sys.executable, "-m", "runtime",
            "--port", str(self.port),
            "--data-dir", str(self.data_dir),
            "--log-format", "json",
            *graphs,
            *self.args,
        ]  # fmt: skip

    def start(self) -> Daemon:
        """Start the daemon (again, on the same port and data) and wait until it is ready."""
        assert self.process is None or self.process.poll() is not None, "already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                env=daemon_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        """Poll /readyz until it answers 200, failing early if the process exits."""
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"actorflowd exited with {self.process.returncode} before it was ready:\n"
                    + self.log_tail()
                )
            try:
                if httpx.get(self.url + "/readyz", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"actorflowd not ready after {READY_TIMEOUT} s:\n" + self.log_tail()
                )
            time.sleep(0.05)  # polling a subprocess's port: there is no event to wait on

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the daemon."""
        assert self.process is not None, "the daemon was never started"
        self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL the daemon and reap it."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(30)

    def terminate(self, timeout: float = 60.0) -> int | None:
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

    def rss_kib(self) -> int:
        """The daemon's resident set size (VmRSS) in KiB."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS in /proc/{self.pid}/status")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the daemon logged."""
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client for this daemon."""
        kwargs.setdefault("timeout", 30.0)
        return httpx.Client(base_url=self.url, **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An asyncio httpx client for this daemon."""
        kwargs.setdefault("timeout", 30.0)
        return httpx.AsyncClient(base_url=self.url, **kwargs)


StartDaemon = Callable[..., Daemon]
"""``start_daemon(*args, data_dir=None)``: a started daemon, stopped after the test."""


class RawHttp:
    """One keep-alive HTTP/1.1 connection speaking just enough HTTP for JSON requests.

    For load phases only: httpx's asyncio client spends several milliseconds of
    CPU per request, more than the daemon itself, and on a 2-core machine the
    client would measure itself. Responses must carry a Content-Length.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        """Open the connection (``OSError`` when nothing listens)."""
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def close(self) -> None:
        """Close the connection, if open."""
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):  # the daemon may have been killed under it
                await self._writer.wait_closed()

    async def __aenter__(self) -> RawHttp:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send one request (``body`` as JSON); the status and the decoded JSON body."""
        if self._reader is None or self._writer is None:
            raise RuntimeError("RawHttp.request outside 'async with'")
        payload = b"" if body is None else msgspec.json.encode(body)
        head = (
            f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{self.port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
        )
        self._writer.write(head.encode() + payload)
        status_line, *header_lines = (
            (await self._reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        )
        length = None
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        assert length is not None, f"no content-length in the answer to {method} {path}"
        raw = await self._reader.readexactly(length)
        return int(status_line.split()[1]), msgspec.json.decode(raw) if raw else None


def step(client: httpx.Client, session_id: str, input: Any = None) -> httpx.Response:
    """POST one step of ``session_id`` with ``input``."""
    return client.post(f"/v1/sessions/{session_id}/step", json={"input": input})


def metric(text: str, name: str) -> float:
    """The value of the unlabelled sample ``name`` in a Prometheus exposition."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no sample {name} in /metrics")


def stored_counts(db_path: Path, session_ids: list[str]) -> dict[str, int]:
    """Each session's stored ``count`` read through ``SqliteStore`` (the daemon must be stopped).

    Asserts every session loads (none unreadable, nothing quarantined).
    """
    with SqliteStore(db_path) as store:
        assert store.quarantined() == [], "a snapshot was quarantined"
        counts = {}
        for session_id in session_ids:
            session = store.load(session_id)
            assert session is not None, f"session {session_id} is missing from the store"
            counts[session_id] = int(session.context.get("count", 0))
    return counts
