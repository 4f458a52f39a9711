"""Instructions per operation, counted by valgrind: a figure the machine's load cannot swing.

Usage: ``.venv-dev/bin/python bench/instructions.py [--quick] [--against REF]``.

The rates and CPU times of the other benches swing up to 2x on this shared
machine within minutes, so a change that saves 3% of a step cannot be seen in
them. This bench counts the CPU instructions a scenario executes (valgrind's
``callgrind`` tool, the ``Ir`` total; every thread, the SQLite library and the
interpreter included) and prints them per operation, the child collecting garbage
as actorflowd does. The same code counted twice in one run agreed to 0.1-0.7%
(the timer scenario varies most: its batches depend on thread scheduling),
whatever else the machine ran.

Each scenario runs twice in a child process under valgrind, with ``small`` and
``large`` operations; the difference in instructions over the difference in
operations is the cost of one operation (start-up, imports and shutdown cancel
out). The operations are issued one at a time from one thread (``timer``: one
``fire_due_timers`` call), so each waits for its own commit:

- ``hot step``: one ``Runtime.step`` of a live ``echo`` session (64 sessions, 10
  messages of history each), committed (``durability="commit"``);
- ``hot step, talking``: the same, of sessions that keep talking: each took 20
  steps before the count and takes 13 or 39 more in it, so that the log's
  compactions (a new base about every 13 steps of such a session) are counted
  in proportion, as a session that goes on pays them;
- ``hot step beside 100,000 stored``: ``hot step`` with 100,000 other sessions in
  the store (each saved once, 10 messages, not live): what the store's size alone
  adds to a step (issue 20's idle figure, without the machine's noise);
- ``activation``: one ``Runtime.step`` of a passivated ``echo`` session (10
  messages): its load, decode and actor start, the step and its commit;
- ``activation after 20 steps``: the same, of sessions that took 20 steps and were
  then passivated (their load replays the records since their last base);
- ``timer``: one durable timer fired (bench/timers.py's graph): the session's
  activation, the timer step and its commit, with a ``ManualClock`` moved past
  every due time and ``Runtime.fire_due_timers``.

With ``--against REF`` the scenarios (this file's) also run on the code of git
revision REF, exported to a temp dir, and each line gives this tree's count as a
fraction of REF's. Needs ``valgrind`` (``apt-get install valgrind``). Valgrind runs the
code about 50x slower: a full run takes a few minutes.
"""

from __future__ import annotations

import os
import sys

if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
    sys.path.append(sys.path.pop(0))  # keep bench/ importable, after the standard library

import argparse
import concurrent.futures
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = {  # name -> (small, large) operation counts
    "hot step": (100, 600),
    "hot step, talking": (13 * 64, 39 * 64),
    "hot step beside 100,000 stored": (100, 600),
    "activation": (100, 600),
    "activation after 20 steps": (100, 400),
    "timer": (200, 1200),
}
QUICK = {
    "hot step": (50, 250),
    "hot step beside 100,000 stored": (50, 250),
    "activation": (50, 250),
    "hot step, talking": (13 * 64, 39 * 64),  # fewer would miss the compactions
    "activation after 20 steps": (50, 200),
    "timer": (100, 500),
}
BESIDE = 100_000  # sessions stored beside the hot ones in "hot step beside 100,000 stored"
TALKED = 20  # steps each session of "... 20 steps" and "..., talking" took before the count
_COLLECTED = re.compile(r"Collected : (\d+)")


def prepare(scenario: str, count: int, data_dir: Path) -> None:
    """Write the store a child run of ``scenario`` starts from (natively: not counted)."""
    from flow.stores import SqliteStore

    if scenario == "timer":
        import timers  # bench/timers.py: its graph and its store set-up

        timers.setup(data_dir, count)
        return
    from inprocess import preload

    data_dir.mkdir(parents=True, exist_ok=True)
    hot = scenario.startswith("hot step")
    with SqliteStore(data_dir / "sessions.db", durability="commit") as store:
        sessions = preload(store, 64 if hot else count, 10)
        if scenario == "hot step beside 100,000 stored":
            for _ in range(0, BESIDE, 10_000):
                preload(store, 10_000, 10, owner="idle")
    if scenario in ("activation after 20 steps", "hot step, talking"):
        from flow.demo import echo
        from runtime import Runtime, RuntimeConfig

        config = RuntimeConfig(durability="commit")
        with Runtime.open(data_dir=data_dir, graphs=[echo], config=config) as rt:
            for _ in range(TALKED):
                for sid in sessions:
                    rt.step(sid, "an earlier message")
            for sid in sessions:  # as an idle session is (its log compacted as it rests)
                rt.passivate(sid)


