"""``actorflowd --workers N``: the parent process, its N workers, and their supervision.

The parent holds ``DATA_DIR/daemon.lock`` and the listening socket, and runs the
front (runtime/daemon/_front.py) and the admin socket that fans out to the
workers on one uvloop event loop. Worker K is an ordinary daemon started as
``python -m runtime`` with the parent's own arguments plus ``--data-dir
DATA_DIR/shard-K --uds DATA_DIR/shard-K/http.sock --shard K/N`` (and ``--node-id
NODE-K`` on a shared Redis/PostgreSQL store); it holds its own shard's lock.

- Start: every worker is started and must answer ``/readyz`` before the parent
  listens; a worker that exits first (a bad ``--graphs``, a locked shard) stops
  the start with its exit status.
- A worker that exits later is restarted after a backoff (0.5 s, doubling, at
  most 5 s); meanwhile the front answers its shard with 503 ``worker-unavailable``.
  More than ``MAX_RESTARTS`` restarts in ``RESTART_WINDOW`` seconds stop the daemon
  with status 1 (OTP's restart intensity, as for session actors). The restarted
  worker recovers its sessions from its shard's store as after any restart.
- SIGTERM/SIGINT: the parent stops listening, closes idle client connections and
  sends SIGTERM to every worker, which drains as a single daemon does; requests in
  flight are answered through the front as the workers finish them. It exits with
  the worst worker status. A second signal kills the workers and exits 1 at once.
- A worker gets SIGTERM when the parent dies (``PR_SET_PDEATHSIG``), so no worker
  outlives a killed parent.

Threads: one event loop; the only other thread is the kernel's.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import os
import signal
import ssl
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import structlog

from actors._restarts import RestartIntensity
from flow._session import claim_session_ids
from runtime.daemon._admin_fanout import AdminFanout, serve_admin_fanout
from runtime.daemon._config import DaemonConfig
from runtime.daemon._front import Front, FrontLimits, Upstream
from runtime.daemon._logging import flush_logs
from runtime.daemon._server import connection_limits, default_max_connections
from runtime.daemon._sharding import http_socket, shard_dir, shard_of, write_ui_key
from runtime.daemon._shards import close_fan_out, fan_out
from runtime.daemon._stop_signals import StopSignals
from runtime.daemon._storage import secure_data_dir

__all__ = [
    "MAX_RESTARTS",
    "RESTART_WINDOW",
    "WorkerPool",
    "run_workers",
    "worker_config",
    "worker_shares",
]

MAX_RESTARTS = 3
RESTART_WINDOW = 60.0
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 5.0
START_TIMEOUT = 60.0
# workers never close the front's idle connections: the front pools them
WORKER_KEEPALIVE = 3600
EXIT_FAILED = 1
_PR_SET_PDEATHSIG = 1
_log = structlog.get_logger("actorflowd")


def worker_config(config: DaemonConfig) -> DaemonConfig:
    """The configuration a daemon runs with; on a worker (``--shard K/N``) it also draws
    only session ids of shard K from now on, and leaves TLS to the front."""
    if not config.shard:
        return config
    index, n = (int(part) for part in config.shard.split("/"))
    claim_session_ids(lambda session_id: shard_of(session_id, n) == index)
    return dataclasses.replace(config, tls_cert=None, tls_key=None)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def worker_command(config: DaemonConfig, argv: Sequence[str], index: int, node: str) -> list[str]:
    """Worker ``index``'s command line: the parent's arguments, then the worker's own."""
    shard = shard_dir(config.data_dir, index)
    extra = [
        "--workers", "1",
        "--shard", f"{index}/{config.workers}",
        "--data-dir", str(shard),
        "--uds", str(http_socket(config.data_dir, index)),
        "--keepalive-timeout", str(WORKER_KEEPALIVE),
    ]  # fmt: skip
    if config.runtime.store:
        extra += ["--node-id", f"{node}-{index}"]
    return [sys.executable, "-m", "runtime", *argv, *extra, *worker_shares(config)]


