"""Helpers for the attack tests: raw sockets, and the daemon-stays-healthy check."""

from __future__ import annotations

import socket
import time

import httpx
from daemon_harness import Daemon
from testkit import create

# /healthz must answer this fast while an attack runs; the best of a few tries, so a
# load spike on the shared test machine is not taken for a stalled event loop
HEALTH_BUDGET = 0.1
HEALTH_TRIES = 5


def connect(daemon: Daemon, timeout: float = 5.0) -> socket.socket:
    """A raw TCP connection to the daemon."""
    sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket) -> bytes:
    """Everything the daemon sends until it closes the connection (or the timeout)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def raw_request(daemon: Daemon, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection (asking it be closed after); the reply."""
    with connect(daemon, timeout) as sock:
        sock.sendall(data)
        return read_response(sock)


def status_of(response: bytes) -> int:
    """The status code of a raw HTTP response."""
    assert response.startswith(b"HTTP/1."), response[:200]
    return int(response.split(b" ", 2)[1])


def assert_healthy(daemon: Daemon, token: str | None = None) -> None:
    """/healthz answers within ``HEALTH_BUDGET`` and a normal step succeeds (as
    ``token``'s user when given)."""
    best = float("inf")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=daemon.url, timeout=5.0, headers=headers) as client:
        for _ in range(HEALTH_TRIES):
            started = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            best = min(best, time.perf_counter() - started)
            if best < HEALTH_BUDGET:
                break
        assert best < HEALTH_BUDGET, f"/healthz took {best:.3f} s at best"
        session_id = create(client)
        step = client.post(f"/v1/sessions/{session_id}/step", json={"input": "still here"})
        assert step.status_code == 200, step.text
