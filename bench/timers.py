"""Durable timers: firing many timers of passivated sessions, and after a SIGKILL.

Usage: ``.venv-dev/bin/python bench/timers.py [--quick] [--sessions N]``.

Setup (not measured): N sessions (default 100,000; ``--quick`` 10,000) are
written straight into a SQLite store, each after one step that scheduled one
timer, due spread evenly over a 10-second window; no actor is live. Then, in a
child process (so that its RSS is its own, collecting garbage as actorflowd
does), a runtime opens on that store with a clock shifted so that the window
starts 3 s after it opened, and fires them:

- RSS before the window (every timer pending, nothing live) and after it,
  against a runtime opened on an empty store: pending timers cost no memory in
  the runtime, only rows in the store's index (bytes per pending timer on disk);
- the fire rate (timers fired per second of the window, first to last) and the
  lateness p50/p99: when each timer step started (its ``last_accessed``, the
  runtime's clock) minus its due time (target: p99 <= 1 s at 10,000 timers/s),
  and the firing process's CPU per timer (steadier than the rate on a shared
  machine); the runtime reads its timer index with the default settings;
- against the same sessions stepped once each by plain requests (64 client
  threads, the same activation path without timers): what the firing adds;
- the same timers split over ``--shards`` stores (default 2), fired at once by one
  runtime process each: what a ``--workers 2`` daemon does on two cores (each worker
  fires its own shard's timers);
- the same with a SIGKILL in the middle of the window and a restart: every
  timer fired exactly once, counted from the sessions' state (revision 2 is
  one timer step after the scheduling step; 3 or more would be a double fire,
  1 a lost timer), and how fast the late ones fired after the restart.

Prints one line per figure and writes ``bench/out/timers.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import structlog
from _plot import grouped_bars

from flow import Context, GraphBuilder, NextAction, TaskResult, new_session, step, task
from flow.stores import SqliteStore

OUT = Path(__file__).resolve().parent / "out" / "timers.png"
WINDOW = 10.0  # seconds over which the timers come due
LEAD = 3.0  # seconds between the runtime opening and the window's start
DUE_BASE = 2_000_000_000.0  # the window's start on the shifted clock (a fixed epoch)


@task("wait", blocking=False)
def wait(ctx: Context) -> TaskResult:
    """The scheduling step sets one timer (its payload: the due time); any other step waits."""
    if ctx.timer is None and ctx.input is not None:
        ctx.schedule(float(ctx.input) - float(ctx.get("now")), input=ctx.input, name="t")
    return TaskResult(None, NextAction.WaitForInput)


GRAPH = GraphBuilder("bench_timers").add_task(wait).build()


def vm_rss_mib() -> float:
    """This process's resident memory, MiB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS line in /proc/self/status (Linux only)")


def setup(data_dir: Path, sessions: int, *, first: int = 0, step_by: int = 1) -> None:
    """Stored sessions, each with one timer due in the window (no runtime): the i-th of
    ``sessions`` due at ``WINDOW * i / sessions``, for i from ``first`` by ``step_by``
    (one of ``step_by`` shards: an even split, as the hash of the ids makes one)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    now = DUE_BASE - 60.0
    with SqliteStore(data_dir / "sessions.db", durability="commit") as store:
        pending = []
        for i in range(first, sessions, step_by):
            due = DUE_BASE + WINDOW * i / sessions
            session = new_session(GRAPH, owner="bench", now=now, context={"now": now})
            stepped, _ = step(GRAPH, session, due, now=now)
            stepped.record = None  # saved whole, as a fresh session: one write
            pending.append(store.save(stepped, None))
            if len(pending) >= 2000:
                for future in pending:
                    future.result()
                pending.clear()
        for future in pending:
            future.result()


def as_the_daemon_runs() -> None:
    """In a child that fires or steps: collect garbage as actorflowd does (the start-up
    heap frozen, the daemon's thresholds) and log warnings only, through a cached
    logger as the daemon configures it (a lazy proxy binds a logger on every call).

    With Python's default thresholds every fired session left live adds to what each
    full collection walks: collections took 30% of the firing's CPU."""
    from runtime.daemon._server import tune_gc

    tune_gc()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=True,
    )