def worker_shares(config: DaemonConfig) -> list[str]:
    """Each worker's share of the daemon-wide caps, as flags (a total over N workers).

    Sessions spread evenly over the shards by their hash, so a cap on the whole
    daemon (steps in flight, live actors, tails, timers fired per second) becomes
    ``ceil(total / N)`` per worker. Limits per user (``--user-step-rate``,
    ``--max-sessions-per-user``) and per session stay as given, counted by each
    worker (docs/internals.md, "Limits").
    """
    n = config.workers
    runtime = config.runtime
    shares = {
        "--max-inflight": config.max_inflight,
        "--max-live": runtime.max_live,
        "--max-tails": runtime.max_tails,
        "--timer-fire-rate": runtime.timer_fire_rate,
    }
    return [part for flag, total in shares.items() for part in (flag, str(-(-total // n)))]


async def _ready(path: Path) -> bool:
    """Whether the worker on ``path`` answers ``GET /readyz`` with 200."""
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
    except OSError:
        return False
    try:
        writer.write(b"GET /readyz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        line = await asyncio.wait_for(reader.readline(), 5.0)
        return line.split(b" ")[1:2] == [b"200"]
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        writer.close()


class WorkerPool:
    """The N worker processes: start, watch, restart, stop."""

    def __init__(self, config: DaemonConfig, argv: Sequence[str], front: Front) -> None:
        self.config = config
        self.argv = list(argv)
        self.front = front
        self.node = config.runtime.node_id or uuid.uuid4().hex[:12]
        self.processes: list[asyncio.subprocess.Process | None] = [None] * config.workers
        self.statuses: list[int] = [0] * config.workers
        self.stopping = False
        self.failed = asyncio.Event()
        self._intensity = RestartIntensity(MAX_RESTARTS, RESTART_WINDOW)
        self._watchers: list[asyncio.Task[None]] = []

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        command = worker_command(self.config, self.argv, index, self.node)
        process = await asyncio.create_subprocess_exec(*command, preexec_fn=_die_with_parent)
        self.processes[index] = process
        _log.info("worker_started", worker=index, pid=process.pid)
        return process

    async def _until_ready(self, index: int, process: asyncio.subprocess.Process) -> bool:
        """Wait until worker ``index`` answers /readyz; False if it exited first."""
        path = http_socket(self.config.data_dir, index)
        deadline = time.monotonic() + START_TIMEOUT
        while process.returncode is None and time.monotonic() < deadline:
            if await _ready(path):
                self.front.upstreams[index].up = True
                return True
            await asyncio.sleep(0.05)  # polling another process's socket: no event to wait on
        return False

    async def start(self) -> int:
        """Start every worker and wait until all are ready; 0, or the failed start's status."""
        processes = [await self._spawn(index) for index in range(self.config.workers)]
        ready = await asyncio.gather(*(self._until_ready(i, p) for i, p in enumerate(processes)))
        if not all(ready):
            await self.stop()
            return max((p.returncode or 0 for p in processes), default=0) or EXIT_FAILED
        self._watchers = [
            asyncio.create_task(self._watch(index)) for index in range(self.config.workers)
        ]
        return 0

    async def _watch(self, index: int) -> None:
        """Restart worker ``index`` whenever it exits, until the pool stops or gives up."""
        backoff = FIRST_BACKOFF
        while True:
            process = self.processes[index]
            assert process is not None
            status = await process.wait()
            self.front.upstreams[index].mark_down()
            if self.stopping:
                self.statuses[index] = status
                return
            allowed, count = self._intensity.allow(str(index), time.monotonic())
            _log.error("worker_exited", worker=index, status=status, restarts=count)
            if not allowed:
                _log.error("worker_restarts_exhausted", worker=index, window=RESTART_WINDOW)
                self.statuses[index] = status or EXIT_FAILED
                self.failed.set()
                return
            await asyncio.sleep(backoff)  # the restart backoff itself
            backoff = min(MAX_BACKOFF, backoff * 2) if count > 1 else FIRST_BACKOFF
            if self.stopping:
                return
            process = await self._spawn(index)
            if await self._until_ready(index, process):
                _log.info("worker_restarted", worker=index, pid=process.pid)
            elif process.returncode is None and not self.stopping:
                process.kill()  # never ready: counted as another crash

    def signal_all(self, signum: int) -> None:
        """Send ``signum`` to every running worker."""
        for process in self.processes:
            if process is not None and process.returncode is None:
                process.send_signal(signum)

    async def stop(self) -> int:
        """SIGTERM every worker and wait for all to exit; the worst exit status."""
        self.stopping = True
        self.signal_all(signal.SIGTERM)
        for process in self.processes:
            if process is not None:
                await process.wait()
        for watcher in self._watchers:
            await watcher
        statuses = [p.returncode or 0 for p in self.processes if p is not None]
        return max((_exit_status(s) for s in [*statuses, *self.statuses]), default=0)


def _exit_status(returncode: int) -> int:
    """A child's return code as a shell reports it (killed by signal S: 128 + S)."""
    return returncode if returncode >= 0 else 128 - returncode


def _ssl_context(config: DaemonConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


async def _admin_fanout(config: DaemonConfig) -> AdminFanout:
    """The parent's admin socket, over the workers' (runtime/daemon/_admin_fanout.py)."""
    sockets = [shard_dir(config.data_dir, k) / "admin.sock" for k in range(config.workers)]
    return await serve_admin_fanout(config.data_dir / "admin.sock", sockets)


async def run_workers(config: DaemonConfig, argv: Sequence[str]) -> int:
    """Run the parent until SIGTERM/SIGINT (or a worker that keeps crashing); the exit status.

    Must run on the main thread's event loop (it installs signal handlers).
    """
    secure_data_dir(config.data_dir)
    write_ui_key(config.data_dir)
    for index in range(config.workers):
        shard_dir(config.data_dir, index).mkdir(mode=0o700, exist_ok=True)
    upstreams = [Upstream(k, http_socket(config.data_dir, k)) for k in range(config.workers)]
    connections = connection_limits(config)
    if not config.max_connections:  # each client connection may hold one to a worker too
        connections = dataclasses.replace(
            connections, max_connections=max(64, default_max_connections() // 2)
        )
    limits = FrontLimits(connections, config.max_body, config.keepalive_timeout)
    front = Front(upstreams, limits, fan_out)
    pool = WorkerPool(config, argv, front)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def drain(signum: int) -> None:
        _log.info("draining", signal=signal.Signals(signum).name)
        stop.set()

    def exit_now() -> None:
        pool.signal_all(signal.SIGKILL)
        flush_logs()
        os._exit(EXIT_FAILED)

    # during a drain delay the front answers /readyz 503 itself and relays the rest as
    # before; the workers (which ignore the delay) are told once it has passed
    signals = StopSignals(
        loop, announce=lambda: setattr(front, "unready", True), drain=drain, exit_now=exit_now
    )
    signals.install()
    status = await pool.start()
    if status:
        return status
    if stop.is_set():
        return await pool.stop()
    try:
        admin = await _admin_fanout(config)
        server = await loop.create_server(
            front.protocol,
            config.host,
            config.port,
            backlog=2048,
            ssl=_ssl_context(config),
        )
    except BaseException:
        await pool.stop()
        raise
    signals.delay = config.drain_delay  # the front listens: a stop may now be announced
    _log.info(
        "starting",
        url=f"{'https' if config.tls_cert else 'http'}://{config.host}:{config.port}",
        workers=config.workers,
        data_dir=str(config.data_dir),
    )
    failed = asyncio.create_task(pool.failed.wait())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([failed, stopped], return_when=asyncio.FIRST_COMPLETED)
    failed.cancel()
    stopped.cancel()
    server.close()
    front.close_idle()
    try:
        status = await pool.stop()
    finally:
        front.abort_all()
        await admin.close()
        await close_fan_out()
    if pool.failed.is_set():
        return max(status, EXIT_FAILED)
    _log.info("stopped", status=status)
    return status
