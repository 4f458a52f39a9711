"""Helpers every test directory shares: free ports, bounded polling, HTTP checks, a
session that talks to a store, a child process to SIGKILL.

``tests/`` is on ``sys.path`` (pytest puts the root conftest's directory there),
so any test module or harness imports these as ``from testkit import ...``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from flow import Session, new_session, step
from flow.demo import echo
from flow.stores import SessionStore

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    """Wait until something accepts TCP connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                message = f"nothing listening on {host}:{port} after {timeout} s"
                raise TimeoutError(message) from None
            time.sleep(0.02)  # polling a port: there is no event to wait on


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``condition`` until it is truthy and return its value; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {what or condition}")
        time.sleep(0.01)  # polling a condition with a deadline: there is no event to wait on


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """Assert ``response`` is a problem+json of ``status`` and type ``...:slug``; its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].endswith(":" + slug), body
    assert body["title"]
    assert body["detail"]
    assert "Traceback" not in response.text
    return body


def create(client: httpx.Client, graph: str = "echo", **context: Any) -> str:
    """Create a session of ``graph`` (with ``context``) over HTTP; its id."""
    body: dict[str, Any] = {"graph": graph}
    if context:
        body["context"] = context
    response = client.post("/v1/sessions", json=body)
    assert response.status_code == 201, response.text
    session_id: str = response.json()["session_id"]
    return session_id


def replayed_bytes(store: Any, session_id: str) -> int:
    """Bytes of step records a load of ``session_id`` replays after its base (0: its log
    was just compacted)."""
    loaded = store.load(session_id)
    assert loaded is not None
    assert loaded.stored_size is not None
    base, bound = loaded.stored_size
    return int(bound - base)


def talked(
    store: SessionStore,
    steps: int,
    session_id: str = "talker",
    *,
    text: str = "message {}",
    owner: str = "t",
) -> Session:
    """A new echo session saved, then stepped ``steps`` times with ``text`` (formatted
    with the step's number), each step saved; the last session."""
    session = new_session(echo, owner=owner, session_id=session_id)
    store.save(session, None).result(timeout=10)
    for i in range(steps):
        new, _ = step(echo, session, text.format(i))
        store.save(new, session.revision).result(timeout=10)
        session = new
    return session


def start_child(code: str, *args: str) -> subprocess.Popen[str]:
    """Run ``code`` (``python -c``) with ``args`` on this tree; its stdout is a text pipe."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def kill(child: subprocess.Popen[str]) -> None:
    """SIGKILL ``child`` and reap it."""
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    if child.stdout is not None:
        child.stdout.close()
