"""``--workers N`` routing options, prototyped: steps/s and p99 at 64 connections, 1 vs 2 workers.

A prototype for the design in docs/internals.md ("One host, several worker
processes"), not the feature. A *worker* here is an ordinary daemon
(``python -m runtime``, fsync, SQLite in its own directory: a file per shard).
Options, measured in alternating rounds of the same run with wrk:

- ``direct, 1 worker``: wrk straight to one daemon (what ships today);
- ``front, 1 worker``: the same through a thin routing front (below): the hop's cost;
- ``front, 2 workers``: the front routing each request to the daemon that owns
  its session, by a hash of the session id;
- ``ideal, 2 workers``: two wrk processes, each straight to one daemon with
  only its sessions (what any routing could at best reach: no hop at all; the
  ceiling for SO_REUSEPORT workers that pass a connection to its owner, when
  every connection's sessions live on the worker the kernel picked).

The front is one uvloop process that does not parse HTTP: it reads up to the
end of the headers, takes the session id from the request line and
``Content-Length``, and relays the bytes (request and answer) over one kept-alive
connection per client connection and worker (loopback TCP here, since the
daemons listen on TCP; a Unix socket would cost a little less).

    .venv-dev/bin/python bench/workers_routing.py [--quick] [--rounds N]
"""

from __future__ import annotations

import os
import sys

if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
    sys.path.append(sys.path.pop(0))  # keep bench/ importable, after the standard library

import argparse
import asyncio
import hashlib
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from daemon_http import Daemon, Load, create_sessions, free_port, run_wrk

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "workers_routing.png"
CONNECTIONS = 64
SESSIONS = 64
OPTIONS = ("direct, 1 worker", "front, 1 worker", "front, 2 workers", "ideal, 2 workers")


def shard(session_id: str, workers: int) -> int:
    """The worker that owns ``session_id`` (a stable hash, fixed for a data directory)."""
    return int.from_bytes(hashlib.blake2b(session_id.encode(), digest_size=8).digest()) % workers


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One HTTP/1.1 message with a Content-Length body: (head, whole message)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return head, head + body


async def _front(ports: list[int], listen: int) -> None:
    """Relay each request to its session's worker until SIGTERM (the front's process)."""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        try:
            while True:
                head, message = await _read_message(reader)
                path = head.split(b" ", 2)[1].decode()
                parts = path.split("/")
                owner = shard(parts[3], len(ports)) if len(parts) > 3 and parts[3] else 0
                if owner not in upstream:
                    upstream[owner] = await asyncio.open_connection("127.0.0.1", ports[owner])
                up_reader, up_writer = upstream[owner]
                up_writer.write(message)
                _, answer = await _read_message(up_reader)
                writer.write(answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            for _, up_writer in upstream.values():
                up_writer.close()

    server = await asyncio.start_server(client, "127.0.0.1", listen, backlog=1024)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


class Front:
    """The routing front in a subprocess (this script with ``--front``)."""

    def __init__(self, ports: list[int]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, __file__, "--front", ",".join(map(str, ports))]
        self.process = subprocess.Popen([*command, "--port", str(self.port)])
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.url + "/readyz", timeout=1)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise SystemExit("the front did not start in 30 s") from None
                time.sleep(0.05)  # polling a subprocess's port

    def cpu_seconds(self) -> float:
        """CPU time the front has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """SIGTERM and wait."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)


def owned_sessions(daemon: Daemon, index: int, workers: int, count: int) -> list[str]:
    """``count`` new echo sessions on ``daemon`` whose ids hash to worker ``index``."""
    found: list[str] = []
    while len(found) < count:
        found += [s for s in create_sessions(daemon.url, count) if shard(s, workers) == index]
    return found[:count]


def merge(loads: list[Load]) -> Load:
    """Two wrk runs side by side as one (rates add; the worse percentile)."""
    return Load(
        clients=sum(x.clients for x in loads),
        steps=sum(x.steps for x in loads),
        errors=sum(x.errors for x in loads),
        seconds=max(x.seconds for x in loads),
        p50_ms=max(x.p50_ms for x in loads),
        p99_ms=max(x.p99_ms for x in loads),
    )


