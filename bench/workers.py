"""``actorflowd --workers 2`` against ``--workers 1``: HTTP steps/s and p50/p99 by connections.

Both daemons run at once (fsync, SQLite: a file per shard with 2 workers), and
wrk drives them in alternating rounds at 1, 16, 64 and 256 connections, over
the same 64 echo sessions per daemon. The ratio at each connection count is
the median of the per-round ratios (2 workers / 1), so both sides of a ratio saw
the same machine load. Issue 20's target: ``--workers 2`` >= 1.4x at 64. At 64
connections it also says where the CPU goes (from /proc): each process's share
of a core, the cores the machine kept busy, and the CPU per step all in.

With ``--against REF`` a third daemon, ``--workers 2`` running the code of git
revision REF, is measured in the same rounds: its ratio to this tree's
``--workers 2`` and its front's CPU per step compare the two fronts.

    .venv-dev/bin/python bench/workers.py [--quick] [--rounds N] [--against REF]
"""

from __future__ import annotations

import os
import sys

if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
    sys.path.append(sys.path.pop(0))  # keep bench/ importable, after the standard library

import argparse
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

from _proc import children, machine_times, process_cpu
from daemon_http import Daemon, Load, create_sessions, export, run_wrk

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "workers.png"
CONNECTIONS = (1, 16, 64, 256)
SESSIONS = 64
WORKER_COUNTS = (1, 2)
AGAINST = 0  # the key of --against's daemon (--workers 2 on REF's code)
WHERE = 64  # the connections at which the bench says where the CPU goes


class Usage:
    """One wrk run's CPU: the daemon's parent (the front, with workers), each worker
    process and the whole machine, from /proc before and after."""

    def __init__(self, daemon: Daemon) -> None:
        self._pids = [daemon.process.pid, *children(daemon.process.pid)]
        self._before = [process_cpu(pid) for pid in self._pids]
        self._machine = machine_times()

    def done(self) -> tuple[list[float], float]:
        """Each process's share of a core (the parent first) and the cores the machine
        kept busy (1.5: one and a half), since this was made."""
        total, idle = machine_times()
        span, span_idle = total - self._machine[0], idle - self._machine[1]
        wall = span / (os.cpu_count() or 1)
        shares = [
            (process_cpu(pid) - before) / wall
            for pid, before in zip(self._pids, self._before, strict=True)
        ]
        return shares, (span - span_idle) / wall


def where(usages: dict[int, list[tuple[list[float], float]]], rates: dict[int, float]) -> None:
    """Print where the CPU goes at ``WHERE`` connections (medians over the rounds)."""
    for n, got in usages.items():
        shares = [statistics.median(u[0][i] for u in got) for i in range(len(got[0][0]))]
        busy = statistics.median(u[1] for u in got)
        rate = rates[n]
        parent = "the daemon" if n == 1 else "the front"
        parts = [f"{parent} {shares[0]:.0%} of a core ({shares[0] / rate * 1e6:.0f} us/step)"]
        parts += [
            f"worker {i} {share:.0%} ({share / (rate / n) * 1e6:.0f} us per step it serves)"
            for i, share in enumerate(shares[1:])
        ]
        print(
            f"where the CPU goes, --workers {n}, {WHERE} connections: {', '.join(parts)}; "
            f"the machine {busy:.0%} busy ({busy / rate * 1e6:.0f} us per step all in, wrk "
            "included)",
            flush=True,
        )


