"""Helpers for the cluster tests: actorflowd subprocesses sharing one real redis-server
or PostgreSQL database (``Backend``: what a test asks of the store they share).

(A module of its own, not conftest.py: ``from conftest import`` finds whichever
conftest was imported first when several test directories run together.)

``Node.start`` runs ``python -m runtime`` (tests/daemon on its import path, for
``TEST_GRAPHS``) on a free loopback port with
``--store <redis url> --lease-ttl LEASE_TTL --node-id <name>`` (advertising its
own URL), JSON logs into a file, and waits until ``/readyz`` answers 200. Every
node a test started is stopped after it (SIGCONT, SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from testkit import free_port as free_port
from testkit import wait_until as wait_until

from runtime.admin import AdminClient

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 30.0
LEASE_TTL = 1.0
TEST_GRAPHS = ("--graphs", "graphs_for_tests:GRAPHS")
"""Extra flags serving tests/daemon/graphs_for_tests.py (``gated``: a step held on a file)."""


def sse_frames(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The SSE frames read from ``lines``: ``event`` and the decoded JSON ``data``
    (comments, the heartbeats, skipped)."""
    frame: dict[str, Any] = {}
    for line in lines:
        if line.startswith("event: "):
            frame["event"] = line[7:]
        elif line.startswith("data: "):
            frame["data"] = json.loads(line[6:])
        elif not line and "event" in frame:
            yield frame
            frame = {}


