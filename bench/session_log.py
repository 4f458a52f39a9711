"""Session-log benchmark: a step's cost and bytes at any history length, activation, long runs.

Usage: ``.venv-dev/bin/python bench/session_log.py [--quick]``.

The figures, all in one run on fresh SQLite files (fsync'd steps, in process):

- steps/s at 64 clients on 64 echo sessions whose chat already holds 10, 100,
  1,000 and 10,000 messages (target: at 1,000, at least 0.8x the 10-message rate);
- WAL bytes per step (the WAL file's growth with checkpoints held off while
  measuring; target at 1,000: at most 2 KiB), and the bytes handed to ``write()``
  (``/proc/self/io`` wchar: the WAL and the checkpoints that copy it into the
  database);
- loading a session after 1,000 steps, with the records its last base left
  (the live compaction rule writes a base once records outweigh it, so about a
  base's worth; the line prints how many), against the same session freshly
  compacted (target: at most 2x);
- Redis bytes per step at 1,000 messages: a redis-server (append-only, fsync
  always, free loopback port) started by the bench; the bytes Redis received
  (INFO ``total_net_input_bytes``) and its AOF's growth, each divided by the
  steps (same 2 KiB target);
- a compaction of a full chat window on bytes against decoding, replaying and
  encoding the same base and records (what compaction did before);
- a long conversation: 64 sessions stepped 2,000 times each (500 with --quick,
  ``--long-steps N`` to choose); steps/s over the last 10% against the first 10%
  (target: at least 0.8x), both counted while all 64 clients still talk. The
  first tenths are younger logs: the chat window (1,000 messages) fills by step
  500 and retention drops a revision a step from revision 1,000, so the line
  after it compares only the tenths past revision 1,000 (the steady state,
  where a step's cost must no longer move).

Prints one line per figure and writes ``bench/out/session_log.png`` (steps/s by
history length) and ``bench/out/session_log_long.png`` (the long conversation's
steps/s per tenth).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog
from _plot import grouped_bars
from cluster import start_redis
from inprocess import closed_loop, config_for, in_parallel, print_load, run_actorflow

from flow import encode, new_session, step
from flow._rebase import archived, rebased
from flow._record import decode_record, encode_record
from flow.demo import echo
from flow.stores import SqliteStore
from flow.stores._log import DEFAULT_RETENTION, LogPolicy, rebuild
from flow.stores._redis import RedisStore
from runtime import Runtime

SIZES = (10, 100, 1_000, 10_000)
CLIENTS = 64
MESSAGE = "a message of eighty characters, about what a short chat turn holds, give or take"
OUT = Path(__file__).resolve().parent / "out" / "session_log.png"
LONG_OUT = OUT.with_name("session_log_long.png")


class Plan:
    """How long each part runs."""

    def __init__(self, quick: bool, long_steps: int | None = None) -> None:
        self.seconds = 1.5 if quick else 3.0
        self.repeats = 1 if quick else 3
        self.max_steps = 500_000
        self.long_steps = long_steps or (500 if quick else 2_000)
        self.loads = 20 if quick else 60


def wchar() -> int:
    """Bytes this process has handed to write() so far."""
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def preload(store: SqliteStore | RedisStore, count: int, messages: int) -> list[str]:
    """``count`` echo sessions whose conversation already holds ``messages`` messages."""
    ids = []
    for _ in range(count):
        session = new_session(echo, owner="bench")
        history = session.context.chat_history
        for i in range(messages):
            (history.add_assistant if i % 2 else history.add_user)(f"{MESSAGE} {i}")
        store.save(session, None).result()
        ids.append(session.session_id)
    return ids


def hold_checkpoints(store: SqliteStore) -> None:
    """Empty the WAL, then let nothing checkpoint it until ``store`` closes: the store's
    checkpointer thread stopped (after any pass it was running) and no WAL restart
    left for the writer to make (``flow/stores/_sqlite_checkpoint.py``). Call it while
    the store is idle."""
    store._checkpointer.close()
    store._checkpointer.restarted()
    store._writer_conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def history_sizes(plan: Plan, base: Path) -> dict[int, tuple[float, float]]:
    """Steps/s and bytes written per step at 64 clients, per history size."""
    figures: dict[int, tuple[float, float]] = {}
    for size in SIZES:
        data_dir = base / f"history-{size}"
        data_dir.mkdir()
        store = SqliteStore(data_dir / "sessions.db", "fsync")
        try:
            ids = preload(store, CLIENTS, size)
            with Runtime.open(
                data_dir=data_dir, graphs=[echo], config=config_for(None), store=store
            ) as rt:
                in_parallel(ids, lambda sid: rt.step(sid, "warm up"))
                hold_checkpoints(store)  # the WAL alone: its file only grows while measured
                wal = data_dir / "sessions.db-wal"
                before, wal_before = wchar(), wal.stat().st_size
                result = run_actorflow(rt, store, CLIENTS, ids, plan)  # type: ignore[arg-type]
                written = (wchar() - before) / max(plan.repeats, 1)
                wal_bytes = (wal.stat().st_size - wal_before) / max(plan.repeats, 1)
        finally:
            store.close()
        per_step = wal_bytes / max(result.steps, 1)
        figures[size] = (result.rate, per_step)
        print_load(f"session log clients=64 history={size}", result)
        print(
            f"bytes per step at history={size}: WAL {per_step:,.0f} B; handed to write() "
            f"{written / max(result.steps, 1):,.0f} B",
            flush=True,
        )
    rate_10, rate_1000 = figures[10][0], figures[1_000][0]
    print(
        f"steps/s at 1,000 messages vs 10: x{rate_1000 / rate_10:.2f} (target >= 0.8); "
        f"WAL bytes per step at 1,000: {figures[1_000][1]:,.0f} B (target <= 2,048)",
        flush=True,
    )
    return figures


def redis_bytes(plan: Plan, base: Path) -> tuple[float, float]:
    """Bytes Redis received and appended to its AOF per step, at 64 clients and 1,000 messages."""
    workdir = base / "redis"
    workdir.mkdir()
    process, url = start_redis(workdir)
    try:
        store = RedisStore(url)
        try:
            ids = preload(store, CLIENTS, 1_000)
            with Runtime.open(
                data_dir=workdir, graphs=[echo], config=config_for(None), store=store
            ) as rt:
                in_parallel(ids, lambda sid: rt.step(sid, "warm up"))
                before = redis_counters(store)
                result = closed_loop(
                    CLIENTS, ids, lambda sid, text: rt.step(sid, text), seconds=plan.seconds
                )
                after = redis_counters(store)
        finally:
            store.close()
    finally:
        process.terminate()
        process.wait()
    steps = max(result.steps, 1)
    received, appended = ((a - b) / steps for a, b in zip(after, before, strict=True))
    print(
        f"Redis bytes per step at history=1000 ({result.rate:,.0f} steps/s): received "
        f"{received:,.0f} B, AOF {appended:,.0f} B (target <= 2,048)",
        flush=True,
    )
    return received, appended


def redis_counters(store: RedisStore) -> tuple[int, int]:
    """INFO's total_net_input_bytes and aof_current_size."""
    info = store.client.info()
    return int(info["total_net_input_bytes"]), int(info["aof_current_size"])


