"""Idle live sessions: what each costs, and what they cost the hot ones, with and without
hibernation.

Usage: ``.venv-dev/bin/python bench/idle.py [--quick] [--sizes 0,10000,100000]``.

Runs three times, each in a fresh child process (so that freed memory of one run
is not reused by the other): hibernation off (``hibernate_after=0``: every idle
session keeps its actor and its decoded session), on (``hibernate_after=1``: an
idle session keeps its encoded bytes in the live index and no actor), and on
with the garbage collector set as actorflowd sets it (``hibernated-daemon-gc``:
the start-up heap frozen, collections at 5,000/50/100 instead of Python's
700/10/10). In each run:

- durable (fsync) ``echo`` steps/s of 64 client threads on 64 hot sessions (each
  first stepped past the default history retention of 1,000 revisions, so that
  every figure is of the log's steady state, not of a young log that fills up
  as the run goes on), with 0 idle live sessions beside them, then with each of
  ``--sizes``, and the process CPU per step (steadier than the rate, which the
  disk's fsync swings);
- the control: the same idle sessions passivated (stored, not live) in the same
  process and store, hot steps again: the difference from the largest size is
  what keeping them live costs, apart from the store and the heap having grown;
- RSS (VmRSS delta) and GC-tracked objects per idle live session, after each
  idle session was created and stepped once (and, with hibernation, hibernated;
  they are added 5,000 at a time, so the RSS delta also holds the memory of
  5,000 awake actors, freed and reused);
- one full ``gc.collect()`` with them live.

Then the target's figure is taken again with the machine's drift taken out
(``--rounds``, default 9; 0 skips it; ``--alternate-only`` runs only this): three
child processes with hibernation on hold the 64 hot sessions alone, beside the
largest of ``--sizes`` idle live sessions, and beside as many sessions stored
but not live (the store's growth alone), each hot session past the retention
window; they are measured in alternating rounds (one process at a time, the
others idle), and each ratio is the median of the rounds' ratios. The figures
above come from one process measured before and after its idle sessions were
made: on a quiet machine the same state measured twice differs by up to 25%.

Prints one line per figure (the ratios are within one run) and writes
``bench/out/idle.png``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from _plot import grouped_bars
from inprocess import (
    HOT_SESSIONS,
    LoadResult,
    Plan,
    config_for,
    create_many,
    in_parallel,
    preload,
    rss_bytes,
    run_actorflow,
)

from flow.demo import echo
from flow.stores import SessionStore, open_store
from flow.stores._log import DEFAULT_RETENTION
from runtime import Runtime
from runtime.daemon._server import tune_gc

OUT = Path(__file__).resolve().parent / "out" / "idle.png"
#: mode -> (hibernate_after, collect as actorflowd does: start-up heap frozen, its thresholds)
MODES = {"awake": (0.0, False), "hibernated": (1.0, False), "hibernated-daemon-gc": (1.0, True)}
#: Idle sessions are added this many at a time, each batch hibernated before the
#: next, as they would be in a daemon (not 100,000 awake at once first).
BATCH = 5_000
#: Steps each hot session takes before the first figure: past the default history
#: retention (1,000 revisions), so every figure is of sessions in the steady state.
STEADY_STEPS = DEFAULT_RETENTION + 200


def hibernated_count(rt: Runtime) -> int:
    """Live sessions without an actor now."""
    return sum(1 for entry in rt._core.index.entries() if entry.ref is None)


def wait_hibernated(rt: Runtime, want: int, timeout: float = 120.0) -> None:
    """Wait until at least ``want`` live sessions are hibernated (the sweep runs each second)."""
    deadline = time.monotonic() + timeout
    while hibernated_count(rt) < want:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {hibernated_count(rt):,} of {want:,} hibernated")
        time.sleep(0.5)


def warm_to_steady(rt: Runtime, store: SessionStore, hot: list[str], plan: Plan) -> None:
    """Step every hot session past the history retention window, so that its old
    revisions are being dropped and the store's tables have stopped growing for it.

    Measured from fresh sessions instead, the figures at 0 idle sessions were taken
    while the log was young and the later ones after it had filled: a slowdown of
    15-25% that the idle sessions did not cause.
    """
    in_parallel(hot, lambda sid: rt.step(sid, "warm up"))
    steady = replace(plan, seconds=600.0, repeats=1, max_steps=64 * STEADY_STEPS)
    run_actorflow(rt, store, 64, hot, steady)


def add_idle(
    rt: Runtime, have: int, want: int, *, hibernating: bool, passivate: bool = False
) -> list[str]:
    """Make idle sessions ``have`` to ``want`` (each stepped once), ``BATCH`` at a time,
    each batch hibernated (``hibernating``) and then passivated (``passivate``) before
    the next; their ids."""
    made: list[str] = []
    for start in range(have, want, BATCH):
        batch = create_many(rt, min(BATCH, want - start))
        in_parallel(batch, lambda sid: rt.step(sid, "once"))
        if hibernating:  # passivated batches are no longer live: count this one alone
            wait_hibernated(rt, (0 if passivate else start) + len(batch))
        if passivate:
            in_parallel(batch, rt.passivate)
        made += batch
    return made


def cpu_us(result: LoadResult) -> float:
    """The run's process CPU per step, in microseconds."""
    return result.cpu_seconds / max(result.steps, 1) * 1e6


