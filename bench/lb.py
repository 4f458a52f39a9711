"""Two daemons on one Redis behind HAProxy, routing by session id, against round robin.

Starts a redis-server (append-only, fsync always), two actorflowd daemons on it
(cluster nodes ``n0`` and ``n1``) and HAProxy in front, configured by
docs/lb/haproxy.cfg itself (its ports replaced by free ones): ``balance uri
depth 3 path-only`` with ``hash-type consistent``, so every request naming a
session reaches one daemon. For each balancing (the shipped hash, then
``balance roundrobin`` in the same file), a closed loop of C keep-alive clients
steps 64 ``echo`` sessions through HAProxy for a fixed time (wrk, as
bench/daemon_http.py drives it). Prints, one line
each: steps/s, p50/p99, the daemons' CPU per step and the share of steps the
daemons forwarded to the session's lease holder (``actorflow_forwarded_total``).
Then, with the hash, one daemon is stopped (SIGTERM) under load and the next
seconds are measured one by one: the stopping daemon answers ``/readyz`` 503 for
its ``--drain-delay`` (``--drain-delay``, 2 s by default) while it still serves,
HAProxy's health check moves its sessions to the other daemon (which forwards
them to it meanwhile), and that daemon activates them once their leases are
released (the stopping daemon drains and releases them) or expire.

    .venv-dev/bin/python bench/lb.py [--quick] [--clients 64] [--seconds 5]

HAProxy and wrk come from Debian's packages (HAProxy is installed here when
missing and run as root). Writes ``bench/out/lb.png``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
from _plot import grouped_bars
from cluster import cpu_seconds, free_port, start_daemon, start_redis, wait_http
from daemon_http import run_wrk

ROOT = Path(__file__).resolve().parents[1]
DRAIN_DELAY = 2.0
"""The daemons' ``--drain-delay``: docs/lb/haproxy.cfg checks every 500 ms and takes a
daemon out after 2 failed checks, so a stopping daemon that answers ``/readyz`` 503 for
2 s while it still serves is out of the rotation before it turns requests away."""
CONFIG = ROOT / "docs" / "lb" / "haproxy.cfg"
OUT = Path(__file__).resolve().parent / "out" / "lb.png"
SESSIONS = 64
HASH = "balance uri depth 3 path-only"


@dataclass(frozen=True, slots=True)
class Window:
    """What one timed window measured."""

    rate: float
    p50_ms: float
    p99_ms: float
    cpu_us: float
    forwarded: float  # share of steps forwarded by a daemon to the lease holder
    errors: int


def haproxy_binary() -> str:
    """HAProxy's path, installed from Debian's packages when missing and root."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing haproxy (apt-get)", flush=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "haproxy"],
            check=True,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if found is None:
        raise SystemExit("haproxy is not installed (apt-get install haproxy)")
    return found


def configure(lb_port: int, daemon_ports: list[int], balance: str) -> str:
    """docs/lb/haproxy.cfg with this run's ports and ``balance`` line."""
    text = CONFIG.read_text()
    text = text.replace("127.0.0.1:8700", f"127.0.0.1:{lb_port}")
    for shipped, port in zip((8701, 8702), daemon_ports, strict=True):
        text = text.replace(f"127.0.0.1:{shipped}", f"127.0.0.1:{port}")
    if balance != HASH:
        text = text.replace(HASH, balance)
    return text


def forwarded_total(urls: list[str]) -> float:
    """``actorflow_forwarded_total`` summed over the daemons still answering."""
    total = 0.0
    for url in urls:
        try:
            text = httpx.get(url + "/metrics", timeout=5).text
        except httpx.TransportError:
            continue
        for line in text.splitlines():
            if line.startswith("actorflow_forwarded_total "):
                total += float(line.split()[1])
    return total


def window(
    lb: str,
    urls: list[str],
    pids: list[int],
    sessions: list[str],
    clients: int,
    seconds: float,
    work: Path,
) -> Window:
    """One timed window of steps through the balancer, driven by wrk (``clients``
    connections, each stepping the sessions round robin), as bench/daemon_http.py does."""
    before = forwarded_total(urls)
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    cpu_before = cpu_seconds(alive)
    load = run_wrk(lb, sessions, clients, seconds, work)
    cpu = cpu_seconds([pid for pid in alive if Path(f"/proc/{pid}").exists()]) - cpu_before
    done = max(load.steps, 1)
    return Window(
        rate=load.steps / load.seconds,
        p50_ms=load.p50_ms,
        p99_ms=load.p99_ms,
        cpu_us=cpu / done * 1e6,
        forwarded=(forwarded_total(urls) - before) / done,
        errors=load.errors,
    )