def activation(plan: Plan, base: Path) -> tuple[float, float]:
    """Median load time of a session with 1,000 records after its base, and compacted."""
    store = SqliteStore(base / "activation.db", "commit", policy=LogPolicy(compact_after=10**9))
    try:
        session = new_session(echo, owner="bench")
        store.save(session, None).result()
        for i in range(1_000):
            new, _ = step(echo, session, f"{MESSAGE} {i}")
            store.save(new, session.revision).result()
            session = new
        sid = session.session_id
        assert store.compactor.wait_idle(60)
        with_records = timed_loads(store, sid, plan.loads)
        # the compactor wrote bases as the steps went (``min_tail_bytes``: records that
        # outweigh the base are compacted even while live), so fewer than 1,000 are left
        with contextlib.closing(sqlite3.connect(base / "activation.db")) as conn:
            tail_count, tail_bytes, base_size = conn.execute(
                "SELECT tail_count, tail_bytes, base_size FROM sessions WHERE session_id = ?",
                (sid,),
            ).fetchone()
        store.compact(sid)
        compacted = timed_loads(store, sid, plan.loads)
    finally:
        store.close()
    print(
        f"activation load after 1,000 steps, {tail_count} records ({tail_bytes:,} B) after a "
        f"base of {base_size:,} B: {with_records * 1e3:.2f} ms; freshly compacted: "
        f"{compacted * 1e3:.2f} ms; x{with_records / compacted:.2f} (target <= 2)",
        flush=True,
    )
    return with_records, compacted


