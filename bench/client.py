"""Steps/s through ``runtime.client.Client`` against raw httpx, in the same run.

A daemon subprocess (``python -m runtime``, ``commit`` durability so that the
daemon's per-step cost is small and the client's share shows, SQLite in a
temporary directory) serves 16 ``echo`` sessions. One thread steps them round
robin, as fast as answers come, alternately through (then the same with
asyncio: one task per session on one loop, ``httpx.AsyncClient`` against
``AsyncClient``):

- ``raw httpx``: an ``httpx.Client`` with keep-alive posting the JSON body and
  decoding the JSON answer into a dict (what a hand-written caller does);
- ``runtime.client``: ``Client.step``, which also sends a fresh
  ``Idempotency-Key`` and an ``X-Request-ID``, and returns a ``StepResult``.

Rounds alternate (raw, client, raw, client, ...) so that both meet the same
machine load; each figure is the median over the rounds. The client process's
own CPU time per step (``time.process_time``) is the steadier figure on a
shared machine. The target: the client costs at most 10% of steps/s.

    .venv-dev/bin/python bench/client.py [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.client import AsyncClient, Client  # noqa: E402

OUT = ROOT / "bench" / "out" / "client.png"
SESSIONS = 16
TARGET_COST = 0.10


@dataclass(frozen=True, slots=True)
class Round:
    """One timed round of one side."""

    steps: int
    seconds: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.steps / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.steps * 1e6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_daemon(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "runtime", "--port", str(port), "--data-dir", str(data_dir),
        "--durability", "commit", "--log-format", "json", "--graphs", "flow.demo:GRAPHS",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORFLOW_")}
    env["ACTORFLOW_WORKERS"] = "1"  # one process (the default is one worker per core)
    env["PYTHONPATH"] = str(ROOT)
    with (data_dir / "daemon.log").open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise SystemExit("actorflowd exited before it was ready")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("actorflowd did not become ready in 60 s")
        time.sleep(0.05)  # polling a subprocess's port


def timed(step: Callable[[str, int], object], sessions: list[str], seconds: float) -> Round:
    steps = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    end = started + seconds
    while True:
        for sid in sessions:
            step(sid, steps)
            steps += 1
        now = time.perf_counter()
        if now >= end:
            return Round(steps, now - started, time.process_time() - cpu_started)


async def timed_async(
    step: Callable[[str, int], Awaitable[object]], sessions: list[str], seconds: float
) -> Round:
    """Every session stepped by its own task on one event loop, as fast as answers come."""
    counts = [0] * len(sessions)
    started, cpu_started = time.perf_counter(), time.process_time()
    end = started + seconds

    async def drive(i: int, sid: str) -> None:
        while time.perf_counter() < end:
            await step(sid, counts[i])
            counts[i] += 1

    await asyncio.gather(*(drive(i, sid) for i, sid in enumerate(sessions)))
    elapsed = time.perf_counter() - started
    return Round(sum(counts), elapsed, time.process_time() - cpu_started)


async def async_rounds(
    url: str, sessions: list[str], rounds: int, seconds: float
) -> tuple[list[Round], list[Round]]:
    """Alternating rounds of ``httpx.AsyncClient`` and ``AsyncClient``, 16 steps in flight."""
    limits = httpx.Limits(max_connections=SESSIONS)
    async with (
        AsyncClient(url, limits=limits) as client,
        httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as raw,
    ):

        async def raw_step(sid: str, n: int) -> object:
            response = await raw.post(f"/v1/sessions/{sid}/step", json={"input": n})
            response.raise_for_status()
            return response.json()

        async def client_step(sid: str, n: int) -> object:
            return await client.step(sid, n)

        await timed_async(raw_step, sessions, 0.5)
        await timed_async(client_step, sessions, 0.5)
        raws, clients = [], []
        for _ in range(rounds):
            raws.append(await timed_async(raw_step, sessions, seconds))
            clients.append(await timed_async(client_step, sessions, seconds))
        return raws, clients


def report(name: str, raws: list[Round], clients: list[Round], rounds: int) -> tuple[float, float]:
    """Print one side's lines; the two median rates."""
    raw_rate = statistics.median(r.rate for r in raws)
    client_rate = statistics.median(r.rate for r in clients)
    raw_cpu = statistics.median(r.cpu_us for r in raws)
    client_cpu = statistics.median(r.cpu_us for r in clients)
    cost = 1 - client_rate / raw_rate
    print(f"{name} raw httpx: {raw_rate:,.0f} steps/s, {raw_cpu:.0f} us client CPU per step")
    print(
        f"{name} runtime.client: {client_rate:,.0f} steps/s, "
        f"{client_cpu:.0f} us client CPU per step"
    )
    verdict = "met" if cost <= TARGET_COST else "MISSED"
    print(
        f"{name} client cost: {cost:+.1%} steps/s, {client_cpu - raw_cpu:+.0f} us CPU per step "
        f"(target <= {TARGET_COST:.0%}: {verdict}; median of {rounds} alternating rounds)"
    )
    return raw_rate, client_rate


def plot(rates: dict[str, tuple[float, float]], path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from _plot import grouped_bars

    grouped_bars(
        path,
        title="Steps through runtime.client against raw httpx (keep-alive)",
        ylabel="steps/s",
        groups=list(rates),
        series={
            "raw httpx": [raw for raw, _ in rates.values()],
            "runtime.client": [client for _, client in rates.values()],
        },
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 1 s per side")
    parser.add_argument("--out", type=Path, default=OUT, help="the PNG to write")
    args = parser.parse_args(argv)
    rounds, seconds = (3, 1.0) if args.quick else (7, 2.0)
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        process, url = start_daemon(Path(tmp))
        try:
            with Client(url) as client, httpx.Client(base_url=url, timeout=30) as raw:
                sessions = [client.create_session("echo") for _ in range(SESSIONS)]

                def raw_step(sid: str, n: int) -> object:
                    response = raw.post(f"/v1/sessions/{sid}/step", json={"input": n})
                    response.raise_for_status()
                    return response.json()

                def client_step(sid: str, n: int) -> object:
                    return client.step(sid, n)

                timed(raw_step, sessions, 0.5)  # warm up both paths and the sessions
                timed(client_step, sessions, 0.5)
                raws, clients = [], []
                for _ in range(rounds):
                    raws.append(timed(raw_step, sessions, seconds))
                    clients.append(timed(client_step, sessions, seconds))
                async_raws, async_clients = asyncio.run(
                    async_rounds(url, sessions, rounds, seconds)
                )
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    print(f"load average: {os.getloadavg()[0]:.2f} (1 min)")
    rates = {
        "sync, 1 thread": report("sync", raws, clients, rounds),
        "asyncio, 16 in flight": report("async", async_raws, async_clients, rounds),
    }
    plot(rates, args.out)
    print(f"plot: {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
