"""Durable echo steps over HTTP: SQLite vs Redis, one daemon vs two sharing Redis.

Starts a redis-server (append-only, fsync always, on a free loopback port) and,
per configuration, actorflowd subprocesses serving 64 ``echo`` sessions:

- ``sqlite``: one daemon, the embedded SQLite store (fsync);
- ``redis``: one daemon on Redis;
- ``redis x2``: two daemons on one Redis, each request sent to one of them at
  random, so about half are forwarded to the daemon holding the session's lease.

A closed loop of C keep-alive clients steps the sessions for a fixed time: wrk
when it is installed (one wrk per daemon, C/N connections each, every one of
them stepping all the sessions in turn, from a different starting point, so
that each session's requests reach every daemon), else one asyncio loop with
one ``httpx.AsyncClient`` per daemon, each request to one of them at random.
httpx costs about 1 ms of CPU a request: alone on a core it tops out near
1,100 steps/s, below what one daemon serves, so its figures measure the
generator more than the daemons. Prints steps/s, p50 and p99 per configuration
and client count, one line each, with the daemons' CPU time per step (user +
system, from /proc), which a busy machine disturbs less.

    .venv-dev/bin/python bench/cluster.py [--quick] [--clients 16 64] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from _proc import process_cpu
from daemon_http import run_wrk

ROOT = Path(__file__).resolve().parents[1]
SESSIONS = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # polling a subprocess's port
    raise SystemExit(f"{url} not ready after {timeout} s")


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(workdir),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start") from None
            time.sleep(0.02)  # polling a port
    return process, f"redis://127.0.0.1:{port}/0"


def start_daemon(
    workdir: Path, name: str, store: str | None, *options: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    data = workdir / name
    data.mkdir()
    command = [
        sys.executable, "-m", "runtime", "--port", str(port), "--data-dir", str(data),
        "--log-format", "json", "--graphs", "flow.demo:GRAPHS", "--node-id", name,
    ]  # fmt: skip
    if store is not None:
        command += ["--store", store]
    command += options
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORFLOW_")}
    env["ACTORFLOW_WORKERS"] = "1"  # one process (the default is one worker per core)
    env["PYTHONPATH"] = str(ROOT)
    with (data / "daemon.log").open("wb") as log:
        process = subprocess.Popen(command, cwd=data, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/readyz")
    return process, url


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used (Linux /proc)."""
    return sum(process_cpu(pid) for pid in pids)


@dataclass(frozen=True, slots=True)
class Figure:
    rate: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # daemons' CPU per step (robust to a busy machine)


def generator() -> str:
    """What drives the load: ``wrk`` when installed, else ``httpx``."""
    return "wrk" if shutil.which("wrk") else "httpx"


async def run_load(urls: list[str], pids: list[int], clients: int, seconds: float) -> Figure:
    """``clients`` closed-loop clients stepping the sessions through ``urls`` (wrk, or
    httpx without it: see the module's docstring)."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    http = [httpx.AsyncClient(base_url=u, limits=limits, timeout=30.0) for u in urls]
    try:
        first = http[0]
        sessions = []
        for _ in range(SESSIONS):
            created = await first.post("/v1/sessions", json={"graph": "echo"})
            sessions.append(created.json()["session_id"])
        for sid in sessions:  # activate (and lease) every session once, anywhere
            await random.choice(http).post(f"/v1/sessions/{sid}/step", json={"input": "w"})
        if generator() == "wrk":
            return await _run_wrk(urls, pids, sessions, clients, seconds)
        latencies: list[float] = []
        errors = 0
        stop_at = time.monotonic() + seconds

        async def client(i: int) -> None:
            nonlocal errors
            rng = random.Random(i)
            k = i
            while time.monotonic() < stop_at:
                sid = sessions[k % SESSIONS]
                k += clients
                started = time.perf_counter()
                response = await rng.choice(http).post(
                    f"/v1/sessions/{sid}/step", json={"input": "x"}
                )
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

        began = time.monotonic()
        cpu_before = cpu_seconds(pids)
        await asyncio.gather(*(client(i) for i in range(clients)))
        elapsed = time.monotonic() - began
        cpu = cpu_seconds(pids) - cpu_before
    finally:
        for c in http:
            await c.aclose()
    if errors:
        print(f"  ({errors} non-200 answers)")
    latencies.sort()
    return Figure(
        rate=len(latencies) / elapsed,
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p99_ms=latencies[int(len(latencies) * 0.99)] * 1000,
        cpu_us=cpu / len(latencies) * 1e6,
    )


async def _run_wrk(
    urls: list[str], pids: list[int], sessions: list[str], clients: int, seconds: float
) -> Figure:
    """One wrk per daemon at once, ``clients`` connections in all; daemon i's wrk steps
    the sessions in turn from the i-th part of the list on, so every session is stepped
    through every daemon and, with two, about half of the requests are forwarded."""
    per = max(1, clients // len(urls))
    offsets = [len(sessions) * i // len(urls) for i in range(len(urls))]
    with tempfile.TemporaryDirectory(prefix="actorflow-bench-wrk-") as tmp:
        dirs = [Path(tmp) / str(i) for i in range(len(urls))]
        for each in dirs:
            each.mkdir()
        cpu_before = cpu_seconds(pids)
        loads = await asyncio.gather(
            *(
                asyncio.to_thread(run_wrk, url, sessions[o:] + sessions[:o], per, seconds, workdir)
                for url, o, workdir in zip(urls, offsets, dirs, strict=True)
            )
        )
        cpu = cpu_seconds(pids) - cpu_before
    steps = sum(load.steps for load in loads)
    errors = sum(load.errors for load in loads)
    if errors:
        print(f"  ({errors} non-200 answers)")
    return Figure(
        rate=sum(load.steps / load.seconds for load in loads),
        # wrk gives each process's percentiles: their mean by steps, and the worse p99
        p50_ms=sum(load.p50_ms * load.steps for load in loads) / max(steps, 1),
        p99_ms=max(load.p99_ms for load in loads),
        cpu_us=cpu / max(steps, 1) * 1e6,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per figure")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per figure")
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 64])
    args = parser.parse_args()
    seconds = 3.0 if args.quick else args.seconds
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    print(f"load generator: {generator()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="actorflow-bench-cluster-") as tmp:
        work = Path(tmp)
        redis_dir = work / "redis"
        redis_dir.mkdir()
        redis_process, redis_url = start_redis(redis_dir)
        try:
            for label, store, count in (
                ("sqlite", None, 1),
                ("redis", redis_url, 1),
                ("redis x2", redis_url, 2),
            ):
                config_dir = work / ("config-" + label.replace(" ", ""))
                config_dir.mkdir()
                daemons = [start_daemon(config_dir, f"n{i}", store) for i in range(count)]
                try:
                    urls = [url for _, url in daemons]
                    pids = [process.pid for process, _ in daemons]
                    for clients in args.clients:
                        fig = asyncio.run(run_load(urls, pids, clients, seconds))
                        print(
                            f"{label:9} clients={clients:3}  {fig.rate:7.0f} steps/s  "
                            f"p50 {fig.p50_ms:6.1f} ms  p99 {fig.p99_ms:6.1f} ms  "
                            f"daemon CPU {fig.cpu_us:5.0f} us/step",
                            flush=True,
                        )
                finally:
                    for process, _ in daemons:
                        process.send_signal(signal.SIGTERM)
                    for process, _ in daemons:
                        process.wait(30)
        finally:
            redis_process.terminate()
            redis_process.wait(10)


if __name__ == "__main__":
    main()
