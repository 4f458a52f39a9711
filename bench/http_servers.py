"""HTTP server A/B: Litestar on uvicorn+httptools against Granian, with and without the fast path.

Four servers run side by side, each a subprocess serving the daemon's own
application (``build_app``: gateway, fast step path, Litestar; the same
runtime, fsync durability, SQLite in a temporary directory, JSON access logs
to a file) on a free port:

- ``uvicorn+fast``: the daemon as it ships (uvloop, the guarded httptools protocol);
- ``uvicorn``: the same without the hand-written step path (Litestar answers steps);
- ``granian+fast`` / ``granian``: the same application under Granian's ASGI
  interface (its embedded server on the runtime's own uvloop, HTTP/1.1, the
  Rust runtime on one thread), with and without the fast path.

wrk drives each at 16 and 64 connections (64 fresh ``echo`` sessions per run,
stepped round robin), in rounds that visit the servers in alternating order.
The machine is shared and noisy: each round's rates are divided by that
round's ``uvicorn+fast`` rate, and the median of those ratios is the figure
to read. Prints one line per server and connection count (median steps/s,
p50/p99, the server's CPU per step), the ratios, the load average before and
after, and writes a PNG.

    .venv-dev/bin/python bench/http_servers.py [--quick] [--rounds N] [--out PATH]

Needs wrk (apt-get install wrk) and the bench extra (granian, matplotlib).
"""

from __future__ import annotations

import os
import sys

if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
    sys.path.append(sys.path.pop(0))  # keep bench/ importable, after the standard library

import argparse
import asyncio
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from daemon_http import Load, create_sessions, free_port, run_wrk

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "http_servers.png"
SERVERS = ("uvicorn+fast", "uvicorn", "granian+fast", "granian")
CONNECTIONS = (16, 64)
SESSIONS = 64


async def _serve(server: str, port: int, data_dir: Path) -> None:
    """One server on ``port`` until SIGTERM (runs in the child process)."""
    from runtime import AsyncRuntime
    from runtime.daemon import _app
    from runtime.daemon._auth import Authenticator
    from runtime.daemon._config import parse_config
    from runtime.daemon._graphs import load_graphs, pick_default_graph
    from runtime.daemon._logging import configure_logging
    from runtime.daemon._metrics import DaemonMetrics
    from runtime.daemon._routes import Api
    from runtime.daemon._server import DaemonServer, _uvicorn_config, gateway_policy, tune_gc

    args = ["--port", str(port), "--data-dir", str(data_dir), "--log-format", "json"]
    config = parse_config(args, isatty=False)
    configure_logging(config.log_format)
    graphs = load_graphs(config.graphs)
    runtime = await AsyncRuntime.open(data_dir=data_dir, graphs=graphs, config=config.runtime)
    api = Api(
        runtime=runtime,
        graphs=graphs,
        default_graph=pick_default_graph(graphs, None),
        max_inflight=config.max_inflight,
        metrics=DaemonMetrics(),
    )
    if not server.endswith("+fast"):
        _app.StepRoute = lambda app, api, max_body: app  # type: ignore[assignment,misc]
    app = _app.build_app(
        api, Authenticator.from_file(None), max_body=config.max_body, policy=gateway_policy(config)
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tune_gc()
    if server.startswith("uvicorn"):
        uv = DaemonServer(_uvicorn_config(app, config))
        serving = asyncio.create_task(uv.serve())
        await stop.wait()
        uv.should_exit = True
    else:
        from granian.constants import HTTPModes, Interfaces
        from granian.server.embed import Server

        gr = Server(
            app,
            address="127.0.0.1",
            port=port,
            interface=Interfaces.ASGINL,
            http=HTTPModes.http1,
            log_enabled=False,
            backlog=1024,
        )
        serving = asyncio.create_task(gr.serve())
        await stop.wait()
        gr.stop()
    await serving
    await runtime.aclose()


class Server:
    """One of the four servers in a subprocess (this script with ``--serve``)."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data_dir = workdir / name.replace("+", "-")
        data_dir.mkdir(parents=True)
        command = [sys.executable, __file__, "--serve", name, "--port", str(self.port)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORFLOW_")}
        env["PYTHONPATH"] = str(ROOT)
        with (data_dir / "server.log").open("wb") as log:
            self.process = subprocess.Popen(
                [*command, "--data-dir", str(data_dir)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.log = data_dir / "server.log"

    def wait_ready(self, timeout: float = 60) -> None:
        """Poll ``/readyz`` until it answers 200."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name} did not become ready in {timeout} s")
            time.sleep(0.05)  # polling a subprocess's port

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _load_average() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def measure(servers: list[Server], rounds: int, seconds: float, workdir: Path, out: Path) -> None:
    """Alternating rounds; print the figures and plot them."""
    runs: dict[tuple[str, int], list[tuple[Load, float]]] = {}
    print(f"load average before: {_load_average()} ({os.cpu_count()} cores)", flush=True)
    for index in range(rounds):
        order = servers if index % 2 == 0 else servers[::-1]
        for connections in CONNECTIONS:
            for server in order:
                sessions = create_sessions(server.url, SESSIONS)
                cpu = server.cpu_seconds()
                load = run_wrk(server.url, sessions, connections, seconds, workdir)
                cpu_us = (server.cpu_seconds() - cpu) / max(1, load.steps) * 1e6
                runs.setdefault((server.name, connections), []).append((load, cpu_us))
    print(f"load average after: {_load_average()}", flush=True)
    ratios: dict[tuple[str, int], float] = {}
    for connections in CONNECTIONS:
        for name in SERVERS:
            got = runs[(name, connections)]
            base = runs[("uvicorn+fast", connections)]
            ratios[(name, connections)] = statistics.median(
                load.rate / ref.rate for (load, _), (ref, _) in zip(got, base, strict=True)
            )
            rate = statistics.median(load.rate for load, _ in got)
            p50 = statistics.median(load.p50_ms for load, _ in got)
            p99 = statistics.median(load.p99_ms for load, _ in got)
            cpu_us = statistics.median(cpu for _, cpu in got)
            errors = sum(load.errors for load, _ in got)
            ratio = ratios[(name, connections)]
            failed = f", {errors} FAILED" if errors else ""
            print(
                f"{name} connections={connections}: {rate:,.0f} steps/s  p50 {p50:.2f} ms  "
                f"p99 {p99:.2f} ms  server CPU {cpu_us:.0f} us/step  x{ratio:.2f} "
                f"of uvicorn+fast (medians of {len(got)} rounds of {seconds:.0f} s, "
                f"wrk, fsync{failed})",
                flush=True,
            )
    plot(runs, ratios, out)


