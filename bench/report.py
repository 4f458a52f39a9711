"""Run every benchmark and write docs/benchmarks.md (figures, machine, date, plots).

Each benchmark prints one line per figure; this script keeps those lines as
they are, in one table per benchmark, and copies the PNG plots next to the page.
What the page holds below the ``KEEP`` marker line (hand-written analyses, tables
gathered from several runs) is kept as it is.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEEP = "<!-- Hand-written below this line: ./bin/bench keeps it as it is. -->"
# What --quick passes to a benchmark that has no --quick flag of its own.
QUICK_ARGS = {"activation": ["--sessions", "2000", "--repeats", "1"]}
BENCHES = [
    ("store", "bench/store.py", "Group commit against one transaction per save (SQLite, fsync)"),
    ("actors", "bench/actor_types.py", "The dispatcher actor type against pykka's ThreadingActor"),
    ("inprocess", "bench/inprocess.py", "Durable steps in process, against LangGraph"),
    ("activation", "bench/activation.py", "Activations from snapshot: load, first steps, live"),
    ("http", "bench/daemon_http.py", "Durable steps through the HTTP daemon"),
    ("client", "bench/client.py", "runtime.client.Client against raw httpx, same daemon"),
    ("cluster", "bench/cluster.py", "One daemon (SQLite, Redis) against two daemons on Redis"),
    (
        "http_servers",
        "bench/http_servers.py",
        "uvicorn+httptools against Granian, with and without the fast step path",
    ),
    (
        "workers_routing",
        "bench/workers_routing.py",
        "--workers routing prototypes: a byte-relaying front, 1 and 2 workers",
    ),
    (
        "workers",
        "bench/workers.py",
        "actorflowd --workers 2 against --workers 1: steps/s, p50/p99 at 1/16/64/256 connections",
    ),
    (
        "session_log",
        "bench/session_log.py",
        "The session log: a step's cost and bytes at any history length",
    ),
    (
        "idempotency",
        "bench/idempotency.py",
        "Idempotency keys: the key table's memory, bytes, cost",
    ),
    (
        "timers",
        "bench/timers.py",
        "Durable timers: 100,000 due in 10 s, passivated; and after a SIGKILL",
    ),
    (
        "dashboard",
        "bench/dashboard.py",
        "The dashboard's live-actors page at 100,000 live sessions",
    ),
    (
        "postgres",
        "bench/postgres.py",
        "PostgreSQL vs SQLite vs Redis, vs LangGraph's PostgresSaver, two daemons on PostgreSQL",
    ),
    (
        "idle",
        "bench/idle.py",
        "Idle live sessions with and without hibernation: memory, GC, hot steps beside them",
    ),
    (
        "lb",
        "bench/lb.py",
        "Two daemons on Redis behind HAProxy: routing by session id against round robin",
    ),
    (
        "streaming",
        "bench/streaming.py",
        "Streaming: tokens over SSE, idle /events subscribers, against LangGraph's custom stream",
    ),
    (
        "instructions",
        "bench/instructions.py",
        "Instructions per hot step, activation and timer fired (valgrind): unswayed by load",
    ),
]


def machine() -> str:
    """One line describing this machine."""
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_kib / 2**20:.0f} GiB, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def run(script: str, extra: list[str]) -> tuple[list[str], float, int]:
    """Run one benchmark; its printed figure lines, seconds taken and exit code."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, script, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line.rstrip() for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0:
        lines.append(f"FAILED (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    return lines, time.monotonic() - started, proc.returncode


def _row(line: str) -> str:
    """A figure line as a table row; a plot's path becomes a link to the committed copy."""
    if line.startswith("plot: ") and line.endswith(".png"):
        name = Path(line.removeprefix("plot: ")).name
        return f"| plot: [{name}](benchmarks/{name}) |"
    return f"| {line.replace('|', '/')} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="pass --quick to each benchmark")
    parser.add_argument("--only", action="append", help="run only these benchmarks (by name)")
    args = parser.parse_args()
    out = ROOT / "docs"
    plots = out / "benchmarks"
    plots.mkdir(parents=True, exist_ok=True)
    sections = []
    failed = 0
    for name, script, title in BENCHES:
        if args.only and name not in args.only:
            continue
        print(f"bin/bench: running {script} ...", file=sys.stderr, flush=True)
        extra = QUICK_ARGS.get(name, ["--quick"]) if args.quick else []
        lines, seconds, code = run(script, extra)
        failed += code != 0
        body = "\n".join(_row(line) for line in lines) or "| (no output) |"
        sections.append(
            f"## {name}: {title}\n\n`python {script}` ({seconds:.0f} s)\n\n"
            f"| figure |\n|---|\n{body}\n"
        )
    for png in sorted((ROOT / "bench" / "out").glob("*.png")):
        shutil.copy(png, plots / png.name)
        sections.append(f"![{png.stem}](benchmarks/{png.name})\n")
    today = dt.date.today().isoformat()
    page = (
        "# Benchmarks\n\n"
        f"Written by `./bin/bench` on {today}.\n\nMachine: {machine()}.\n\n"
        "Figures are from one run on a shared, noisy machine; compare ratios within one "
        "run rather than absolute numbers across runs.\n\n" + "\n".join(sections)
    )
    target = out / "benchmarks.md"
    old = target.read_text() if target.exists() else ""
    if KEEP in old:
        page += "\n" + KEEP + old.split(KEEP, 1)[1]
    target.write_text(page)
    print(f"bin/bench: wrote {target}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