class Node:
    """One actorflowd subprocess of the cluster."""

    def __init__(self, workdir: Path, name: str, redis_url: str, extra: list[str]) -> None:
        self.name = name
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = workdir / "data"
        self.log_path = workdir / "daemon.log"
        self.command = [
            sys.executable, "-m", "runtime",
            "--port", str(self.port),
            "--data-dir", str(self.data_dir),
            "--log-format", "json",
            "--graphs", "flow.demo:GRAPHS",
            "--store", redis_url,
            "--lease-ttl", str(LEASE_TTL),
            "--node-id", name,
            *extra,
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None
        self._http: httpx.Client | None = None

    @property
    def http(self) -> httpx.Client:
        """This node's keep-alive client for the test's own thread (closed by ``stop``)."""
        if self._http is None:
            self._http = self.client()
        return self._http

    def start(self) -> Node:
        """Start the node and wait until /readyz answers 200."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORFLOW_")}
        env["ACTORFLOW_WORKERS"] = "1"  # one process (the default is one worker per core)
        paths = (
            str(ROOT),
            str(ROOT / "tests"),
            str(ROOT / "tests" / "daemon"),
            env.get("PYTHONPATH"),
        )
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"node {self.name} exited:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"node {self.name} not ready:\n{self.log_tail()}")
            time.sleep(0.05)  # polling a subprocess's port: there is no event to wait on

    def client(self, **kwargs: Any) -> httpx.Client:
        """A keep-alive HTTP client of this node."""
        return httpx.Client(base_url=self.url, timeout=30.0, **kwargs)

    def live(self) -> set[str]:
        """Ids of the sessions live in this node (from its admin socket's ``ls``)."""
        with AdminClient(self.data_dir / "admin.sock", timeout=10.0) as admin:
            result = admin.call("ls")
        return {s["session_id"] for s in result["sessions"]}

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines whose event is ``name``."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == name:
                found.append(record)
        return found

    def metric(self, name: str) -> float:
        """The value of the unlabelled sample ``name`` in this node's ``/metrics`` now."""
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"no {name} in node {self.name!r}'s /metrics")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the node logged."""
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the node."""
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL the node and reap it."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        """Resume (if paused), SIGTERM, wait; SIGKILL after 20 s."""
        if self._http is not None:
            self._http.close()
            self._http = None
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


StartNode = Callable[..., Node]


def create_session(node: Node, graph: str = "echo") -> str:
    """Create a session through ``node``; its id."""
    response = node.http.post("/v1/sessions", json={"graph": graph})
    assert response.status_code == 201, response.text
    session_id: str = response.json()["session_id"]
    return session_id


def peer_mark(redis_url: str, method: str, path: str, epoch: str, deadline: str) -> str:
    """The ``X-Actorflow-Forwarded`` mark a daemon of the cluster on ``redis_url`` would send
    with a request (an HMAC with the cluster's secret, which the daemons keep in Redis; made
    here, as a daemon would, if none has been yet)."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.set("actorflow:cluster-secret", secrets.token_hex(32), nx=True)
        secret = client.get("actorflow:cluster-secret")
    finally:
        client.close()
    assert isinstance(secret, bytes)
    fields = [method.encode(), path.encode(), epoch.encode(), deadline.encode()]
    return hmac.new(secret, b"\n".join(fields), hashlib.sha256).hexdigest()


class Backend:
    """The store a cluster test's daemons share, and what the test asks of it directly."""

    kind = ""

    def __init__(self, url: str) -> None:
        self.url = url

    def lease_node(self, session_id: str) -> str | None:
        """The node holding ``session_id``'s lease (None: no live lease)."""
        raise NotImplementedError

    def secret(self) -> bytes:
        """The cluster's secret, made as a daemon would if none has been yet."""
        raise NotImplementedError

    def quarantined(self) -> int:
        """How many snapshots were quarantined."""
        raise NotImplementedError

    def drop_lease(self, session_id: str) -> None:
        """Free ``session_id``'s lease behind its holder's back (as if it had been paused
        past its ttl)."""
        raise NotImplementedError

    def stop(self) -> None:
        """Take the server down (an outage)."""
        raise NotImplementedError

    def start(self) -> None:
        """Bring the server back."""
        raise NotImplementedError

    def peer_mark(self, method: str, path: str, epoch: str = "", deadline: str = "") -> str:
        """The ``X-Actorflow-Forwarded`` mark a daemon of the cluster would send with a
        request (an HMAC with the cluster's secret)."""
        fields = [method.encode(), path.encode(), epoch.encode(), deadline.encode()]
        return hmac.new(self.secret(), b"\n".join(fields), hashlib.sha256).hexdigest()


class RedisBackend(Backend):
    kind = "redis"

    def __init__(self, server: Any) -> None:
        super().__init__(server.url)
        self.server = server

    def lease_node(self, session_id: str) -> str | None:
        client = redis.Redis.from_url(self.url)
        try:
            node = client.hget(f"actorflow:lease:{session_id}", "node")
        finally:
            client.close()
        return None if node is None else node.decode()

    def secret(self) -> bytes:
        client = redis.Redis.from_url(self.url)
        try:
            client.set("actorflow:cluster-secret", secrets.token_hex(32), nx=True)
            secret = client.get("actorflow:cluster-secret")
        finally:
            client.close()
        assert isinstance(secret, bytes)
        return secret

    def quarantined(self) -> int:
        client = redis.Redis.from_url(self.url)
        try:
            return int(client.llen("actorflow:quarantine"))
        finally:
            client.close()

    def drop_lease(self, session_id: str) -> None:
        client = redis.Redis.from_url(self.url)
        try:
            client.delete(f"actorflow:lease:{session_id}")
        finally:
            client.close()

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.start()


class PostgresBackend(Backend):
    kind = "postgres"

    def __init__(self, server: Any) -> None:
        super().__init__(server.fresh_url())
        self.server = server

    def _query(self, sql: str, *params: object) -> Any:
        with psycopg.connect(self.url) as conn:
            return conn.execute(sql, params).fetchone()

    def lease_node(self, session_id: str) -> str | None:
        row = self._query(
            "SELECT node FROM leases WHERE session_id = %s AND expires_at > clock_timestamp()",
            session_id,
        )
        return None if row is None else str(row[0])

    def secret(self) -> bytes:
        with psycopg.connect(self.url) as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS cluster_secret "
                "(id INT PRIMARY KEY, secret TEXT NOT NULL)"
            )
            conn.execute(
                "INSERT INTO cluster_secret (id, secret) VALUES (1, %s) "
                "ON CONFLICT (id) DO NOTHING",
                (secrets.token_hex(32),),
            )
            row = conn.execute("SELECT secret FROM cluster_secret WHERE id = 1").fetchone()
        assert row is not None
        return str(row[0]).encode()

    def quarantined(self) -> int:
        return int(self._query("SELECT count(*) FROM quarantine")[0])

    def drop_lease(self, session_id: str) -> None:
        with psycopg.connect(self.url) as conn:
            conn.execute(
                "UPDATE leases SET node = NULL, advertise = NULL, expires_at = NULL "
                "WHERE session_id = %s",
                (session_id,),
            )

    def stop(self) -> None:
        self.server.stop("fast")

    def start(self) -> None:
        self.server.start()