def plot(
    runs: dict[tuple[str, int], list[tuple[Load, float]]],
    ratios: dict[tuple[str, int], float],
    path: Path,
) -> None:
    """Steps/s ratio to uvicorn+fast and p99 by server, at each connection count."""
    try:
        import matplotlib
    except ImportError:
        print("plot: skipped (matplotlib missing: pip install -e '.[bench]')", flush=True)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rates, latency) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.38
    for offset, connections in enumerate(CONNECTIONS):
        xs = [i + (offset - 0.5) * width for i in range(len(SERVERS))]
        values = [ratios[(name, connections)] for name in SERVERS]
        bars = rates.bar(xs, values, width, label=f"{connections} connections")
        rates.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=8)
        p99 = [statistics.median(x.p99_ms for x, _ in runs[(n, connections)]) for n in SERVERS]
        latency.bar(xs, p99, width, label=f"{connections} connections")
    for axis in (rates, latency):
        axis.set_xticks(range(len(SERVERS)), SERVERS)
        axis.legend()
    rates.axhline(1.0, color="grey", linestyle=":")
    rates.set(title="steps/s / uvicorn+fast (median of rounds)", ylabel="ratio")
    latency.set(title="p99 (median of rounds)", ylabel="ms")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot: {path}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve one server (``--serve``), or run the A/B."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s (else 3 of 5 s)")
    parser.add_argument("--rounds", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        import uvloop

        uvloop.run(_serve(args.serve, args.port, args.data_dir))
        return
    if shutil.which("wrk") is None:
        raise SystemExit("bench/http_servers.py needs wrk: apt-get install wrk")
    try:
        import granian  # noqa: F401
    except ImportError:
        raise SystemExit("bench/http_servers.py needs granian: pip install -e '.[bench]'") from None
    rounds = args.rounds or (2 if args.quick else 3)
    seconds = 2.0 if args.quick else 5.0
    with tempfile.TemporaryDirectory(prefix="actorflow-servers-bench-") as tmp:
        workdir = Path(tmp)
        servers = [Server(name, workdir) for name in SERVERS]
        try:
            for server in servers:
                server.wait_ready()
            measure(servers, rounds, seconds, workdir, args.out)
        finally:
            for server in servers:
                server.stop()


if __name__ == "__main__":
    main()