def child(mode: str, sizes: list[int], seconds: float, repeats: int) -> None:
    """One run (one mode): print a JSON line of its figures."""
    plan = Plan(
        seconds=seconds, langgraph_seconds=0, idle_sessions=0, activations=0, repeats=repeats
    )
    after, daemon_gc = MODES[mode]
    rates: dict[int, float] = {}
    cpu: dict[int, float] = {}
    rss: dict[int, float] = {}
    objects: dict[int, float] = {}
    gc_ms: dict[int, float] = {}
    control: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="actorflow-idle-") as tmp:
        data_dir = Path(tmp)
        store = open_store(None, data_dir, "fsync")
        config = replace(config_for(None), hibernate_after=after, sweep_interval=1.0)
        try:
            hot = preload(store, HOT_SESSIONS, 10)
            with Runtime.open(data_dir=data_dir, graphs=[echo], config=config, store=store) as rt:
                if daemon_gc:
                    tune_gc()
                warm_to_steady(rt, store, hot, plan)
                idle = 0
                made: list[str] = []
                for size in sizes:
                    if size > idle:
                        gc.collect()
                        rss_before, objects_before = rss_bytes(), len(gc.get_objects())
                        made += add_idle(rt, idle, size, hibernating=after > 0)
                        gc.collect()
                        added = size - idle
                        rss[size] = (rss_bytes() - rss_before) / added
                        objects[size] = (len(gc.get_objects()) - objects_before) / added
                        began = time.perf_counter()
                        gc.collect()
                        gc_ms[size] = (time.perf_counter() - began) * 1000
                        idle = size
                    result = run_actorflow(rt, store, 64, hot, plan)
                    rates[size] = result.rate
                    cpu[size] = cpu_us(result)
                if made:
                    # the control: the same sessions stored but not live, in the same
                    # process and store (what liveness costs, apart from the store's growth)
                    in_parallel(made, rt.passivate)
                    gc.collect()
                    result = run_actorflow(rt, store, 64, hot, plan)
                    control = {"rate": result.rate, "cpu_us": cpu_us(result)}
        finally:
            store.close()
    figures = {
        "rates": rates,
        "cpu_us": cpu,
        "rss": rss,
        "objects": objects,
        "gc_ms": gc_ms,
        "control": control,
    }
    print(json.dumps(figures), flush=True)