def plot(
    rates: dict[tuple[int, int], float],
    p99: dict[tuple[int, int], float],
    path: Path,
    title: str,
) -> None:
    """Steps/s and p99 by connections, one line per worker count."""
    try:
        import matplotlib
    except ImportError:
        print("plot: skipped (matplotlib missing: pip install -e '.[bench]')", flush=True)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for workers in WORKER_COUNTS:
        label = f"--workers {workers}"
        left.plot(CONNECTIONS, [rates[workers, c] for c in CONNECTIONS], marker="o", label=label)
        right.plot(CONNECTIONS, [p99[workers, c] for c in CONNECTIONS], marker="o", label=label)
    left.set(xscale="log", xlabel="connections", ylabel="steps/s", title="durable steps/s")
    right.set(xscale="log", yscale="log", xlabel="connections", ylabel="ms", title="p99")
    for axis in (left, right):
        axis.set_xticks(CONNECTIONS, [str(c) for c in CONNECTIONS])
        axis.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot: {path}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s (else 3 of 5 s)")
    parser.add_argument("--rounds", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the PNG")
    parser.add_argument("--against", metavar="REF", help="also run REF's --workers 2")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    seconds = 2.0 if args.quick else 5.0
    runs: dict[tuple[int, int], list[Load]] = {}
    front_cpu: dict[int, list[float]] = {}
    usages: dict[int, list[tuple[list[float], float]]] = {}
    kinds = (*WORKER_COUNTS, AGAINST) if args.against else WORKER_COUNTS
    with tempfile.TemporaryDirectory(prefix="actorflow-workers-") as tmp:
        workdir = Path(tmp)
        daemons = {
            n: Daemon(workdir / f"data{n}", "fsync", ["--workers", str(n)]) for n in WORKER_COUNTS
        }
        if args.against:
            code = export(args.against, workdir / "against")
            daemons[AGAINST] = Daemon(workdir / "data-against", "fsync", ["--workers", "2"], code)
        try:
            sessions = {n: create_sessions(d.url, SESSIONS) for n, d in daemons.items()}
            print(f"load average before: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
            for index in range(rounds):
                for clients in CONNECTIONS:
                    order = kinds if index % 2 == 0 else kinds[::-1]
                    for n in order:
                        wrk_dir = workdir / f"wrk{n}-{clients}-{index}"
                        wrk_dir.mkdir()
                        cpu = daemons[n].cpu_seconds()
                        where_now = clients == WHERE and n in WORKER_COUNTS
                        usage = Usage(daemons[n]) if where_now else None
                        load = run_wrk(daemons[n].url, sessions[n], clients, seconds, wrk_dir)
                        runs.setdefault((n, clients), []).append(load)
                        if usage is not None:
                            usages.setdefault(n, []).append(usage.done())
                        if n != 1:  # the parent is the front: its CPU is the hop's cost
                            used = daemons[n].cpu_seconds() - cpu
                            front_cpu.setdefault(n, []).append(used / max(1, load.steps) * 1e6)
            print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
        finally:
            for daemon in daemons.values():
                daemon.stop()
    rates: dict[tuple[int, int], float] = {}
    p99s: dict[tuple[int, int], float] = {}
    for clients in CONNECTIONS:
        for n in WORKER_COUNTS:
            got = runs[n, clients]
            rates[n, clients] = statistics.median(x.rate for x in got)
            p99s[n, clients] = statistics.median(x.p99_ms for x in got)
            ratio = statistics.median(
                a.rate / b.rate for a, b in zip(got, runs[1, clients], strict=True)
            )
            errors = sum(x.errors for x in got)
            print(
                f"workers={n} connections={clients}: {rates[n, clients]:,.0f} steps/s  "
                f"p50 {statistics.median(x.p50_ms for x in got):.2f} ms  "
                f"p99 {p99s[n, clients]:.2f} ms  x{ratio:.2f} of --workers 1  "
                f"errors {errors} (medians of {len(got)} rounds of {seconds:.0f} s, wrk, fsync)",
                flush=True,
            )
    if args.against:
        for clients in CONNECTIONS:
            got = runs[AGAINST, clients]
            ratio = statistics.median(
                a.rate / b.rate for a, b in zip(runs[2, clients], got, strict=True)
            )
            print(
                f"{args.against} --workers 2 connections={clients}: "
                f"{statistics.median(x.rate for x in got):,.0f} steps/s  "
                f"p99 {statistics.median(x.p99_ms for x in got):.2f} ms  "
                f"this tree x{ratio:.2f} of it",
                flush=True,
            )
        against = statistics.median(front_cpu[AGAINST])
        print(f"front CPU per step ({args.against} --workers 2): {against:.0f} us", flush=True)
    print(f"front CPU per step (--workers 2): {statistics.median(front_cpu[2]):.0f} us", flush=True)
    where(usages, {n: rates[n, WHERE] for n in WORKER_COUNTS})
    plot(rates, p99s, args.out, f"load average {os.getloadavg()[0]:.1f}, fsync, wrk")


if __name__ == "__main__":
    main()
