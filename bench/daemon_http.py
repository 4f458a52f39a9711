"""Durable steps through the HTTP daemon: steps/s and p50/p99 at 1, 16, 64 and 256 clients.

A daemon subprocess (``python -m runtime``, fsync durability, SQLite in a temporary
directory, JSON access logs to a file) serves 64 ``echo`` sessions. A closed loop of
C keep-alive clients steps them (client i steps sessions i, i+C, ... in turn) as
fast as answers come, for a fixed time; each client count gets 64 new sessions.
The load generator runs on the same machine: with ``--load-procs N`` the clients
are split over N processes, each an asyncio loop with one ``httpx.AsyncClient``
(by default one process per 16 clients, at most 2: on a 2-core machine the
generator competes with the daemon for CPU).
When ``wrk`` is installed it drives the same workload instead (``--generator``
picks one; each wrk thread steps the sessions round robin): an httpx client
costs more CPU per request than the daemon does, so on a small machine the
Python generator measures itself as much as the daemon.

With ``--against REF`` a second daemon runs the code of git revision REF (its
files exported to a temporary directory, the same virtualenv), and each client
count is measured on both in alternating rounds: "before" and "after" in one
run, as ratios of the two (the machine's noise hits both alike).

    .venv-dev/bin/python bench/daemon_http.py [--quick] [--generator auto|httpx|wrk]
                                       [--durability fsync] [--against REF] [--steady]
                                       [--out PATH]

With ``--steady`` each client count's sessions are first stepped (wrk, 64
connections) past the default history retention of 1,000 revisions, so that the
figures are those of sessions that keep talking: their logs drop an old revision
for each new one. Fresh sessions (the default) run their first thousand steps,
which cost less (docs/benchmarks.md, round 11).

Prints one line per client count (with the daemon's CPU time per step, read from
/proc: steadier than steps/s on a shared machine), then the targets (>= 7,000 steps/s at 64
clients with p99 <= 25 ms; p99 <= 5 ms at 16 clients), and writes a PNG.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's directory comes first on sys.path: keep bench/'s
# modules importable (http_servers.py imports this one), after the standard library.
if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
    sys.path.append(sys.path.pop(0))

import argparse
import asyncio
import multiprocessing
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import httpx
from _proc import process_cpu

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "http.png"
SESSIONS = 64
CLIENT_COUNTS = (1, 16, 64, 256)
#: --steady: the revision each session passes first (the default retention is 1,000)
STEADY_REVISION = 1_100
WRK_SCRIPT = """
-- Every session's request is formatted once (init), then sent in turn: wrk shares the
-- 2 cores with the daemon, and formatting each request again cost it ~6 us of ~27.
local requests = {}
local i = 0
init = function(args)
  for s in string.gmatch(args[1], "[^,]+") do
    table.insert(requests, wrk.format("POST", "/v1/sessions/" .. s .. "/step",
      {["content-type"] = "application/json"}, '{"input":"x"}'))
  end
