"""Idempotency keys: what a session's key table costs in memory, bytes and step time.

Usage: ``.venv-dev/bin/python bench/idempotency.py [--quick]``.

Figures, all in one run, on echo sessions stepped with 36-character keys (a
UUID's length) and short inputs (``"message N"``, answered ``"echo: message N"``):

- the key table's memory per session when full (256 keys), measured with
  tracemalloc around building it from the steps' own results;
- the base snapshot's bytes with the full table against without it, and a keyed
  step's record bytes against an unkeyed one's;
- in process (SQLite, fsync'd, one client per session, 16 new sessions per
  measurement, each with 256 steps of history first), steps/s with a fresh key
  per step on sessions whose table starts empty against sessions whose table
  is already full (target: at least 0.9x: the table's size does not make a
  step slower), and against steps without keys; and the process's CPU time
  per step for each (less sensitive to a loaded machine than steps/s).

Prints one line per figure and writes ``bench/out/idempotency.png``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
import tracemalloc
import uuid
from pathlib import Path

import msgspec
import structlog
from _plot import grouped_bars

from flow import encode, new_session, step
from flow._idempotency import MAX_KEYS, KeyEntry, KeyTable, input_digest
from flow._record import encode_record
from flow.demo import echo
from runtime import Runtime, RuntimeConfig

OUT = Path(__file__).resolve().parent / "out" / "idempotency.png"
SESSIONS = 16


def table_figures() -> tuple[float, int, int, int, int]:
    """(table KiB in memory, base bytes without/with the table, record bytes unkeyed/keyed)."""
    session = new_session(echo, owner="bench")
    steps = []
    for n in range(MAX_KEYS):
        session, result = step(echo, session, f"message {n}")
        steps.append((str(uuid.uuid4()), input_digest("step", f"message {n}"), result))
    plain_base = len(encode(session))
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    table = KeyTable(session.session_id)
    for key, digest, result in steps:
        # the actor keeps the step's own result; copy it so that it is counted here
        table.add(KeyEntry(key, digest, time.time(), msgspec.structs.replace(result)))
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    kib = sum(s.size_diff for s in after.compare_to(before, "filename")) / 1024
    session.keys = table
    keyed_base = len(encode(session))
    record = session.record
    assert record is not None
    key, digest, result = steps[-1]
    keyed = msgspec.structs.replace(
        record, request_id=key, input_digest=digest, responses=result.responses
    )
    return kib, plain_base, keyed_base, len(encode_record(record)), len(encode_record(keyed))


def fresh_sessions(rt: Runtime, *, keyed: bool) -> list[str]:
    """New sessions with 256 steps of history each, keyed (a full table) or not."""
    sessions = [rt.create_session("echo", owner="bench") for _ in range(SESSIONS)]
    for sid in sessions:
        for n in range(MAX_KEYS):
            rt.step(sid, n, request_id=f"fill-{n}" if keyed else None)
    return sessions


def steps_per_second(
    rt: Runtime, sessions: list[str], seconds: float, keyed: bool
) -> tuple[float, float]:
    """(steps/s, process CPU µs per step) with one client thread per session for ``seconds``."""
    stop = threading.Event()
    counts = [0] * len(sessions)

    def client(i: int, sid: str) -> None:
        n = 0
        while not stop.is_set():
            key = f"{sid[:8]}-{uuid.uuid4()}" if keyed else None
            rt.step(sid, f"message {n}", request_id=key)
            n += 1
        counts[i] = n

    threads = [threading.Thread(target=client, args=(i, s)) for i, s in enumerate(sessions)]
    started = time.perf_counter()
    cpu = time.process_time()
    for thread in threads:
        thread.start()
    time.sleep(seconds)  # the measuring window of a benchmark, not a wait for an event
    stop.set()
    for thread in threads:
        thread.join()
    rt.store.flush()
    steps = sum(counts)
    return steps / (time.perf_counter() - started), (time.process_time() - cpu) / steps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    seconds, rounds = (1.0, 1) if args.quick else (3.0, 3)

    kib, plain_base, keyed_base, plain_record, keyed_record = table_figures()
    print(f"key table in memory, {MAX_KEYS} keys: {kib:.1f} KiB per session")
    print(
        f"base snapshot: {plain_base:,} B without keys, {keyed_base:,} B with {MAX_KEYS} keys "
        f"(+{(keyed_base - plain_base) / MAX_KEYS:.0f} B per key)"
    )
    print(f"step record: {plain_record} B unkeyed, {keyed_record} B keyed")

    with tempfile.TemporaryDirectory() as tmp:
        config = RuntimeConfig(durability="fsync")
        with Runtime.open(data_dir=tmp, graphs=[echo], config=config) as rt:
            rates: dict[str, list[float]] = {"empty table": [], "full table": [], "no keys": []}
            cpus: dict[str, list[float]] = {label: [] for label in rates}
            for _ in range(rounds):  # alternate, so that load on the machine hits all three
                for label in rates:
                    sessions = fresh_sessions(rt, keyed=label == "full table")
                    rate, cpu = steps_per_second(rt, sessions, seconds, label != "no keys")
                    rates[label].append(rate)
                    cpus[label].append(cpu)
    best = {label: max(values) for label, values in rates.items()}
    cpu_us = {label: min(values) for label, values in cpus.items()}
    print(
        "CPU per step (the whole process, compaction included): "
        + ", ".join(f"{label} {value:.0f} us" for label, value in cpu_us.items())
        + f"; full/empty {cpu_us['full table'] / cpu_us['empty table']:.2f}x"
    )
    ratio = best["full table"] / best["empty table"]
    print(
        f"steps/s with a key per step: {best['empty table']:,.0f} (empty table), "
        f"{best['full table']:,.0f} (full table): {ratio:.2f}x (target >= 0.9x)"
    )
    print(
        f"steps/s without keys: {best['no keys']:,.0f}; keyed/unkeyed "
        f"{best['empty table'] / best['no keys']:.2f}x"
    )
    path = grouped_bars(
        OUT,
        title="Steps/s in process (SQLite, fsync), 16 sessions",
        ylabel="steps/s",
        groups=["steps/s"],
        series={label: [value] for label, value in best.items()},
    )
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