def child(scenario: str, count: int, data_dir: Path) -> None:
    """In the child (under valgrind): open a runtime on ``data_dir`` and run ``count``
    operations of ``scenario``, one at a time, as actorflowd runs (its logging and
    garbage collection)."""
    import logging

    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=True,
    )
    from flow.demo import echo
    from runtime import Runtime, RuntimeConfig
    from runtime.daemon._server import tune_gc
    from runtime.testing import ManualClock

    tune_gc()  # the garbage collector as actorflowd sets it
    if scenario == "timer":
        import timers

        clock = ManualClock(timers.DUE_BASE - 30.0)
        config = RuntimeConfig(durability="commit", clock=clock, timer_poll_interval=3600.0)
        with Runtime.open(data_dir=data_dir, graphs=[timers.GRAPH], config=config) as rt:
            clock.advance(30.0 + timers.WINDOW + 1.0)
            rt.fire_due_timers(timeout=3600.0)
        by_revision = timers.outcome(data_dir, count)[0]
        if by_revision != {2: count}:  # each session one timer step after its first
            raise SystemExit(f"sessions by revision {by_revision}, {count} at 2 expected")
        return
    config = RuntimeConfig(durability="commit")
    with Runtime.open(data_dir=data_dir, graphs=[echo], config=config) as rt:
        sessions = [item.session_id for item in rt.list_sessions("bench", limit=1000).items]
        if scenario.startswith("hot step"):
            for sid in sessions:
                rt.step(sid, "warm up")  # every session live before the counted steps
            sessions = [sessions[i % len(sessions)] for i in range(count)]
        elif len(sessions) != count:
            raise SystemExit(f"{len(sessions)} sessions stored, {count} expected")
        for sid in sessions:
            rt.step(sid, "x")


def count_instructions(code: Path, scenario: str, count: int) -> int:
    """Instructions (``Ir``) of one child run of ``scenario`` on ``code``'s tree."""
    with tempfile.TemporaryDirectory(prefix="actorflow-bench-ir-") as tmp:
        out = Path(tmp) / "callgrind.out"
        data_dir = Path(tmp) / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORFLOW_")}
        env["PYTHONPATH"] = os.pathsep.join([str(code), str(code / "bench")])
        # this file's scenarios, on ``code``'s modules (PYTHONPATH comes first)
        script = str(Path(__file__).resolve())
        setup = [sys.executable, script, "--prepare", scenario, "--count", str(count)]
        subprocess.run([*setup, "--data-dir", str(data_dir)], cwd=tmp, env=env, check=True)
        command = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            sys.executable, script,
            "--child", scenario, "--count", str(count), "--data-dir", str(data_dir),
        ]  # fmt: skip
        done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{scenario} x{count} failed:\n{done.stderr[-3000:]}")
        found = _COLLECTED.findall(done.stderr)
        if not found:
            raise SystemExit(f"no instruction count from valgrind:\n{done.stderr[-2000:]}")
        return int(found[-1])


def per_operation(code: Path, counts: dict[str, tuple[int, int]]) -> dict[str, float]:
    """Instructions per operation of each scenario on ``code`` (two runs each, in parallel)."""
    jobs = [(name, n) for name, pair in counts.items() for n in pair]
    with concurrent.futures.ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
        totals = dict(
            zip(jobs, pool.map(lambda job: count_instructions(code, *job), jobs), strict=True)
        )
    return {
        name: (totals[(name, large)] - totals[(name, small)]) / (large - small)
        for name, (small, large) in counts.items()
    }


def export(ref: str, into: Path) -> Path:
    """The tree of git revision ``ref`` (this tree's bench/instructions.py copied in)."""
    tree = into / "against"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    shutil.copy(ROOT / "bench" / "instructions.py", tree / "bench" / "instructions.py")
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer operations per run")
    parser.add_argument("--against", metavar="REF", help="also count git revision REF's code")
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    parser.add_argument("--prepare", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare, args.count, args.data_dir)
        return
    if args.child:
        child(args.child, args.count, args.data_dir)
        return
    if shutil.which("valgrind") is None:
        print("skipped: valgrind is not installed (apt-get install valgrind)", flush=True)
        return
    counts = {
        name: pair
        for name, pair in (QUICK if args.quick else SCENARIOS).items()
        if not args.only or name in args.only
    }
    ours = per_operation(ROOT, counts)
    theirs: dict[str, float] = {}
    if args.against:
        with tempfile.TemporaryDirectory(prefix="actorflow-bench-ir-ref-") as tmp:
            theirs = per_operation(export(args.against, Path(tmp)), counts)
    for name, value in ours.items():
        line = f"instructions per {name}: {value:,.0f}"
        if name in theirs:
            line += f" ({value / theirs[name]:.3f}x of {args.against}: {theirs[name]:,.0f})"
        print(line, flush=True)


if __name__ == "__main__":
    main()
