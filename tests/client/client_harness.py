"""Helpers for the client tests: a real actorflowd subprocess, and a fault-injecting proxy.

``FaultProxy`` sits between a client and a daemon on loopback and understands
just enough HTTP/1.1 (head, ``content-length`` bodies) to act on whole requests:
for each request a ``plan`` callable picks ``PASS`` (forward), ``RESET`` (read
the request, then reset the client's connection without forwarding it: the
daemon never sees it) or ``DROP`` (forward it, read the daemon's whole answer,
then reset the client's connection instead of answering: the daemon did the
work, the client never hears of it). It is bounded: at most ``max_connections``
at once (more are closed at accept), requests and answers of at most 1 MiB,
socket timeouts of 30 s.
"""

from __future__ import annotations

import contextlib
import enum
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
from testkit import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
READY_TIMEOUT = 30.0
MAX_MESSAGE = 1 << 20
SOCKET_TIMEOUT = 30.0


class Daemon:
    """One actorflowd subprocess serving the demo graphs and ``client_graphs``."""

    def __init__(self, workdir: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.log_path = workdir / "daemon.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORFLOW_")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), str(ROOT)) if p)
        env["ACTORFLOW_WORKERS"] = "1"  # one process (the default is one worker per core)
        command = [
            sys.executable, "-m", "runtime", "--port", str(self.port),
            "--data-dir", str(workdir / "data"), "--log-format", "json",
            "--graphs", "flow.demo:GRAPHS", "--graphs", "client_graphs:GRAPHS", *args,
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"actorflowd exited early:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"actorflowd not ready:\n{self.log_tail()}")
            time.sleep(0.05)  # polling a subprocess's port: there is no event to wait on

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the daemon logged."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 30 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Fault(enum.Enum):
    """What the proxy does with one request."""

    PASS = "pass"
    RESET = "reset"
    DROP = "drop"


Plan = Callable[[bytes], Fault]


def _read_message(sock: socket.socket, buffer: bytearray) -> bytes | None:
    """One HTTP/1.1 message (head and content-length body) from ``sock``; None at EOF."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk
        if len(buffer) > MAX_MESSAGE:
            raise ConnectionError("message head too large")
    head_end = buffer.index(b"\r\n\r\n") + 4
    length = 0
    for line in bytes(buffer[:head_end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length > MAX_MESSAGE:
        raise ConnectionError("message body too large")
    while len(buffer) < head_end + length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    message = bytes(buffer[: head_end + length])
    del buffer[: head_end + length]
    return message


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP RST (SO_LINGER 0) rather than an orderly FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class FaultProxy:
    """A bounded loopback TCP proxy that resets or drops chosen requests (see module doc).

    Attributes:
        port: where it listens (127.0.0.1).
        counts: how many requests met each fault.
        dropped: the request heads that were DROPped (the daemon answered them).
    """

    def __init__(
        self, upstream_port: int, plan: Plan, *, port: int | None = None, max_connections: int = 64
    ) -> None:
        self.upstream_port = upstream_port
        self.plan = plan
        self.port = port if port is not None else free_port()
        self.counts: Counter[Fault] = Counter()
        self.dropped: list[bytes] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._open: set[socket.socket] = set()

    @property
    def url(self) -> str:
        """The proxy's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        """Listen and serve on a background thread."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.settimeout(0.2)
        self._listener = listener
        thread = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop accepting, close the open connections, and wait for their threads."""
        self._stopped.set()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(SOCKET_TIMEOUT)
        if self._listener is not None:
            self._listener.close()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                client.close()
                continue
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            with self._lock:
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        with self._lock:
            self._open.add(client)
        try:
            client.settimeout(SOCKET_TIMEOUT)
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), SOCKET_TIMEOUT)
            inbound, outbound = bytearray(), bytearray()
            while not self._stopped.is_set():
                request = _read_message(client, inbound)
                if request is None:
                    return
                fault = self.plan(request)
                with self._lock:
                    self.counts[fault] += 1
                if fault is Fault.RESET:
                    _reset(client)
                    return
                upstream.sendall(request)
                response = _read_message(upstream, outbound)
                if response is None:
                    return
                if fault is Fault.DROP:
                    with self._lock:
                        self.dropped.append(request)
                    _reset(client)
                    return
                client.sendall(response)
        except OSError:
            return
        finally:
            with self._lock:
                self._open.discard(client)
            if upstream is not None:
                upstream.close()
            if client.fileno() != -1:
                client.close()
            self._slots.release()