def timed_loads(store: SqliteStore, session_id: str, times: int) -> float:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        store.load(session_id)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def compaction_cost() -> tuple[float, float]:
    """A compaction of a full chat window on bytes (``rebased``) against decoding, replaying
    and encoding it (what compaction did before), on the same base and records."""
    session = new_session(echo, owner="bench")
    for i in range(600):  # 1,200 messages: the 1,000-message window is full
        session, _ = step(echo, session, f"{MESSAGE} {i}")
    base = encode(session)
    records = []
    for i in range(200):
        session, _ = step(echo, session, f"{MESSAGE} {i}")
        assert session.record is not None
        records.append(encode_record(session.record))
    on_bytes = best_of(lambda: rebased(base, records))
    decoded = best_of(lambda: encode(rebuild(base, records)))
    archive = best_of(lambda: archived(records))
    decoding = best_of(lambda: [decode_record(raw) for raw in records])
    print(
        f"compaction of a {len(base) / 1024:,.0f} KiB base (1,000 messages) and 200 records: "
        f"{on_bytes * 1e3:.2f} ms on bytes, {decoded * 1e3:.2f} ms decoding, replaying and "
        f"encoding (x{decoded / on_bytes:.1f}); archiving 200 dropped records "
        f"{archive * 1e3:.2f} ms, decoding them {decoding * 1e3:.2f} ms",
        flush=True,
    )
    return on_bytes, decoded


def best_of(work: Callable[[], object], rounds: int = 7, times: int = 5) -> float:
    """The least mean CPU time of ``work`` over ``rounds`` rounds: this thread's CPU, not the
    wall clock, which a shared machine's other processes stretch."""
    samples = []
    for _ in range(rounds):
        started = time.thread_time()
        for _ in range(times):
            work()
        samples.append((time.thread_time() - started) / times)
    return min(samples)