def report(label: str, clients: int, w: Window) -> None:
    """One line per window."""
    print(
        f"{label:28} clients={clients:3}  {w.rate:7,.0f} steps/s  p50 {w.p50_ms:6.1f} ms  "
        f"p99 {w.p99_ms:6.1f} ms  daemons' CPU {w.cpu_us:5,.0f} us/step  "
        f"forwarded {w.forwarded:6.1%}  errors {w.errors}",
        flush=True,
    )


def start_haproxy(binary: str, work: Path, text: str, lb: str) -> subprocess.Popen[bytes]:
    """HAProxy in the foreground on ``text``; returns once it answers /readyz."""
    path = work / "haproxy.cfg"
    path.write_text(text)
    log = (work / "haproxy.log").open("wb")
    process = subprocess.Popen([binary, "-db", "-f", str(path)], stdout=log, stderr=log)
    wait_http(lb + "/readyz")
    return process


def create_sessions(lb: str) -> list[str]:
    """``SESSIONS`` echo sessions created through the balancer (a create takes no lease)."""
    with httpx.Client(base_url=lb, timeout=30) as http:
        return [
            http.post("/v1/sessions", json={"graph": "echo"}).json()["session_id"]
            for _ in range(SESSIONS)
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s windows")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per window")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the PNG")
    parser.add_argument(
        "--drain-delay",
        type=float,
        default=DRAIN_DELAY,
        help="the daemons' --drain-delay (seconds; 0: the stopping daemon drains at once)",
    )
    args = parser.parse_args()
    seconds = 3.0 if args.quick else args.seconds
    failover_seconds = 5 if args.quick else 10
    binary = haproxy_binary()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    results: dict[str, Window] = {}
    with tempfile.TemporaryDirectory(prefix="actorflow-bench-lb-") as tmp:
        work = Path(tmp)
        (work / "redis").mkdir()
        redis_process, redis_url = start_redis(work / "redis")
        try:
            for balance, label in (
                (HASH, "hash of the session id"),
                ("balance roundrobin", "round robin"),
            ):
                run_dir = work / label.split()[0]
                run_dir.mkdir()
                delay = ("--drain-delay", str(args.drain_delay))
                daemons = [start_daemon(run_dir, f"n{i}", redis_url, *delay) for i in range(2)]
                urls = [url for _, url in daemons]
                pids = [process.pid for process, _ in daemons]
                lb_port = free_port()
                lb = f"http://127.0.0.1:{lb_port}"
                ports = [int(url.rsplit(":", 1)[1]) for url in urls]
                proxy = start_haproxy(binary, run_dir, configure(lb_port, ports, balance), lb)
                try:
                    sessions = create_sessions(lb)
                    window(
                        lb, urls, pids, sessions, args.clients, 1.0, run_dir
                    )  # warm up: activations
                    results[label] = window(
                        lb, urls, pids, sessions, args.clients, seconds, run_dir
                    )
                    report(label, args.clients, results[label])
                    if balance == HASH:
                        # one daemon stopped under load: steps/s second by second
                        daemons[1][0].send_signal(signal.SIGTERM)  # drains, releases leases
                        after = [
                            window(lb, urls, pids, sessions, args.clients, 1.0, run_dir)
                            for _ in range(failover_seconds)
                        ]
                        for second, w in enumerate(after, 1):
                            report(f"hash, n1 stopped, second {second}", args.clients, w)
                        results["hash, n1 stopped (last second)"] = after[-1]
                finally:
                    proxy.terminate()
                    proxy.wait(10)
                    for process, _ in daemons:
                        if process.poll() is None:
                            process.send_signal(signal.SIGTERM)
                    for process, _ in daemons:
                        process.wait(30)
        finally:
            redis_process.terminate()
            redis_process.wait(10)
    groups = list(results)
    grouped_bars(
        args.out,
        title=f"Two daemons on Redis behind HAProxy, {args.clients} clients",
        ylabel="steps/s",
        groups=groups,
        series={"steps/s": [results[g].rate for g in groups]},
    )
    print(f"plot: {args.out}", flush=True)
    for label in ("hash of the session id", "round robin"):
        print(f"forwarded share, {label}: {results[label].forwarded:.1%}", flush=True)


if __name__ == "__main__":
    main()