def fire(data_dir: Path, offset: float, stop_after: int | None) -> None:
    """In the child: open a runtime on ``data_dir`` and report while it fires (JSON lines).

    The child runs as actorflowd does (`as_the_daemon_runs`).
    """
    from runtime import Runtime, RuntimeConfig

    as_the_daemon_runs()
    config = RuntimeConfig(durability="commit", clock=lambda: time.time() + offset)
    with Runtime.open(data_dir=data_dir, graphs=[GRAPH], config=config) as rt:
        print(json.dumps({"rss_open": vm_rss_mib()}), flush=True)
        cpu_open = time.process_time()
        while True:
            fired = rt._core.services.timer_stats.snapshot().fired
            if rt.due_timers(limit=1) == [] and rt._core.timer_firing.in_flight() == 0:
                break
            if stop_after is not None and fired >= stop_after:
                print(json.dumps({"killable": fired}), flush=True)
                time.sleep(3600)  # waits for the parent's SIGKILL
            time.sleep(0.05)  # a benchmark's progress poll, not a test's wait
        cpu = time.process_time() - cpu_open
        print(json.dumps({"rss_done": vm_rss_mib(), "cpu": cpu}), flush=True)


def fill_pending(data_dir: Path, sessions: int) -> None:
    """``sessions`` stored sessions with a timer pending (due a day after the window),
    made at the store level: 1,000 through steps (``setup``), then their rows copied
    under new ids by SQL (sessions, bases, records and the due-time index)."""
    template = min(sessions, 1000)
    setup(data_dir, template)
    copies = sessions // template
    with sqlite3.connect(data_dir / "sessions.db") as conn:
        conn.execute("UPDATE timers SET due = due + 86400")
        copies_of = "WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < ?) "
        for table in ("sessions", "bases", "timers"):
            # every column but a session's number (a copy gets its own)
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            named = ", ".join(c for c in columns if c != "sess")
            picked = ", ".join(
                "t.session_id || '-' || k.n" if c == "session_id" else f"t.{c}"
                for c in columns
                if c != "sess"
            )
            conn.execute(
                f"{copies_of}INSERT INTO {table} ({named}) SELECT {picked} FROM {table} t, k",
                (copies - 1,),
            )
        conn.execute(  # records are keyed by their session's number
            f"{copies_of}INSERT INTO records SELECT c.sess, r.revision, r.at, r.data "
            "FROM records r JOIN sessions s ON s.sess = r.sess, k "
            "JOIN sessions c ON c.session_id = s.session_id || '-' || k.n",
            (copies - 1,),
        )


def hold(data_dir: Path, offset: float) -> None:
    """In the child: open a runtime on ``data_dir``, let its timer thread read the index,
    report RSS and the pending timers' count."""
    from runtime import Runtime, RuntimeConfig

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    config = RuntimeConfig(durability="commit", clock=lambda: time.time() + offset)
    with Runtime.open(data_dir=data_dir, graphs=[GRAPH], config=config) as rt:
        time.sleep(2.0)  # a few polls of the index (a benchmark's settling time)
        pending = rt._core.store.count()
        print(json.dumps({"rss": vm_rss_mib(), "live": rt.stats().live, "stored": pending}))


def pending_rss(sessions: int) -> None:
    """Print RSS of a runtime over ``sessions`` passivated sessions with a pending timer."""
    with tempfile.TemporaryDirectory() as tmp:
        figures = {}
        for label, n in (("empty", 0), ("filled", sessions)):
            data_dir = Path(tmp) / label
            started = time.monotonic()
            fill_pending(data_dir, n) if n else setup(data_dir, 0)
            fill_s = time.monotonic() - started
            offset = DUE_BASE - time.time()
            args = [sys.executable, __file__, "--hold", str(data_dir), "--offset", repr(offset)]
            out = subprocess.run(args, capture_output=True, text=True, check=True)
            figures[label] = json.loads(out.stdout.splitlines()[-1])
            size = (data_dir / "sessions.db").stat().st_size
        filled = figures["filled"]
        print(
            f"{filled['stored']:,} passivated sessions with a pending timer (store-level fill, "
            f"{fill_s:.0f} s, {size / sessions:.0f} B per session on disk): runtime RSS "
            f"{filled['rss']:.0f} MiB, {filled['live']} live (empty store: "
            f"{figures['empty']['rss']:.0f} MiB)"
        )


def activate(data_dir: Path) -> None:
    """In the child: step every stored session once by request (64 threads); report the rate."""
    from concurrent.futures import ThreadPoolExecutor

    from runtime import Runtime, RuntimeConfig

    as_the_daemon_runs()
    config = RuntimeConfig(durability="commit", max_sessions_per_user=0)
    with Runtime.open(data_dir=data_dir, graphs=[GRAPH], config=config) as rt:
        ids: list[str] = []
        cursor = None
        while True:
            page = rt.list_sessions("bench", cursor=cursor, limit=1000)
            ids += [item.session_id for item in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        started = time.perf_counter()
        with ThreadPoolExecutor(64) as pool:
            for _ in pool.map(lambda sid: rt.step(sid, None), ids):
                pass
        print(json.dumps({"rate": len(ids) / (time.perf_counter() - started)}), flush=True)


def child(data_dir: Path, offset: float, stop_after: int | None = None) -> subprocess.Popen[str]:
    """Start a firing child process."""
    args = [sys.executable, __file__, "--fire", str(data_dir), "--offset", repr(offset)]
    if stop_after is not None:
        args += ["--stop-after", str(stop_after)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True)


def read(process: subprocess.Popen[str]) -> dict[str, float]:
    """The child's next report."""
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"the firing child exited ({process.wait()})")
    report: dict[str, float] = json.loads(line)
    return report