end
request = function()
  i = i + 1
  return requests[(i % #requests) + 1]
end
"""


@dataclass(frozen=True, slots=True)
class Load:
    """One closed-loop run."""

    clients: int
    steps: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        """Successful steps per second."""
        return self.steps / self.seconds if self.seconds else 0.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile of already sorted values (nearest rank)."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


class Daemon:
    """actorflowd in a subprocess on a free port."""

    def __init__(
        self,
        data_dir: Path,
        durability: str,
        extra_args: Sequence[str] = (),
        code: Path = ROOT,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = data_dir / "daemon.log"
        command = [
            sys.executable, "-m", "runtime",
            "--port", str(self.port),
            "--data-dir", str(data_dir),
            "--durability", durability,
            "--log-format", "json",
            "--graphs", "flow.demo:GRAPHS",
            *extra_args,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORFLOW_")}
        env["ACTORFLOW_WORKERS"] = "1"  # one process (the default is one worker per core)
        env["PYTHONPATH"] = str(code)  # ahead of the editable install: this code runs
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"actorflowd exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("actorflowd did not become ready in 60 s")
            time.sleep(0.05)  # polling a subprocess's port

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the daemon process has used so far."""
        return process_cpu(self.process.pid)

    def stop(self) -> int:
        """SIGTERM and wait; the exit status."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def create_sessions(url: str, count: int) -> list[str]:
    """Create ``count`` echo sessions; their ids."""
    with httpx.Client(base_url=url, timeout=30) as client:
        ids = []
        for _ in range(count):
            response = client.post("/v1/sessions", json={"graph": "echo"})
            response.raise_for_status()
            ids.append(response.json()["session_id"])
        return ids


async def _client_loop(
    client: httpx.AsyncClient,
    sessions: list[str],
    stop_at: float,
    latencies: list[float],
    errors: list[int],
) -> None:
    turn = 0
    body = b'{"input":"x"}'
    headers = {"content-type": "application/json"}
    while True:
        started = time.perf_counter()
        if started >= stop_at:
            return
        session_id = sessions[turn % len(sessions)]
        turn += 1
        try:
            response = await client.post(
                f"/v1/sessions/{session_id}/step", content=body, headers=headers
            )
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        if ok:
            latencies.append(time.perf_counter() - started)
        else:
            errors[0] += 1


async def _generate(
    url: str, per_client: list[list[str]], seconds: float
) -> tuple[list[float], int, float]:
    limits = httpx.Limits(
        max_connections=len(per_client), max_keepalive_connections=len(per_client)
    )
    latencies: list[float] = []
    errors = [0]
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        warm = [client.post(f"/v1/sessions/{s[0]}/step", json={}) for s in per_client]
        await asyncio.gather(*warm)
        started = time.perf_counter()
        stop_at = started + seconds
        await asyncio.gather(
            *(_client_loop(client, s, stop_at, latencies, errors) for s in per_client)
        )
        elapsed = time.perf_counter() - started
    return latencies, errors[0], elapsed


def _generator_process(
    url: str, per_client: list[list[str]], seconds: float, out: multiprocessing.Queue[object]
) -> None:
    try:
        import uvloop

        result = uvloop.run(_generate(url, per_client, seconds))
    except ImportError:
        result = asyncio.run(_generate(url, per_client, seconds))
    out.put(result)


def run_httpx(url: str, sessions: list[str], clients: int, seconds: float, procs: int) -> Load:
    """A closed loop of ``clients`` httpx clients spread over ``procs`` processes."""
    assignments = [sessions[i::clients] or [sessions[i % len(sessions)]] for i in range(clients)]
    procs = max(1, min(procs, clients))
    shares = [assignments[p::procs] for p in range(procs)]
    queue: multiprocessing.Queue[object] = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=_generator_process, args=(url, share, seconds, queue))
        for share in shares
    ]
    for worker in workers:
        worker.start()
    latencies: list[float] = []
    errors = 0
    elapsed = 0.0
    for _ in workers:
        part = cast("tuple[list[float], int, float]", queue.get(timeout=seconds + 120))
        part_latencies, part_errors, part_elapsed = part
        latencies.extend(part_latencies)
        errors += part_errors
        elapsed = max(elapsed, part_elapsed)
    for worker in workers:
        worker.join(30)
    latencies.sort()
    return Load(
        clients=clients,
        steps=len(latencies),
        errors=errors,
        seconds=elapsed,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
    )


def run_wrk(url: str, sessions: list[str], clients: int, seconds: float, workdir: Path) -> Load:
    """The same closed loop driven by wrk (one connection per client)."""
    script = workdir / "step.lua"
    script.write_text(WRK_SCRIPT)
    threads = max(1, min(2, clients))
    result = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{clients}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            url,
            "--",
            ",".join(sessions),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return _parse_wrk(result.stdout, clients)


def _ms(text: str) -> float:
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    for unit in ("us", "ms", "s"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


def _parse_wrk(output: str, clients: int) -> Load:
    p50 = p99 = 0.0
    steps = errors = 0
    seconds = 1.0
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "50%":
            p50 = _ms(parts[1])
        elif len(parts) == 2 and parts[0] == "99%":
            p99 = _ms(parts[1])
        elif "requests in" in line:
            steps = int(parts[0])
            seconds = _ms(parts[3].rstrip(",")) / 1000
        elif line.strip().startswith("Non-2xx"):
            errors = int(parts[-1])
    return Load(clients, steps - errors, errors, seconds, p50, p99)


def plot(runs: dict[str, list[Load]], path: Path, title: str) -> None:
    """Steps/s and p50/p99 by client count, one series per daemon."""
    try:
        import matplotlib
    except ImportError:
        print("plot: skipped (matplotlib missing: pip install -e '.[bench]')", flush=True)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rates, latency) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / len(runs)
    for n, (name, loads) in enumerate(runs.items()):
        xs = [i + (n - (len(runs) - 1) / 2) * width for i in range(len(loads))]
        bars = rates.bar(xs, [load.rate for load in loads], width, label=name)
        rates.bar_label(bars, labels=[f"{load.rate:,.0f}" for load in loads], fontsize=7)
        at = range(len(loads))
        latency.plot(at, [load.p50_ms for load in loads], "o-", label=f"{name} p50")
        latency.plot(at, [load.p99_ms for load in loads], "o--", label=f"{name} p99")
    labels = [str(load.clients) for load in next(iter(runs.values()))]
    for axis in (rates, latency):
        axis.set_xticks(range(len(labels)), labels)
    rates.axhline(7000, color="grey", linestyle=":", label="target at 64 clients")
    rates.set(title="durable steps/s over HTTP", xlabel="clients", ylabel="steps/s")
    rates.legend(fontsize=7)
    latency.axhline(25, color="grey", linestyle=":")
    latency.axhline(5, color="grey", linestyle=":")
    latency.set(title="step latency (client side)", xlabel="clients", ylabel="ms", yscale="log")
    latency.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot: {path}", flush=True)


def export(ref: str, into: Path) -> Path:
    """The files of git revision ``ref`` in a new directory under ``into``."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def talked_past_retention(daemon: Daemon, sessions: list[str], workdir: Path) -> int:
    """Step ``sessions`` (wrk, 64 connections) until each is past the default history
    retention (1,000 revisions) and its log drops old revisions as it goes: the
    steady state of a session that keeps talking. Returns the revision reached."""
    revision = 0
    for _ in range(100):  # 3 s rounds: 256 sessions at 2,000 steps/s take about 150 s
        run_wrk(daemon.url, sessions, 64, 3, workdir)
        revisions = [
            int(httpx.get(f"{daemon.url}/v1/sessions/{sid}", timeout=10).json()["revision"])
            for sid in (sessions[0], sessions[-1])
        ]
        revision = min(revisions)
        if revision > STEADY_REVISION:
            return revision
    raise SystemExit(f"--steady: sessions reached revision {revision}, not {STEADY_REVISION}")


def measure(
    daemon: Daemon,
    clients: int,
    seconds: float,
    generator: str,
    procs: int,
    workdir: Path,
    *,
    steady: bool = False,
) -> tuple[Load, float]:
    """One closed loop on fresh sessions (with ``steady``, on sessions stepped past the
    retention window first): the load and the daemon's CPU µs per step."""
    # fresh sessions per run: every echo step grows the chat history that each
    # snapshot carries, so reused sessions would slow later runs down
    sessions = create_sessions(daemon.url, max(SESSIONS, clients))
    if steady:
        talked_past_retention(daemon, sessions, workdir)
    cpu_before = daemon.cpu_seconds()
    if generator == "wrk":
        load = run_wrk(daemon.url, sessions, clients, seconds, workdir)
    else:
        load = run_httpx(daemon.url, sessions, clients, seconds, procs or min(2, clients // 16))
    return load, (daemon.cpu_seconds() - cpu_before) / max(1, load.steps) * 1e6


def profile(daemon: Daemon, seconds: float, path: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling ``daemon`` for the next run: the thread holding the GIL only (CPU)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    path.parent.mkdir(parents=True, exist_ok=True)
    command = [py_spy, "record", "--pid", str(daemon.process.pid), "--format", "raw", "--gil"]
    command += ["--duration", str(max(1, round(seconds - 1))), "--rate", "250", "-o", str(path)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# Where a step's CPU goes: each py-spy sample is charged to the layer of its deepest
# frame that names one (first matching rule wins for that frame).
LAYERS = (
    ("socket writes (uvloop send)", ("CoalescingTransport._send",)),
    ("access log and log writer", ("daemon/_logging.py", "structlog/")),
    ("metrics", ("daemon/_metrics.py", "prometheus_client/")),
    ("step route and Api.run_step", ("_step_route.py", "daemon/_routes.py", "daemon/_sse.py")),
    ("gateway: ids, policy, auth", ("_gateway.py", "_policy.py", "daemon/_auth.py", "_http.py")),
    ("uvicorn + httptools protocol", ("httptools_impl.py", "daemon/_transport.py")),
    ("runtime hand-offs", ("runtime/_runtime.py", "runtime/_core.py", "_bridge.py", "_live_index")),
    ("SQLite writer and compactor", ("flow/stores/",)),
    ("step engine (flow)", ("flow/",)),
    ("actors: dispatch, session actor, commit", ("actors/", "pykka/")),
    ("asyncio event loop", ("asyncio/",)),
)


def layers(path: Path) -> list[tuple[str, float]]:
    """The share of py-spy's samples (collapsed stacks) charged to each layer."""
    shares: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        total += int(count)
        label = "other"
        for frame in reversed(stack.split(";")):
            label = next((name for name, keys in LAYERS if any(k in frame for k in keys)), "")
            if label:
                break
        shares[label or "other"] = shares.get(label or "other", 0) + int(count)
    return sorted(((k, v / max(1, total)) for k, v in shares.items()), key=lambda kv: -kv[1])


def _median_load(loads: list[Load]) -> Load:
    """The run with the median rate."""
    return sorted(loads, key=lambda load: load.rate)[len(loads) // 2]


def main(argv: Sequence[str] | None = None) -> None:
    """Start the daemon(s), run the closed loops, print the figures and targets, plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1.5 s per client count (else 5 s)")
    parser.add_argument("--durability", default="fsync", choices=["fsync", "commit", "passivate"])
    parser.add_argument("--load-procs", type=int, default=0, help="generator processes (0: auto)")
    parser.add_argument(
        "--generator",
        choices=["auto", "httpx", "wrk"],
        default="auto",
        help="load generator: wrk when installed (auto), or asyncio + httpx",
    )
    parser.add_argument("--against", metavar="REF", help="also run git revision REF, alternating")
    parser.add_argument("--rounds", type=int, default=0, help="rounds per count (with --against)")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="PATH",
        help="py-spy's collapsed stacks of this tree's daemon during the 64-client run",
    )
    parser.add_argument(
        "--steady",
        action="store_true",
        help="step each client count's sessions past the history retention window first "
        "(needs wrk): sessions that keep talking, not fresh ones",
    )
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the PNG")
    args = parser.parse_args(argv)
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "httpx"
    if args.steady and shutil.which("wrk") is None:
        raise SystemExit("--steady needs wrk (apt-get install wrk) to step sessions that far")
    if generator == "wrk" and shutil.which("wrk") is None:
        raise SystemExit("--generator wrk: wrk is not installed (apt-get install wrk)")
    seconds = 1.5 if args.quick else 5.0
    rounds = args.rounds or (1 if args.quick or not args.against else 3)
    runs: dict[str, list[Load]] = {}
    with tempfile.TemporaryDirectory(prefix="actorflow-http-bench-") as tmp:
        workdir = Path(tmp)
        daemons = {"this tree": Daemon(workdir / "data", args.durability)}
        if args.against:
            code = export(args.against, workdir / "against")
            daemons[args.against] = Daemon(workdir / "data-against", args.durability, code=code)
        try:
            for clients in CLIENT_COUNTS:
                got: dict[str, list[tuple[Load, float]]] = {name: [] for name in daemons}
                for index in range(rounds):
                    order = list(daemons.items())
                    for name, daemon in order if index % 2 == 0 else order[::-1]:
                        spy = None
                        if args.profile and clients == 64 and index == 0 and name == "this tree":
                            spy = profile(daemon, seconds, args.profile)
                        got[name].append(
                            measure(
                                daemon,
                                clients,
                                seconds,
                                generator,
                                args.load_procs,
                                workdir,
                                steady=args.steady,
                            )
                        )
                        if spy is not None:
                            spy.wait(60)
                            for layer, share in layers(args.profile):
                                print(f"profile clients=64: {share:5.1%} {layer}", flush=True)
                for name, results in got.items():
                    load = _median_load([load for load, _ in results])
                    cpu_us = statistics.median(cpu for _, cpu in results)
                    runs.setdefault(name, []).append(load)
                    failed = f", {load.errors} FAILED" if load.errors else ""
                    label = f"[{name}] " if args.against else ""
                    print(
                        f"http {label}clients={clients}: {load.rate:,.0f} steps/s  "
                        f"p50 {load.p50_ms:.2f} ms  p99 {load.p99_ms:.2f} ms  "
                        f"daemon CPU {cpu_us:.0f} us/step  ({load.steps:,} steps in "
                        f"{load.seconds:.1f} s, {generator}, {args.durability}{failed})",
                        flush=True,
                    )
                if args.against:
                    ours, theirs = (got[name] for name in daemons)
                    ratio = statistics.median(
                        a.rate / max(1e-9, b.rate)
                        for (a, _), (b, _) in zip(ours, theirs, strict=True)
                    )
                    cpu = statistics.median(
                        a / max(1e-9, b) for (_, a), (_, b) in zip(ours, theirs, strict=True)
                    )
                    print(
                        f"http clients={clients}: this tree / {args.against}: "
                        f"steps/s {ratio:.2f}x, CPU per step {cpu:.2f}x "
                        f"(median of {rounds} alternating rounds)",
                        flush=True,
                    )
        finally:
            statuses = {name: daemon.stop() for name, daemon in daemons.items()}
        for name, status in statuses.items():
            if status != 0:
                print(f"daemon [{name}] exit status {status} (expected 0)", flush=True)
    by_clients = {load.clients: load for load in runs["this tree"]}
    at64, at16 = by_clients[64], by_clients[16]
    checks = [
        (">= 7,000 steps/s at 64 clients", f"{at64.rate:,.0f}", at64.rate >= 7000),
        ("p99 <= 25 ms at 64 clients", f"{at64.p99_ms:.2f} ms", at64.p99_ms <= 25),
        ("p99 <= 5 ms at 16 clients", f"{at16.p99_ms:.2f} ms", at16.p99_ms <= 5),
    ]
    for target, reached, met in checks:
        print(f"target {target}: {reached} {'met' if met else 'MISSED'}", flush=True)
    state = "past the retention window" if args.steady else "fresh"
    title = f"{SESSIONS}+ echo sessions ({state}), {args.durability}, {generator} clients"
    plot(runs, args.out, title)


if __name__ == "__main__":
    main()
