"""Two plain daemons as the workers of ``actorflowd --workers 2`` would run them, and the
fan-out (runtime/daemon/_shards.py, _admin_fanout.py) on an event loop of its own.

Each worker is ``python -m runtime --data-dir ROOT/shard-K --uds ROOT/shard-K/http.sock``
with a tokens file, so its admin socket is ``ROOT/shard-K/admin.sock``; the parent's
admin socket is ``ROOT/admin.sock``. ROOT is a short directory under /tmp (a unix
socket path holds at most 107 bytes; pytest's tmp_path can be longer).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import httpx
from daemon_harness import daemon_env, write_tokens

from runtime.admin import AdminClient, AdminError
from runtime.daemon._admin_fanout import AdminFanout, serve_admin_fanout
from runtime.daemon._shards import FanOut, FanOutAnswer, FanOutRequest

READY_TIMEOUT = 30.0
TOKENS = {"tok-alice": "alice", "tok-bob": "bob", "tok-root": "root admin"}
T = TypeVar("T")


class LoopThread:
    """An asyncio event loop in a daemon thread: the front's loop in these tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the loop; its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def close(self) -> None:
        """Stop the loop and its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class Worker:
    """One plain daemon on its own data directory, serving HTTP on a unix socket."""

    def __init__(self, root: Path, shard: int, tokens: Path) -> None:
        self.shard = shard
        self.data_dir = root / f"shard-{shard}"
        self.http_socket = self.data_dir / "http.sock"
        self.admin_socket = self.data_dir / "admin.sock"
        self.log_path = root / f"worker-{shard}.log"
        command = [
            sys.executable, "-m", "runtime",
            "--data-dir", str(self.data_dir),
            "--uds", str(self.http_socket),
            "--tokens", str(tokens),
            "--log-format", "json",
            "--graphs", "flow.demo:GRAPHS",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, env=daemon_env(), stdout=log, stderr=subprocess.STDOUT
            )

    def wait_ready(self) -> None:
        """Poll /readyz on the unix socket and the admin socket (another process: no event)."""
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"worker {self.shard} exited early:\n{self.log_tail()}")
            try:
                _probe(self.http_socket)  # httpx leaves a refused unix socket unclosed
                with self.client() as client:
                    if client.get("/readyz").status_code == 200:
                        with AdminClient(self.admin_socket, timeout=5.0) as admin:
                            admin.call("stats")
                        return
            except (OSError, httpx.TransportError, AdminError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {self.shard} not ready:\n{self.log_tail()}")
            time.sleep(0.05)

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client of this worker alone (over its unix socket)."""
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.http_socket)),
            base_url="http://localhost",
            headers=headers,
            timeout=30.0,
        )

    def admin(self) -> AdminClient:
        """A client of this worker's own admin socket."""
        return AdminClient(self.admin_socket)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the worker logged."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait (SIGKILL after ``timeout``); the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def _probe(path: Path) -> None:
    """Connect to the unix socket ``path`` and close again.

    Raises:
        OSError: nobody listens there (yet).
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))


class Shards:
    """Two workers, the HTTP fan-out and the parent's admin socket."""

    def __init__(self, workers: int = 2) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="afx", dir="/tmp"))
        tokens = write_tokens(self.root / "tokens", TOKENS)
        self.workers = [Worker(self.root, k, tokens) for k in range(workers)]
        self.loop = LoopThread()
        self.fan_out: FanOut | None = None
        self.admin_server: AdminFanout | None = None
        try:
            for worker in self.workers:
                worker.wait_ready()
            self.fan_out = FanOut([w.http_socket for w in self.workers])
            self.admin_server = self.loop.run(
                serve_admin_fanout(self.admin_socket, [w.admin_socket for w in self.workers])
            )
        except BaseException:
            self.close()
            raise

    @property
    def admin_socket(self) -> Path:
        """The parent's admin socket."""
        return self.root / "admin.sock"

    def admin(self) -> AdminClient:
        """A client of the parent's admin socket."""
        return AdminClient(self.admin_socket)

    def get(self, target: str, token: str | None = None) -> FanOutAnswer:
        """``GET target`` through the fan-out, as the front would hand it over."""
        headers = [(b"host", b"localhost"), (b"accept", b"*/*")]
        if token:
            headers.append((b"authorization", f"Bearer {token}".encode()))
        assert self.fan_out is not None
        request = FanOutRequest("GET", target.encode(), headers)
        return self.loop.run(self.fan_out.answer(request))

    def close(self) -> None:
        """Stop everything and remove the directory."""
        try:
            if self.admin_server is not None:
                self.loop.run(self.admin_server.close())
            if self.fan_out is not None:
                self.loop.run(self.fan_out.aclose())
        finally:
            self.loop.close()
            for worker in self.workers:
                worker.stop()
            shutil.rmtree(self.root, ignore_errors=True)


def header(answer: FanOutAnswer, name: str) -> str:
    """One header of ``answer`` (the first of that name)."""
    wanted = name.lower().encode()
    return next(v.decode() for k, v in answer.headers if k.lower() == wanted)