def outcome(
    data_dir: Path, sessions: int, *, first: int = 0, step_by: int = 1
) -> tuple[dict[int, int], list[float], list[float]]:
    """(sessions by revision, lateness of the fired, when each fired) of a store made by
    ``setup`` with the same arguments."""
    with sqlite3.connect(f"file:{data_dir / 'sessions.db'}?mode=ro", uri=True) as conn:
        # rows in insertion order: the i-th session's timer is due at DUE_BASE + WINDOW * i / n
        query = "SELECT revision, last_accessed FROM sessions ORDER BY rowid"
        rows = conn.execute(query).fetchall()
    by_revision: dict[int, int] = {}
    started = []
    lateness = []
    for j, (revision, at) in enumerate(rows):
        by_revision[revision] = by_revision.get(revision, 0) + 1
        if revision == 2:
            started.append(at)
            due = DUE_BASE + WINDOW * (first + j * step_by) / sessions
            lateness.append(max(0.0, at - due))
    return by_revision, lateness, started


def summarize(
    figures: dict[str, float],
    by_revision: dict[int, int],
    lateness: list[float],
    fired: list[float],
) -> dict[str, float]:
    """``figures`` with the outcome's: once, lost, double, p50, p99 and the fire rate."""
    lateness = sorted(lateness)
    span = max(fired) - min(fired) if len(fired) > 1 else 0.0
    figures["once"] = by_revision.get(2, 0)
    figures["lost"] = by_revision.get(1, 0)
    figures["double"] = sum(n for rev, n in by_revision.items() if rev > 2)
    figures["p50"] = percentile(lateness, 0.50)
    figures["p99"] = percentile(lateness, 0.99)
    figures["rate"] = figures["once"] / span if span else 0.0
    return figures


def cpu_per_timer(figures: dict[str, float]) -> float:
    """The firing processes' CPU (from the window's first poll to the last answer) per
    timer fired, microseconds: steadier than the rate on a shared machine."""
    return figures["cpu"] / max(1.0, figures["once"]) * 1e6


def percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(fraction * len(values)))] if values else 0.0