def alternate_child(idle_sessions: int, seconds: float, passivated: bool) -> None:
    """One side of the alternating comparison: 64 hot sessions past the retention window
    (hibernation on) beside ``idle_sessions`` idle live sessions (``passivated``: stored,
    not live); say ``ready``, then measure once per ``measure`` line on stdin (a JSON
    line each) until stdin ends."""
    plan = Plan(seconds=seconds, langgraph_seconds=0, idle_sessions=0, activations=0, repeats=1)
    with tempfile.TemporaryDirectory(prefix="actorflow-idle-ab-") as tmp:
        data_dir = Path(tmp)
        store = open_store(None, data_dir, "fsync")
        config = replace(config_for(None), hibernate_after=1.0, sweep_interval=1.0)
        try:
            hot = preload(store, HOT_SESSIONS, 10)
            with Runtime.open(data_dir=data_dir, graphs=[echo], config=config, store=store) as rt:
                warm_to_steady(rt, store, hot, plan)
                add_idle(rt, 0, idle_sessions, hibernating=True, passivate=passivated)
                gc.collect()
                print("ready", flush=True)
                for line in sys.stdin:
                    if line.strip() != "measure":
                        break
                    result = run_actorflow(rt, store, 64, hot, plan)
                    print(json.dumps({"rate": result.rate, "cpu_us": cpu_us(result)}), flush=True)
        finally:
            store.close()


