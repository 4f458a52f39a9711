"""Run every benchmark and write docs/benchmarks.md (figures, machine, date, plots).

Each benchmark prints one line per figure; this script keeps those lines as
they are, in one table per benchmark (its section, headed ``## name: title``,
with the date, the load average and the seconds it took), and copies the PNG
plots it names next to the page, shown in its section. ``--only NAME`` re-runs
those benchmarks and replaces their sections; every other benchmark's section is
kept as the page had it, so the page always holds one section per benchmark of
``BENCHES``, in that order (a benchmark never run has a line saying so). What
the page holds below the ``KEEP`` marker line (hand-written analyses, tables
gathered from several runs) is kept as it is.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
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


def _plot(line: str) -> str | None:
    """The file name of the plot a figure line names (``plot: bench/out/x.png``), if any."""
    if line.startswith("plot: ") and line.endswith(".png"):
        return Path(line.removeprefix("plot: ")).name
    return None


def _row(line: str) -> str:
    """A figure line as a table row; a plot's path becomes a link to the committed copy."""
    name = _plot(line)
    if name is not None:
        return f"| plot: [{name}](benchmarks/{name}) |"
    return f"| {line.replace('|', '/')} |"


def section(name: str, script: str, title: str, lines: list[str], how: str) -> str:
    """One benchmark's section: its heading, how it was run, its figures and its plots."""
    body = "\n".join(_row(line) for line in lines) or "| (no output) |"
    plots = [png for png in map(_plot, lines) if png is not None]
    shown = "".join(f"\n![{Path(png).stem}](benchmarks/{png})\n" for png in plots)
    return f"## {name}: {title}\n\n`python {script}` ({how})\n\n| figure |\n|---|\n{body}\n{shown}"


_HEADING = re.compile(r"^## ([\w-]+): ", re.MULTILINE)


def sections_of(generated: str) -> dict[str, str]:
    """The sections of a page's generated part (above ``KEEP``), by benchmark name."""
    starts = list(_HEADING.finditer(generated))
    ends = [match.start() for match in starts[1:]] + [len(generated)] if starts else []
    return {
        match.group(1): generated[match.start() : end].rstrip() + "\n"
        for match, end in zip(starts, ends, strict=True)
    }


def page(machine_line: str, fresh: dict[str, str], old: str) -> str:
    """The whole page: a section per benchmark of ``BENCHES`` (``fresh`` ones replace the
    old page's, the others are kept or marked not run yet), then ``old``'s kept part."""
    generated, marker, kept = old.partition(KEEP)
    before = sections_of(generated if marker else "")
    sections = []
    for name, script, title in BENCHES:
        text = fresh.get(name) or before.get(name)
        if text is None:
            text = (
                f"## {name}: {title}\n\n`python {script}`: not run yet "
                f"(`./bin/bench --only {name}`).\n"
            )
        sections.append(text)
    head = (
        "# Benchmarks\n\n"
        "Written by `./bin/bench`; each section says when its benchmark ran "
        "(`./bin/bench --only NAME` re-runs one).\n\n"
        f"Machine: {machine_line}.\n\n"
        "Figures are from one run on a shared, noisy machine; compare ratios within one "
        "run rather than absolute numbers across runs.\n\n"
    )
    text = head + "\n".join(sections)
    if marker:
        text += "\n" + KEEP + kept
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="pass --quick to each benchmark")
    parser.add_argument("--only", action="append", help="run only these benchmarks (by name)")
    args = parser.parse_args()
    unknown = sorted(set(args.only or ()) - {name for name, _, _ in BENCHES})
    if unknown:
        parser.error(f"no such benchmark: {', '.join(unknown)}")
    out = ROOT / "docs"
    plots = out / "benchmarks"
    plots.mkdir(parents=True, exist_ok=True)
    target = out / "benchmarks.md"
    fresh: dict[str, str] = {}
    failed = 0
    for name, script, title in BENCHES:
        if args.only and name not in args.only:
            continue
        print(f"bin/bench: running {script} ...", file=sys.stderr, flush=True)
        extra = QUICK_ARGS.get(name, ["--quick"]) if args.quick else []
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        started = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        lines, seconds, code = run(script, extra)
        failed += code != 0
        for line in lines:
            png = _plot(line)
            if png is not None and (ROOT / "bench" / "out" / png).exists():
                shutil.copy(ROOT / "bench" / "out" / png, plots / png)
        args_used = " ".join(extra) + ", " if extra else ""
        how = f"{args_used}run {started}, {seconds:.0f} s, load average {load} before"
        fresh[name] = section(name, script, title, lines, how)
        # after each benchmark: a long run stopped halfway keeps what it measured
        old = target.read_text() if target.exists() else ""
        target.write_text(page(machine(), fresh, old))
    print(f"bin/bench: wrote {target}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