def run(data_dir: Path, sessions: int, *, kill: bool) -> dict[str, float]:
    """Fire the timers of ``data_dir`` (with a SIGKILL halfway if ``kill``); the figures."""
    offset = DUE_BASE - (time.time() + LEAD)
    figures: dict[str, float] = {}
    first = child(data_dir, offset, stop_after=sessions // 2 if kill else None)
    try:
        figures["rss_open"] = read(first)["rss_open"]
        report = read(first)
        if kill:
            figures["killed_after"] = report["killable"]
            first.send_signal(signal.SIGKILL)
            first.wait(30)
            restarted = time.monotonic()
            second = child(data_dir, offset)
            try:
                read(second)
                figures["rss_done"] = read(second)["rss_done"]
                figures["restart_seconds"] = time.monotonic() - restarted
            finally:
                second.kill()
                second.wait(30)
        else:
            figures["rss_done"] = report["rss_done"]
            figures["cpu"] = report["cpu"]
    finally:
        first.kill()
        first.wait(30)
    return summarize(figures, *outcome(data_dir, sessions))


def run_shards(data_dir: Path, sessions: int, shards: int) -> dict[str, float]:
    """Fire the timers of ``shards`` stores made by ``setup_shards`` at once, one runtime
    process each: what ``--workers N`` does (each worker fires its own shard's timers)."""
    offset = DUE_BASE - (time.time() + LEAD)
    children = [child(data_dir / f"shard-{k}", offset) for k in range(shards)]
    figures: dict[str, float] = {}
    try:
        figures["rss_open"] = sum(read(c)["rss_open"] for c in children)
        done = [read(c) for c in children]
        figures["rss_done"] = sum(d["rss_done"] for d in done)
        figures["cpu"] = sum(d["cpu"] for d in done)
    finally:
        for c in children:
            c.kill()
            c.wait(30)
    by_revision: dict[int, int] = {}
    lateness: list[float] = []
    fired: list[float] = []
    for k in range(shards):
        counts, late, at = outcome(data_dir / f"shard-{k}", sessions, first=k, step_by=shards)
        for revision, n in counts.items():
            by_revision[revision] = by_revision.get(revision, 0) + n
        lateness += late
        fired += at
    return summarize(figures, by_revision, lateness, fired)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 sessions")
    parser.add_argument("--sessions", type=int, help="how many sessions (default 100,000)")
    parser.add_argument("--fire", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--offset", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--activate", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--hold", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--shards",
        type=int,
        default=2,
        help="also fire the same timers split over this many shards, one runtime process "
        "each, as --workers does (default 2; 1: skip)",
    )
    parser.add_argument(
        "--pending",
        type=int,
        help="only measure RSS over this many passivated sessions with a pending timer",
    )
    args = parser.parse_args()
    if args.hold is not None:
        hold(args.hold, args.offset)
        return
    if args.pending is not None:
        pending_rss(args.pending)
        return
    if args.fire is not None:
        fire(args.fire, args.offset, args.stop_after)
        return
    if args.activate is not None:
        activate(args.activate)
        return
    sessions = args.sessions or (10_000 if args.quick else 100_000)
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty"
        setup(empty, 0)
        baseline = child(empty, DUE_BASE - time.time())
        try:
            rss_empty = read(baseline)["rss_open"]
        finally:
            baseline.kill()
            baseline.wait(30)
        results = {}
        for label, kill in (("undisturbed", False), ("SIGKILL + restart", True)):
            data_dir = Path(tmp) / label.split()[0]
            started = time.monotonic()
            setup(data_dir, sessions)
            setup_s = time.monotonic() - started
            size = (data_dir / "sessions.db").stat().st_size
            results[label] = run(data_dir, sessions, kill=kill)
            r = results[label]
            print(
                f"{label}: {sessions:,} sessions with a timer due in a {WINDOW:.0f} s window "
                f"(set up in {setup_s:.0f} s, {size / sessions:.0f} B per session on disk)"
            )
            print(
                f"{label}: RSS {r['rss_open']:.0f} MiB with every timer pending and nothing "
                f"live (empty store: {rss_empty:.0f} MiB), {r['rss_done']:.0f} MiB after firing"
            )
            print(
                f"{label}: fired exactly once {r['once']:,.0f}/{sessions:,}, "
                f"lost {r['lost']:,.0f}, fired twice {r['double']:,.0f}"
                + (
                    f" (killed after {r['killed_after']:,.0f} fired; the restarted runtime "
                    f"finished {r['restart_seconds']:.1f} s after the kill)"
                    if kill
                    else ""
                )
            )
            print(
                f"{label}: {r['rate']:,.0f} timers/s fired (first to last, asked "
                f"{sessions / WINDOW:,.0f}/s), lateness p50 {r['p50']:.2f} s, "
                f"p99 {r['p99']:.2f} s (target p99 <= 1 s at 10,000/s)"
                + ("" if kill else f"; {cpu_per_timer(r):.0f} us of CPU per timer")
            )
            if not kill:
                requests = subprocess.run(
                    [sys.executable, __file__, "--activate", str(data_dir)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                rate = json.loads(requests.stdout.splitlines()[-1])["rate"]
                print(
                    f"the same sessions stepped once each by requests (64 threads, activation "
                    f"from the store): {rate:,.0f}/s; timer firing/requests "
                    f"{r['rate'] / rate:.2f}x"
                )
        if args.shards > 1:
            label = f"{args.shards} shards"
            data_dir = Path(tmp) / "shards"
            for k in range(args.shards):
                setup(data_dir / f"shard-{k}", sessions, first=k, step_by=args.shards)
            r = results[label] = run_shards(data_dir, sessions, args.shards)
            print(
                f"{label} (one runtime process each, as --workers {args.shards}): "
                f"{r['rate']:,.0f} timers/s fired (asked {sessions / WINDOW:,.0f}/s), lateness "
                f"p50 {r['p50']:.2f} s, p99 {r['p99']:.2f} s; fired exactly once "
                f"{r['once']:,.0f}/{sessions:,}, lost {r['lost']:,.0f}, fired twice "
                f"{r['double']:,.0f}; RSS {r['rss_open']:.0f} MiB in all before, "
                f"{r['rss_done']:.0f} MiB after; {cpu_per_timer(r):.0f} us of CPU per timer"
            )
    path = grouped_bars(
        OUT,
        title=f"Durable timers: {sessions:,} due in {WINDOW:.0f} s (SQLite)",
        ylabel="seconds late",
        groups=["p50", "p99"],
        series={label: [r["p50"], r["p99"]] for label, r in results.items()},
    )
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