def alternating(idle_sessions: int, seconds: float, rounds: int) -> None:
    """Hot steps beside ``idle_sessions`` idle live sessions against none, and beside the
    same number stored but not live (the store's growth alone), in three processes
    measured in alternating rounds: prints the medians of the rounds' ratios."""
    sides = {"none": (0, False), "live": (idle_sessions, False), "stored": (idle_sessions, True)}
    processes = {}
    for name, (size, passivated) in sides.items():
        command = [
            sys.executable, __file__, "--alternate-child", str(size), "--seconds", str(seconds)
        ]  # fmt: skip
        if passivated:
            command.append("--passivated")
        processes[name] = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    try:
        for process in processes.values():
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise SystemExit("idle.py: an alternating side did not start")
        for index in range(rounds):
            order = list(sides) if index % 2 == 0 else list(sides)[::-1]
            for name in order:
                process = processes[name]
                assert process.stdin is not None
                assert process.stdout is not None
                process.stdin.write("measure\n")
                process.stdin.flush()
                cpu[name].append(json.loads(process.stdout.readline())["cpu_us"])
    finally:
        for process in processes.values():
            if process.stdin is not None:
                process.stdin.close()
        for process in processes.values():
            process.wait(120)
    for name, label in (("live", "idle live"), ("stored", "passivated (stored, not live)")):
        ratios = [a / b for a, b in zip(cpu["none"], cpu[name], strict=True)]
        low, high = median_interval(ratios)
        print(
            f"alternating (hibernated): 64 hot sessions beside {idle_sessions:,} {label} "
            f"sessions against none, {rounds} alternating rounds of {seconds:.0f} s: "
            f"{statistics.median(ratios):.2f}x the steps per CPU second "
            f"(95% interval of the median {low:.2f}-{high:.2f}; rounds "
            f"{', '.join(f'{x:.2f}' for x in ratios)}); CPU per step "
            f"{statistics.median(cpu[name]):,.0f} against {statistics.median(cpu['none']):,.0f} us"
            + (" (target: >= 0.95x)" if name == "live" else ""),
            flush=True,
        )
    ratios = [a / b for a, b in zip(cpu["stored"], cpu["live"], strict=True)]
    low, high = median_interval(ratios)
    print(
        f"alternating (hibernated): live against the same {idle_sessions:,} stored: "
        f"{statistics.median(ratios):.2f}x the steps per CPU second (95% interval of the "
        f"median {low:.2f}-{high:.2f}; what liveness costs, the store's growth aside)",
        flush=True,
    )


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval holding the median with at least ``confidence``
    (the order statistics whose ranks a fair coin's binomial bounds): how far the
    machine's noise leaves the rounds' median from the one more rounds would find.
    With fewer than 6 values no such interval exists: their whole range."""
    ordered = sorted(values)
    n = len(ordered)
    tail = (1 - confidence) / 2
    below, k = 0.0, 0
    while True:  # the largest k with P(Binomial(n, 1/2) < k) <= tail
        below += math.comb(n, k) / 2**n
        if below > tail:
            break
        k += 1
    if k == 0:
        return ordered[0], ordered[-1]
    return ordered[k - 1], ordered[n - k]


def run_child(mode: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Run one mode in a fresh process; its figures."""
    command = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--sizes",
        args.sizes,
        "--seconds",
        str(args.seconds),
        "--repeats",
        str(args.repeats),
    ]
    out = subprocess.run(
        command, check=True, capture_output=True, text=True, env={**os.environ}, timeout=1800
    ).stdout
    figures: dict[str, dict[str, float]] = json.loads(out.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="0 and 10,000 idle sessions only")
    parser.add_argument("--sizes", default="0,10000,100000")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--rounds", type=int, default=9, help="alternating rounds (0: skip that comparison)"
    )
    parser.add_argument("--child", choices=sorted(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--alternate-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--passivated", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--alternate-only", action="store_true", help="only the alternating comparison"
    )
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeats, args.rounds = "0,10000", 1, 1
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.child:
        child(args.child, sizes, args.seconds, args.repeats)
        return
    if args.alternate_child is not None:
        alternate_child(args.alternate_child, args.seconds, args.passivated)
        return
    if args.alternate_only:
        alternating(sizes[-1], args.seconds, max(args.rounds, 1))
        return
    runs = {mode: run_child(mode, args) for mode in MODES}
    for mode, figures in runs.items():
        rates, cpu = figures["rates"], figures["cpu_us"]
        base, base_cpu = rates["0"], cpu["0"]
        for size in sizes[1:]:
            key = str(size)
            print(
                f"{mode}: per idle live session ({size:,} of them): "
                f"{figures['rss'][key] / 1024:.2f} KiB RSS, "
                f"{figures['objects'][key]:.1f} GC-tracked objects; "
                f"one full gc.collect() {figures['gc_ms'][key]:,.0f} ms",
                flush=True,
            )
        for size in sizes:
            key = str(size)
            print(
                f"{mode}: 64 clients on 64 hot sessions (fsync) with {size:,} idle live "
                f"sessions: {rates[key]:,.0f} steps/s ({rates[key] / base:.2f}x of 0 idle), "
                f"{cpu[key]:,.0f} us of CPU per step ({base_cpu / cpu[key]:.2f}x of "
                "0 idle's steps per CPU second: the steadier figure, fsync waits aside)",
                flush=True,
            )
        control = figures["control"]
        if control:
            top = str(sizes[-1])
            print(
                f"{mode}: the same {sizes[-1]:,} idle sessions passivated (stored, not live; same "
                f"process and store): {control['rate']:,.0f} steps/s, {control['cpu_us']:,.0f} us "
                f"of CPU per step; live against passivated: {control['cpu_us'] / cpu[top]:.2f}x "
                "the steps per CPU second (what keeping them live costs, apart from the store "
                "and heap having grown)",
                flush=True,
            )
    grouped_bars(
        OUT,
        title="Hot steps/s beside idle live sessions (64 clients, fsync)",
        ylabel="steps/s",
        groups=[f"{size:,} idle" for size in sizes],
        series={mode: [runs[mode]["rates"][str(s)] for s in sizes] for mode in MODES},
    )
    print(f"plot: {OUT}", flush=True)
    if args.rounds > 0 and sizes[-1] > 0:
        alternating(sizes[-1], args.seconds, args.rounds)


if __name__ == "__main__":
    main()