def run_option(
    option: str, daemons: list[Daemon], fronts: dict[int, Front], seconds: float, workdir: Path
) -> tuple[Load, float]:
    """One run of ``option``; its load and the front's CPU per step (0 without a front)."""
    if option == "direct, 1 worker":
        sessions = create_sessions(daemons[0].url, SESSIONS)
        return run_wrk(daemons[0].url, sessions, CONNECTIONS, seconds, workdir), 0.0
    if option == "ideal, 2 workers":
        shares = [owned_sessions(d, i, 2, SESSIONS // 2) for i, d in enumerate(daemons)]
        with ThreadPoolExecutor(2) as pool:
            parts = [
                pool.submit(run_wrk, d.url, share, CONNECTIONS // 2, seconds, workdir / f"w{i}")
                for i, (d, share) in enumerate(zip(daemons, shares, strict=True))
            ]
            return merge([part.result() for part in parts]), 0.0
    workers = 1 if option == "front, 1 worker" else 2
    front = fronts[workers]
    sessions: list[str] = []
    for i in range(workers):
        sessions += owned_sessions(daemons[i], i, workers, SESSIONS // workers)
    cpu = front.cpu_seconds()
    load = run_wrk(front.url, sessions, CONNECTIONS, seconds, workdir)
    return load, (front.cpu_seconds() - cpu) / max(1, load.steps) * 1e6


def plot(rates: dict[str, float], p99: dict[str, float], path: Path, title: str) -> None:
    """Steps/s ratio to direct and p99 by option."""
    try:
        import matplotlib
    except ImportError:
        print("plot: skipped (matplotlib missing: pip install -e '.[bench]')", flush=True)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [option.replace(", ", "\n") for option in OPTIONS]
    bars = left.bar(labels, [rates[o] for o in OPTIONS])
    left.bar_label(bars, labels=[f"{rates[o]:.2f}" for o in OPTIONS], fontsize=8)
    left.axhline(1.0, color="grey", linestyle=":")
    left.set(title=f"steps/s / direct, {CONNECTIONS} connections (median of rounds)")
    right.bar(labels, [p99[o] for o in OPTIONS])
    right.set(title="p99 (median of rounds)", ylabel="ms")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot: {path}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the front (``--front``), or the measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s (else 3 of 5 s)")
    parser.add_argument("--rounds", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the PNG")
    parser.add_argument("--front", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.front:
        import uvloop

        uvloop.run(_front([int(p) for p in args.front.split(",")], args.port))
        return
    rounds = args.rounds or (2 if args.quick else 3)
    seconds = 2.0 if args.quick else 5.0
    with tempfile.TemporaryDirectory(prefix="actorflow-workers-bench-") as tmp:
        workdir = Path(tmp)
        for i in range(2):
            (workdir / f"w{i}").mkdir()
        daemons = [Daemon(workdir / f"data{i}", "fsync") for i in range(2)]
        fronts = {1: Front([daemons[0].port]), 2: Front([d.port for d in daemons])}
        runs: dict[str, list[tuple[Load, float]]] = {}
        try:
            print(f"load average before: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
            for index in range(rounds):
                order = OPTIONS if index % 2 == 0 else OPTIONS[::-1]
                for option in order:
                    runs.setdefault(option, []).append(
                        run_option(option, daemons, fronts, seconds, workdir)
                    )
            print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
        finally:
            for front in fronts.values():
                front.stop()
            for daemon in daemons:
                daemon.stop()
    base = runs["direct, 1 worker"]
    ratios: dict[str, float] = {}
    p99s: dict[str, float] = {}
    for option in OPTIONS:
        got = runs[option]
        ratio = statistics.median(
            load.rate / ref.rate for (load, _), (ref, _) in zip(got, base, strict=True)
        )
        ratios[option] = ratio
        p99s[option] = statistics.median(x.p99_ms for x, _ in got)
        front_cpu = statistics.median(cpu for _, cpu in got)
        hop = f"  front CPU {front_cpu:.0f} us/step" if front_cpu else ""
        print(
            f"workers {option} connections={CONNECTIONS}: "
            f"{statistics.median(x.rate for x, _ in got):,.0f} steps/s  "
            f"p50 {statistics.median(x.p50_ms for x, _ in got):.2f} ms  "
            f"p99 {statistics.median(x.p99_ms for x, _ in got):.2f} ms{hop}  "
            f"x{ratio:.2f} of direct (medians of {len(got)} rounds of {seconds:.0f} s, wrk, fsync)",
            flush=True,
        )
    plot(ratios, p99s, args.out, f"load average {os.getloadavg()[0]:.1f}, fsync, wrk")


if __name__ == "__main__":
    main()
