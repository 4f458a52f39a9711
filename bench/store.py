"""Store benchmark: acknowledged fsync'd saves per second, group commit against one per transaction.

Usage: ``.venv-dev/bin/python bench/store.py [--quick] [--seconds S] [--out PATH]``.

C writer threads (8 and 64) each own one session and save it again and again,
waiting for each save's acknowledgement (the future ``SqliteStore.save``
returns, completed after the fsync'd commit that holds it) before the next: a
closed loop, run for a fixed time on a fresh file in a temporary directory.
The same ``SqliteStore`` runs twice: with group commit (the writer commits all
waiting saves in one transaction) and with ``max_batch=1`` (one transaction,
so one fsync, per save). Prints one line per figure, the ratios and the
targets, and writes ``bench/out/store.png``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from _plot import grouped_bars

from flow._context import Context
from flow._session import Session, SessionMetadata, SessionStatus
from flow.stores import SqliteStore

WRITERS = (8, 64)
GROUP_BATCH = 1024
TARGET_RATE = 30_000.0
TARGET_RATIO = 2.0
OUT = Path(__file__).resolve().parent / "out" / "store.png"


@dataclass(frozen=True, slots=True)
class Run:
    """One closed-loop run: saves acknowledged over wall time, and transactions used."""

    mode: str
    writers: int
    saves: int
    seconds: float
    transactions: int
    errors: int

    @property
    def rate(self) -> float:
        """Acknowledged saves per second."""
        return self.saves / self.seconds if self.seconds > 0 else 0.0


def echo_like_session(index: int) -> Session:
    """A session shaped like the demo ``echo`` one after a few steps (about 400 bytes)."""
    context = Context({"count": 3, "user_input": "hello"})
    for _ in range(3):
        context.chat_history.add_user("hello")
        context.chat_history.add_assistant("echo: hello")
    now = time.time()
    return Session(
        session_id=f"bench-{index:05d}",
        graph_id="echo",
        graph_version="v1",
        current_task="echo",
        status=SessionStatus.WAITING_FOR_INPUT,
        context=context,
        metadata=SessionMetadata("bench", now, now, 3, None, now + 3600.0),
    )


def closed_loop(store: SqliteStore, mode: str, writers: int, seconds: float) -> Run:
    """``writers`` threads, each saving its own session as fast as acks come, for ``seconds``."""
    sessions = [echo_like_session(i) for i in range(writers)]
    for session in sessions:
        store.save(session, None).result()
    store.flush()
    counts = [0] * writers
    errors = [0] * writers
    stop = threading.Event()
    start = threading.Barrier(writers + 1)

    def writer(slot: int) -> None:
        session = sessions[slot]
        start.wait()
        while not stop.is_set():
            session = replace(session, revision=session.revision + 1)
            try:
                store.save(session, session.revision - 1).result()
            except Exception:
                errors[slot] += 1
                return
            counts[slot] += 1

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    before = store.writer_stats().transactions
    start.wait()
    began = time.perf_counter()
    stop.wait(seconds)  # the measuring window: the one place a timed wait is the point
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    transactions = store.writer_stats().transactions - before
    return Run(mode, writers, sum(counts), elapsed, transactions, sum(errors))


def measure(mode: str, max_batch: int, writers: int, seconds: float) -> Run:
    """One run on a fresh fsync'd SQLite file."""
    with tempfile.TemporaryDirectory(prefix="actorflow-bench-store-") as tmp:
        store = SqliteStore(Path(tmp) / "sessions.db", "fsync", max_batch=max_batch)
        try:
            return closed_loop(store, mode, writers, seconds)
        finally:
            store.close()


def describe(run: Run) -> str:
    """One printed line for a run."""
    per_tx = run.saves / run.transactions if run.transactions else 0.0
    line = (
        f"{run.mode} writers={run.writers}: {run.rate:,.0f} saves/s "
        f"({run.saves:,} acknowledged fsync'd saves in {run.seconds:.2f} s, "
        f"{per_tx:.1f} saves per transaction)"
    )
    return line + (f", {run.errors} errors" if run.errors else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs (1 s each)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per run (3)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"PNG to write ({OUT})")
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else (1.0 if args.quick else 3.0)

    group: dict[int, Run] = {}
    single: dict[int, Run] = {}
    for writers in WRITERS:
        group[writers] = measure("group commit", GROUP_BATCH, writers, seconds)
        print(describe(group[writers]), flush=True)
        single[writers] = measure("one transaction per save", 1, writers, seconds)
        print(describe(single[writers]), flush=True)
        ratio = group[writers].rate / single[writers].rate if single[writers].rate else 0.0
        print(f"group commit / one per transaction writers={writers}: {ratio:.2f}x", flush=True)

    at64 = group[64].rate
    ratio64 = at64 / single[64].rate if single[64].rate else 0.0
    met_rate = "met" if at64 >= TARGET_RATE else "MISSED"
    met_ratio = "met" if ratio64 >= TARGET_RATIO else "MISSED"
    print(
        f"target group commit >= {TARGET_RATE:,.0f} saves/s at 64 writers: {at64:,.0f} {met_rate}"
    )
    print(f"target group commit >= {TARGET_RATIO:.0f}x one per tx: {ratio64:.2f}x {met_ratio}")

    grouped_bars(
        args.out,
        title="SqliteStore: acknowledged fsync'd saves per second",
        ylabel="saves/s",
        groups=[f"{w} writers" for w in WRITERS],
        series={
            "group commit": [group[w].rate for w in WRITERS],
            "one transaction per save": [single[w].rate for w in WRITERS],
        },
    )
    print(f"plot: {args.out}", file=sys.stderr)
    failed = any(run.errors for run in (*group.values(), *single.values()))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