def long_conversation(plan: Plan, base: Path) -> list[float]:
    """64 sessions stepped ``long_steps`` times each: steps/s in each tenth of the run."""
    data_dir = base / "long"
    data_dir.mkdir()
    with Runtime.open(data_dir=data_dir, graphs=[echo], config=config_for(None)) as rt:
        ids = [rt.create_session("echo", owner="bench") for _ in range(CLIENTS)]
        stamps: list[list[tuple[float, float]]] = [[] for _ in range(CLIENTS)]
        gate = threading.Barrier(CLIENTS)

        def talk(index: int) -> None:
            sid = ids[index]
            gate.wait()
            for i in range(plan.long_steps):
                rt.step(sid, f"{MESSAGE} {i}")
                # wall clock and the process's CPU time (which other processes do not stretch)
                stamps[index].append((time.perf_counter(), time.process_time()))

        threads = [threading.Thread(target=talk, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    # only while all 64 talk: once the first finishes, fewer clients mean fewer steps/s
    everyone = min(client[-1][0] for client in stamps)
    done = sorted(t for client in stamps for t in client if t[0] <= everyone)
    tenth = len(done) // 10
    spans = [(done[k * tenth], done[(k + 1) * tenth - 1]) for k in range(10)]
    rates = [tenth / (end[0] - start[0]) for start, end in spans]
    cpu = [(end[1] - start[1]) / tenth * 1e6 for start, end in spans]
    print(
        "long conversation, process CPU per step per tenth: "
        + ", ".join(f"{us:,.0f}" for us in cpu)
        + f" us; first/last x{cpu[0] / cpu[-1]:.2f}",
        flush=True,
    )
    first, last = rates[0], rates[-1]
    print(
        "long conversation, steps/s per tenth: " + ", ".join(f"{rate:,.0f}" for rate in rates),
        flush=True,
    )
    print(
        f"long conversation, 64 sessions x {plan.long_steps:,} steps: first 10% "
        f"{first:,.0f} steps/s, last 10% {last:,.0f} steps/s, x{last / first:.2f} "
        "(target >= 0.8)",
        flush=True,
    )
    steady_state(plan, rates, cpu)
    grouped_bars(
        LONG_OUT,
        title=f"Long conversation: steps/s per tenth, 64 sessions x {plan.long_steps:,} steps",
        ylabel="steps/s",
        groups=[f"{k + 1}" for k in range(10)],
        series={"steps/s": rates},
    )
    return rates


def steady_state(plan: Plan, rates: list[float], cpu: list[float]) -> None:
    """The long conversation's tenths that start past the retention horizon: the window
    is full and each step drops a revision, so nothing about the log grows any more."""
    first = -(-DEFAULT_RETENTION * 10 // plan.long_steps)  # the first tenth past it
    if first > 8:
        print(
            f"long conversation, steady state: not reached ({plan.long_steps:,} steps; "
            f"retention starts dropping at revision {DEFAULT_RETENTION:,})",
            flush=True,
        )
        return
    span, steps = cpu[first:], rates[first:]
    # the first two tenths against the last two: one tenth alone swings by a fifth here
    cpu_drift = (span[-1] + span[-2]) / (span[0] + span[1])
    rate_drift = (steps[-1] + steps[-2]) / (steps[0] + steps[1])
    print(
        f"long conversation, steady state (tenths {first + 1}-10, past revision "
        f"{DEFAULT_RETENTION:,}: the chat window full, retention dropping a revision a "
        f"step): CPU per step {min(span):,.0f}-{max(span):,.0f} us, its last two tenths "
        f"x{cpu_drift:.2f} its first two; steps/s x{rate_drift:.2f}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer steps")
    parser.add_argument(
        "--long-only",
        action="store_true",
        help="only the long conversation (to compare builds run after one another)",
    )
    parser.add_argument(
        "--long-steps",
        type=int,
        default=None,
        metavar="N",
        help="steps of each session in the long conversation (default 2,000; 500 quick)",
    )
    args = parser.parse_args()
    if args.long_steps is not None and args.long_steps < 100:
        parser.error("--long-steps must be at least 100")
    plan = Plan(args.quick, args.long_steps)
    # an entry point configures logging, as actorflowd does: warnings and errors only
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=True,
    )
    compaction_cost()
    if args.long_only:
        with tempfile.TemporaryDirectory(prefix="actorflow-bench-log-") as tmp:
            long_conversation(plan, Path(tmp))
        return 0
    with tempfile.TemporaryDirectory(prefix="actorflow-bench-log-") as tmp:
        base = Path(tmp)
        sizes = history_sizes(plan, base)
        received, appended = redis_bytes(plan, base)
        with_records, compacted = activation(plan, base)
        rates = long_conversation(plan, base)
    grouped_bars(
        OUT,
        title="Session log: steps/s at 64 clients by history length (fsync)",
        ylabel="steps/s",
        groups=[f"{size:,} messages" for size in SIZES],
        series={"steps/s": [sizes[size][0] for size in SIZES]},
    )
    verdicts = {
        "steps/s at 1,000 messages >= 0.8x 10": sizes[1_000][0] >= 0.8 * sizes[10][0],
        "WAL bytes per step at 1,000 <= 2 KiB": sizes[1_000][1] <= 2048,
        "Redis bytes per step <= 2 KiB": max(received, appended) <= 2048,
        "activation with records <= 2x freshly compacted": with_records <= 2 * compacted,
        "long conversation last/first tenth >= 0.8": rates[-1] >= 0.8 * rates[0],
    }
    missed = [name for name, met in verdicts.items() if not met]
    print("targets met" if not missed else "targets missed: " + "; ".join(missed), flush=True)
    print(f"plot: {OUT}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
