"""Store benchmark: acknowledged fsync'd saves per second, group commit against one per transaction.

Usage: ``.venv-dev/bin/python bench/store.py [--quick] [--seconds S] [--rounds N] [--out PATH]``.

C writer threads (8 and 64) each own one session and save it again and again,
waiting for each save's acknowledgement (the future ``SqliteStore.save``
returns, completed after the fsync'd commit that holds it) before the next: a
closed loop, run for a fixed time on a fresh file in a temporary directory,
three times per configuration (alternating, so that a noisy neighbour hurts all
alike); each line gives the median and the range.
The same ``SqliteStore`` runs twice: with group commit (the writer commits all
waiting saves in one transaction) and with ``max_batch=1`` (one transaction,
so one fsync, per save). Prints one line per figure, the ratios and the
targets, and writes ``bench/out/store.png``. Two more figures put them in
context: group commit at 64 writers with ``durability="commit"`` (no fsync, so
what the store's CPU side allows), and the same closed loop with no store at
all (a thread completes each future at once): CPython's thread handoffs alone,
the ceiling for any writer thread on this machine now.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import statistics
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path

from _plot import grouped_bars

from flow._context import Context
from flow._session import Session, SessionMetadata, SessionStatus
from flow.stores import SqliteStore
from flow.stores._protocol import Durability

WRITERS = (8, 64)
GROUP_BATCH = 1024
TARGET_RATE = 30_000.0
TARGET_RATIO = 2.0
NO_FSYNC = "group commit, durability=commit (no fsync: the CPU side alone)"
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


def handoff_ceiling(writers: int, seconds: float) -> float:
    """Round trips/s of the same closed loop with no store: a thread completes futures at once.

    This is what CPython's thread handoffs alone allow on this machine right now,
    the ceiling any in-process store with a writer thread can approach.
    """
    pending: queue.SimpleQueue[Future[None] | None] = queue.SimpleQueue()

    def completer() -> None:
        while True:
            batch = [pending.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(pending.get_nowait())
            for future in batch:
                if future is None:
                    return
                future.set_result(None)

    counts = [0] * writers
    stop = threading.Event()
    start = threading.Barrier(writers + 1)

    def writer(slot: int) -> None:
        start.wait()
        while not stop.is_set():
            future: Future[None] = Future()
            pending.put(future)
            future.result()
            counts[slot] += 1

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    helper = threading.Thread(target=completer)
    helper.start()
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    stop.wait(seconds)  # the measuring window
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    pending.put(None)
    helper.join()
    return sum(counts) / elapsed


def measure(
    mode: str, max_batch: int, writers: int, seconds: float, durability: Durability = "fsync"
) -> Run:
    """One run on a fresh SQLite file (fsync'd unless ``durability`` says otherwise)."""
    with tempfile.TemporaryDirectory(prefix="actorflow-bench-store-") as tmp:
        store = SqliteStore(Path(tmp) / "sessions.db", durability, max_batch=max_batch)
        try:
            return closed_loop(store, mode, writers, seconds)
        finally:
            store.close()


def describe(runs: list[Run]) -> str:
    """One printed line for the runs of one configuration: the median, the range, batching."""
    rates = sorted(run.rate for run in runs)
    saves = sum(run.saves for run in runs)
    transactions = sum(run.transactions for run in runs)
    errors = sum(run.errors for run in runs)
    line = (
        f"{runs[0].mode} writers={runs[0].writers}: {median(runs):,.0f} saves/s "
        f"(median of {len(runs)} runs of {runs[0].seconds:.1f} s, range {rates[0]:,.0f}-"
        f"{rates[-1]:,.0f}; {saves / max(transactions, 1):.1f} saves per transaction)"
    )
    return line + (f", {errors} errors" if errors else "")


def median(runs: list[Run]) -> float:
    """The median rate of ``runs``."""
    return statistics.median(run.rate for run in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs: 1 s, 1 round")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per run (3)")
    parser.add_argument("--rounds", type=int, default=None, help="runs per configuration (3)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"PNG to write ({OUT})")
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else (1.0 if args.quick else 3.0)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)

    # Rounds alternate the configurations, so that a noisy neighbour hurts them alike.
    group: dict[int, list[Run]] = {w: [] for w in WRITERS}
    single: dict[int, list[Run]] = {w: [] for w in WRITERS}
    ceilings: list[float] = []
    unsynced: list[Run] = []
    for _ in range(rounds):
        ceilings.append(handoff_ceiling(64, seconds))
        unsynced.append(measure(NO_FSYNC, GROUP_BATCH, 64, seconds, "commit"))
        for writers in WRITERS:
            group[writers].append(measure("group commit", GROUP_BATCH, writers, seconds))
            single[writers].append(measure("one transaction per save", 1, writers, seconds))
    ceiling = statistics.median(ceilings)
    for writers in WRITERS:
        print(describe(group[writers]), flush=True)
        print(describe(single[writers]), flush=True)
        ratio = median(group[writers]) / max(median(single[writers]), 1e-9)
        print(f"group commit / one per transaction writers={writers}: {ratio:.2f}x", flush=True)

    print(describe(unsynced), flush=True)
    print(
        f"no-store ceiling writers=64: {ceiling:,.0f} round trips/s (the same closed loop, "
        "futures completed at once by a thread: CPython's thread handoffs alone)",
        flush=True,
    )
    at64 = median(group[64])
    ratio64 = at64 / max(median(single[64]), 1e-9)
    met_rate = "met" if at64 >= TARGET_RATE else "MISSED"
    met_ratio = "met" if ratio64 >= TARGET_RATIO else "MISSED"
    print(
        f"target group commit >= {TARGET_RATE:,.0f} saves/s at 64 writers: {at64:,.0f} {met_rate}"
    )
    print(
        f"target group commit >= {TARGET_RATIO:.0f}x one per tx: {ratio64:.2f}x {met_ratio}",
        flush=True,
    )

    grouped_bars(
        args.out,
        title="SqliteStore: acknowledged fsync'd saves per second",
        ylabel="saves/s",
        groups=[f"{w} writers" for w in WRITERS],
        series={
            "group commit": [median(group[w]) for w in WRITERS],
            "one transaction per save": [median(single[w]) for w in WRITERS],
        },
    )
    print(f"plot: {args.out}", flush=True)
    failed = any(run.errors for runs in (*group.values(), *single.values()) for run in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
