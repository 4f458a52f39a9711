"""In-process benchmark: durable ``echo`` steps through the Runtime, against LangGraph.

Usage: ``.venv-dev/bin/python bench/inprocess.py [--quick] [--store URL]``.

Prints one line per figure and writes ``bench/out/inprocess.png``:

- steps/s and p50/p99 latency of 64 ``echo`` sessions at 8, 32 and 64 client
  threads (closed loop: each client steps its share of the sessions, one step
  at a time, for a fixed time), with ``fsync`` durability;
- the same at 64 clients with many live idle sessions beside them, and the ratio;
- RSS per live idle session actor (VmRSS delta / sessions);
- passivations/s and activations/s from snapshot (passivate, then step each once);
- steps/s at 64 clients when every chat history already holds 10, 100, 1,000 messages;
- LangGraph + SqliteSaver on the same workload in the same run, the ratio, and
  LangGraph's lost updates with 8 threads on one thread_id.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import structlog

from flow import new_session
from flow.demo import echo
from flow.stores import SessionStore, open_store
from runtime import Runtime, RuntimeConfig

CLIENTS = (8, 32, 64)
HOT_SESSIONS = 64
HISTORY_SIZES = (10, 100, 1000)
BASE_HISTORY = 10
OUT = Path(__file__).resolve().parent / "out" / "inprocess.png"

StepFn = Callable[[str, str], object]


@dataclass(frozen=True, slots=True)
class Plan:
    """How long and how big each part of the benchmark runs."""

    seconds: float
    langgraph_seconds: float
    idle_sessions: int
    activations: int
    repeats: int
    max_steps: int = 500_000


FULL = Plan(
    seconds=2.0, langgraph_seconds=3.0, idle_sessions=100_000, activations=20_000, repeats=3
)
QUICK = Plan(seconds=1.5, langgraph_seconds=1.0, idle_sessions=10_000, activations=5_000, repeats=1)


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One closed-loop run: steps done, wall time, latency percentiles, failures."""

    clients: int
    steps: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_seconds: float = 0.0
    commits: int | None = None

    @property
    def rate(self) -> float:
        """Steps per second."""
        return self.steps / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class Figures:
    """Everything measured, for the summary and the plot."""

    actorflow: dict[int, LoadResult] = field(default_factory=dict)
    langgraph: dict[int, LoadResult] = field(default_factory=dict)
    before_idle: LoadResult | None = None
    with_idle: LoadResult | None = None
    idle_sessions: int = 0
    rss_per_actor: float = 0.0
    activations_per_s: float = 0.0
    cold_activations_per_s: float = 0.0
    history: dict[int, LoadResult] = field(default_factory=dict)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest rank."""
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))]


def closed_loop(
    clients: int,
    sessions: Sequence[str],
    step: StepFn,
    *,
    seconds: float,
    max_steps: int = 500_000,
) -> LoadResult:
    """Run ``clients`` threads, each stepping its share of ``sessions`` in turn.

    Client ``i`` owns ``sessions[i::clients]`` (no two clients share a session
    when there are at least as many sessions as clients). Each run stops after
    ``seconds`` or after ``max_steps`` steps in all, whichever comes first.
    """
    start = threading.Barrier(clients + 1)
    per_client_cap = max(1, max_steps // clients)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    deadline = [0.0]

    def client(index: int) -> None:
        mine = sessions[index::clients] or [sessions[index % len(sessions)]]
        record = latencies[index].append
        start.wait()
        end = deadline[0]
        n = 0
        clock = time.perf_counter
        while n < per_client_cap:
            sid = mine[n % len(mine)]
            began = clock()
            if began >= end:
                break
            try:
                step(sid, f"message {n}")
            except Exception:  # counted and reported: a benchmark keeps going
                errors[index] += 1
            record(clock() - began)
            n += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    cpu_began = time.process_time()
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu_began
    merged = sorted(x for per in latencies for x in per)
    return LoadResult(
        clients=clients,
        steps=len(merged) - sum(errors),
        seconds=elapsed,
        p50_ms=percentile(merged, 0.50) * 1000,
        p99_ms=percentile(merged, 0.99) * 1000,
        errors=sum(errors),
        cpu_seconds=cpu,
    )


def print_load(label: str, result: LoadResult) -> None:
    """One line: rate, latency percentiles, totals and failures."""
    failed = f", {result.errors} FAILED" if result.errors else ""
    commits = ""
    if result.commits:
        commits = (
            f"; {result.commits / result.seconds:,.0f} commits/s, "
            f"{result.steps / result.commits:.1f} steps per commit"
        )
    cpu = result.cpu_seconds / max(result.steps, 1)
    print(
        f"{label}: {result.rate:,.0f} steps/s  p50 {result.p50_ms:.2f} ms  "
        f"p99 {result.p99_ms:.2f} ms  ({result.steps:,} steps in {result.seconds:.1f} s"
        f"{failed}; {cpu * 1e6:,.0f} us CPU per step, so {1 / max(cpu, 1e-9):,.0f}/s "
        f"on one free core{commits})",
        flush=True,
    )


def fsync_probe(directory: Path, seconds: float = 1.0) -> float:
    """Seconds one 4 KiB write + fsync takes in ``directory`` now (a closed loop's floor)."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        count = 0
        began = time.perf_counter()
        while (elapsed := time.perf_counter() - began) < seconds and count < 100_000:
            os.pwrite(fd, b"x" * 4096, 0)
            os.fsync(fd)
            count += 1
    finally:
        os.close(fd)
        path.unlink()
    return elapsed / max(count, 1)


def rss_bytes() -> int:
    """This process's resident set size (VmRSS), in bytes."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line in /proc/self/status (Linux only)")


class Timed(NamedTuple):
    """Wall-clock and process CPU seconds something took."""

    seconds: float
    cpu_seconds: float


def in_parallel(items: Sequence[str], fn: Callable[[str], object], threads: int = 64) -> Timed:
    """Apply ``fn`` to every item from ``threads`` threads; returns the time taken."""
    began = time.perf_counter()
    cpu_began = time.process_time()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(fn, items, chunksize=max(1, len(items) // (threads * 8))):
            pass
    return Timed(time.perf_counter() - began, time.process_time() - cpu_began)


def create_many(rt: Runtime, count: int, threads: int = 64) -> list[str]:
    """Create ``count`` echo sessions from ``threads`` threads; returns their ids."""
    ids: list[str] = []
    lock = threading.Lock()
    per_thread = [count // threads + (1 if i < count % threads else 0) for i in range(threads)]

    def create(n: int) -> None:
        made = [rt.create_session(echo.id, owner="bench") for _ in range(n)]
        with lock:
            ids.extend(made)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(create, per_thread))
    return ids


def config_for(store: str | None) -> RuntimeConfig:
    """Durable (fsync) steps, room for every idle session (one owner holds them all),
    and no idle passivation."""
    return RuntimeConfig(
        durability="fsync",
        max_live=1_000_000,
        max_sessions_per_user=0,
        idle_timeout=86_400.0,
        wait_timeout=86_400.0,
        store=store,
    )


def transactions(store: SessionStore) -> int | None:
    """Transactions the store's writer has committed, when it counts them (SQLite)."""
    stats = getattr(store, "writer_stats", None)
    return int(stats().transactions) if callable(stats) else None


def run_actorflow(
    rt: Runtime, store: SessionStore, clients: int, sessions: Sequence[str], plan: Plan
) -> LoadResult:
    """Closed loops of ``rt.step`` calls, with the commits each took; the median run.

    The machine is shared: ``plan.repeats`` runs, and the one with the median rate,
    damp a neighbour's burst.
    """

    def step(session_id: str, text: str) -> object:
        return rt.step(session_id, text)

    runs = []
    for _ in range(plan.repeats):
        before = transactions(store)
        result = closed_loop(
            clients, sessions, step, seconds=plan.seconds, max_steps=plan.max_steps
        )
        after = transactions(store)
        if before is not None and after is not None:
            result = replace(result, commits=after - before)
        runs.append(result)
    runs.sort(key=lambda run: run.rate)
    return runs[len(runs) // 2]


def preload(store: SessionStore, count: int, messages: int, owner: str = "bench") -> list[str]:
    """Save ``count`` echo sessions of ``owner`` whose chat histories hold, and keep,
    ``messages`` messages.

    Each history is capped at its preloaded size (``max_messages``), so every step
    of a run writes a snapshot of the same size.
    """
    ids = []
    futures = []
    for _ in range(count):
        session = new_session(echo, owner=owner, max_messages=max(messages, 1))
        history = session.context.chat_history
        for i in range(messages):
            content = f"preloaded message {i} of a conversation that goes on for a while"
            if i % 2:
                history.add_assistant(content)
            else:
                history.add_user(content)
        futures.append(store.save(session, None))
        ids.append(session.session_id)
    for future in futures:
        future.result()
    return ids


def bench_actorflow(plan: Plan, store_url: str | None, data_dir: Path, figures: Figures) -> None:
    """Client scaling, then idle sessions beside the hot ones, RSS and activations."""
    store = open_store(store_url, data_dir, "fsync")
    try:
        hot = preload(store, HOT_SESSIONS, BASE_HISTORY)
        config = config_for(store_url)
        with Runtime.open(data_dir=data_dir, graphs=[echo], config=config, store=store) as rt:
            in_parallel(hot, lambda sid: rt.step(sid, "warm up"))
            run_actorflow(rt, store, 64, hot, replace(plan, repeats=1))  # warm-up, not shown
            scale_clients(plan, rt, store, hot, figures)
            before = run_actorflow(rt, store, 64, hot, plan)
            figures.before_idle = before
            print_load(
                f"actorflow clients=64 history={BASE_HISTORY} again, just before the idle sessions",
                before,
            )
            idle = add_idle_sessions(plan, rt, figures)
            beside_idle(plan, rt, store, hot, before, figures)
            activations(plan, rt, idle, figures)
    finally:
        store.close()


def scale_clients(
    plan: Plan, rt: Runtime, store: SessionStore, hot: list[str], figures: Figures
) -> None:
    """The 64 hot sessions at 8, 32 and 64 client threads."""
    for clients in CLIENTS:
        result = run_actorflow(rt, store, clients, hot, plan)
        figures.actorflow[clients] = result
        print_load(f"actorflow clients={clients} history={BASE_HISTORY}", result)


def add_idle_sessions(plan: Plan, rt: Runtime, figures: Figures) -> list[str]:
    """Create and step once ``plan.idle_sessions`` sessions; measure RSS per live actor."""
    gc.collect()
    rss_before = rss_bytes()
    objects_before = len(gc.get_objects())
    began = time.perf_counter()
    idle = create_many(rt, plan.idle_sessions)
    created = time.perf_counter() - began
    stepped = in_parallel(idle, lambda sid: rt.step(sid, "once")).seconds
    gc.collect()
    live = rt.stats().live
    figures.idle_sessions = len(idle)
    figures.rss_per_actor = (rss_bytes() - rss_before) / len(idle)
    objects = (len(gc.get_objects()) - objects_before) / len(idle)
    began = time.perf_counter()
    gc.collect()
    full_gc = time.perf_counter() - began
    print(
        f"idle sessions: {len(idle):,} created in {created:.1f} s "
        f"({len(idle) / created:,.0f}/s), stepped once in {stepped:.1f} s "
        f"({len(idle) / stepped:,.0f}/s); live actors now {live:,}",
        flush=True,
    )
    print(
        f"RSS per live idle session actor: {figures.rss_per_actor / 1024:.2f} KiB "
        f"(VmRSS delta over {len(idle):,} sessions, each stepped once)",
        flush=True,
    )
    print(
        f"GC-tracked objects per live idle session: {objects:.1f}; one full gc.collect() "
        f"with them live: {full_gc * 1000:,.0f} ms (the cyclic GC walks them all)",
        flush=True,
    )
    return idle


def beside_idle(
    plan: Plan,
    rt: Runtime,
    store: SessionStore,
    hot: list[str],
    before: LoadResult,
    figures: Figures,
) -> None:
    """The 64-client run again with the idle sessions live beside the hot ones."""
    result = run_actorflow(rt, store, 64, hot, plan)
    figures.with_idle = result
    print_load(
        f"actorflow clients=64 history={BASE_HISTORY} "
        f"with {figures.idle_sessions:,} live idle sessions",
        result,
    )
    ratio = result.rate / before.rate
    print(f"with idle / without: {ratio:.2f} ({(ratio - 1) * 100:+.1f}% steps/s)", flush=True)


def activations(plan: Plan, rt: Runtime, idle: list[str], figures: Figures) -> None:
    """Passivate some idle sessions, then step each once: activation from the store."""
    cold = idle[: plan.activations]
    passivated = in_parallel(cold, rt.passivate).seconds
    print(
        f"passivations: {len(cold):,} in {passivated:.2f} s "
        f"({len(cold) / passivated:,.0f}/s); live actors now {rt.stats().live:,}",
        flush=True,
    )
    before = rt.stats().activations
    activated = in_parallel(cold, lambda sid: rt.step(sid, "wake up"))
    done = rt.stats().activations - before
    figures.activations_per_s = len(cold) / activated.seconds
    print(
        f"activations from snapshot (step each passivated session once, fsync): "
        f"{figures.activations_per_s:,.0f}/s ({done:,} activations, "
        f"{len(cold):,} steps in {activated.seconds:.2f} s; "
        f"{activated.cpu_seconds / len(cold) * 1e6:,.0f} us CPU each)",
        flush=True,
    )


def bench_cold_activations(
    plan: Plan, store_url: str | None, data_dir: Path, figures: Figures
) -> None:
    """Activation alone: step stored sessions once with ``passivate`` durability.

    With nothing committed per step, the rate is that of loading, decoding and
    starting session actors (plus an in-memory step).
    """
    store = open_store(store_url, data_dir, "fsync")
    try:
        ids = preload(store, plan.activations, BASE_HISTORY)
        config = replace(config_for(store_url), durability="passivate")
        with Runtime.open(data_dir=data_dir, graphs=[echo], config=config, store=store) as rt:
            timed = in_parallel(ids, lambda sid: rt.step(sid, "wake up"))
            done = rt.stats().activations
    finally:
        store.close()
    figures.cold_activations_per_s = len(ids) / timed.seconds
    print(
        f"activations from snapshot (step each stored session once, durability=passivate, "
        f"no commit per step): {figures.cold_activations_per_s:,.0f}/s "
        f"({done:,} activations in {timed.seconds:.2f} s; "
        f"{timed.cpu_seconds / len(ids) * 1e6:,.0f} us CPU each)",
        flush=True,
    )


def bench_history(plan: Plan, store_url: str | None, base: Path, figures: Figures) -> None:
    """Steps/s at 64 clients when every history holds 10, 100, 1,000 messages."""
    for size in HISTORY_SIZES:
        data_dir = base / f"history-{size}"
        data_dir.mkdir()
        store = open_store(store_url, data_dir, "fsync")
        try:
            ids = preload(store, HOT_SESSIONS, size)
            config = config_for(store_url)
            with Runtime.open(data_dir=data_dir, graphs=[echo], config=config, store=store) as rt:
                in_parallel(ids, lambda sid: rt.step(sid, "warm up"))
                result = run_actorflow(rt, store, 64, ids, plan)
        finally:
            store.close()
        figures.history[size] = result
        print_load(f"actorflow clients=64 history={size}", result)
    first, last = figures.history[HISTORY_SIZES[0]], figures.history[HISTORY_SIZES[-1]]
    print(
        f"history {HISTORY_SIZES[0]} -> {HISTORY_SIZES[-1]} messages: steps/s x"
        f"{last.rate / first.rate:.2f}",
        flush=True,
    )


def bench_langgraph(plan: Plan, figures: Figures) -> None:
    """The same closed loop on LangGraph + SqliteSaver, and its lost updates.

    LangGraph is imported here, after actorflow's runs, so that its modules
    (three times actorflow's objects) do not slow the GC during them.
    """
    from langgraph_baseline import LangGraphBench, lost_updates

    threads = [f"thread-{i}" for i in range(HOT_SESSIONS)]
    with LangGraphBench() as lg:

        def step(thread_id: str, text: str) -> object:
            return lg.step(thread_id, text)

        for clients in CLIENTS:
            result = closed_loop(clients, threads, step, seconds=plan.langgraph_seconds)
            figures.langgraph[clients] = result
            print_load(f"langgraph clients={clients}", result)
    for clients in CLIENTS:
        ours, theirs = figures.actorflow[clients], figures.langgraph[clients]
        ratio = ours.rate / max(theirs.rate, 1e-9)
        cpu_ratio = (theirs.cpu_seconds / max(theirs.steps, 1)) / max(
            ours.cpu_seconds / max(ours.steps, 1), 1e-12
        )
        print(
            f"actorflow / langgraph at {clients} clients: {ratio:,.0f}x the steps/s, "
            f"{cpu_ratio:,.0f}x less CPU per step",
            flush=True,
        )
    found = lost_updates()
    print(
        f"langgraph lost updates: {found['threads']} threads x {found['invokes_per_thread']} "
        f"invokes on one thread_id -> counter {found['counter']} of {found['sent']} "
        f"({found['lost']} lost)",
        flush=True,
    )


def summary(figures: Figures) -> None:
    """Each target against what was reached."""
    rate64 = figures.actorflow[64].rate
    lg64 = max(figures.langgraph[64].rate, 1e-9)
    idle = (
        figures.with_idle.rate / figures.before_idle.rate
        if figures.with_idle and figures.before_idle
        else 0.0
    )
    checks: list[tuple[str, str, bool]] = [
        (">= 15,000 durable steps/s at 64 clients", f"{rate64:,.0f}", rate64 >= 15_000),
        (">= 60x LangGraph at 64 clients", f"{rate64 / lg64:,.0f}x", rate64 / lg64 >= 60),
        (
            f"<= 10% slower with {figures.idle_sessions:,} live idle",
            f"{(idle - 1) * 100:+.1f}% steps/s",
            idle >= 0.9,
        ),
        (
            "<= 8 KiB RSS per idle live actor",
            f"{figures.rss_per_actor / 1024:.2f} KiB",
            figures.rss_per_actor <= 8 * 1024,
        ),
        (
            ">= 20,000 activations/s (without a commit per step)",
            f"{figures.cold_activations_per_s:,.0f}/s "
            f"({figures.activations_per_s:,.0f}/s with an fsynced step each)",
            figures.cold_activations_per_s >= 20_000,
        ),
    ]
    for target, reached, met in checks:
        print(f"target {target}: {reached} {'met' if met else 'MISSED'}", flush=True)


def plot(figures: Figures, path: Path) -> None:
    """Four panels: rate by clients (log), latency by clients, idle ratio, history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    rates, lat, idle, hist = axes[0][0], axes[0][1], axes[1][0], axes[1][1]
    clients = list(figures.actorflow)
    rates.plot(clients, [figures.actorflow[c].rate for c in clients], "o-", label="actorflow")
    rates.plot(clients, [figures.langgraph[c].rate for c in clients], "s-", label="LangGraph")
    rates.set_yscale("log")
    rates.set(title="durable steps/s, 64 sessions", xlabel="client threads", ylabel="steps/s")
    rates.legend()
    lat.plot(clients, [figures.actorflow[c].p50_ms for c in clients], "o-", label="p50")
    lat.plot(clients, [figures.actorflow[c].p99_ms for c in clients], "o--", label="p99")
    lat.set(title="actorflow step latency", xlabel="client threads", ylabel="ms")
    lat.legend()
    if figures.with_idle is not None:
        idle.bar(
            ["no idle", f"{figures.idle_sessions:,} idle"],
            [figures.before_idle.rate if figures.before_idle else 0.0, figures.with_idle.rate],
        )
    idle.set(title="64 clients, live idle sessions beside", ylabel="steps/s")
    sizes = list(figures.history)
    hist.plot(sizes, [figures.history[s].rate for s in sizes], "o-", label="steps/s")
    hist.set_xscale("log")
    hist.set(title="64 clients by chat history length", xlabel="messages", ylabel="steps/s")
    cpu = hist.twinx()
    cpu.plot(
        sizes,
        [figures.history[s].cpu_seconds / max(figures.history[s].steps, 1) * 1e6 for s in sizes],
        "s--",
        color="tab:red",
        label="CPU per step",
    )
    cpu.set_ylabel("us CPU per step")
    hist.legend(loc="upper left")
    cpu.legend(loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot: {path}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, run every part, print the summary and write the plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short runs, 10,000 idle sessions")
    parser.add_argument("--store", default=None, help="store URL (default: SQLite in a temp dir)")
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the PNG")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    figures = Figures()
    # An entry point configures logging, as actorflowd does: warnings and errors only,
    # loggers cached on first use (unconfigured structlog prints every activation's
    # debug line to stdout, and an uncached logger is rebuilt on every call).
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=True,
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"actorflow in-process bench: python {sys.version.split()[0]}, {os.cpu_count()} cores, "
        f"load average {load}, {'quick' if args.quick else 'full'} plan, "
        f"store {args.store or 'sqlite (temp dir)'}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="actorflow-bench-") as tmp:
        base = Path(tmp)
        fsync = fsync_probe(base)
        print(
            f"fsync of 4 KiB in the bench directory: {fsync * 1000:.2f} ms "
            f"({1 / fsync:,.0f}/s): a closed loop of C clients makes at most C steps per commit",
            flush=True,
        )
        (base / "main").mkdir()
        bench_actorflow(plan, args.store, base / "main", figures)
        (base / "cold").mkdir()
        bench_cold_activations(plan, args.store, base / "cold", figures)
        bench_history(plan, args.store, base, figures)
    bench_langgraph(plan, figures)
    summary(figures)
    plot(figures, args.out)


if __name__ == "__main__":
    main()
