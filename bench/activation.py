"""Activation benchmark: wake stored sessions by stepping each once.

Usage: ``.venv-dev/bin/python bench/activation.py [--sessions N] [--history M]
[--threads T] [--repeats R] [--durability passivate|fsync] [--client threads|asyncio|both]
[--gc python|daemon|both] [--profile-only]``.

For each repeat, ``N`` ``echo`` sessions whose chat histories hold ``M`` messages
are written to a fresh SQLite store, then a runtime is opened on it and:

- ``store.load`` of every session from ``T`` threads, alone: the ceiling;
- one ``Runtime.step`` of every session from ``T`` threads: each step activates
  its session (load, decode, start the session actor) and runs an in-memory
  ``echo`` step (with ``--durability passivate`` nothing is committed per step);
- the same steps again, now that every session is live: the difference is
  what activation itself costs.

Then, once (``--long-sessions``, 0 to skip), the same activations from
coroutines of sessions whose histories hold ``--long-history`` messages (the
sessions that kept talking), beside the short ones' CPU per activation in the
same run.

The steps come from ``T`` client threads calling ``Runtime.step`` (``--client
threads``), or from ``T`` concurrent coroutines on one event loop calling
``AsyncRuntime.step`` (``--client asyncio``): how actorflowd's requests arrive,
where 64 blocked client threads would add their own GIL switches to each
activation's CPU. ``--client both`` (the default) runs both in each repeat.

Garbage collection is most of an activation's CPU with Python's default
collector settings: each activation leaves a live session (about 16 objects the
collector tracks), the heap grows, and every 25% of growth costs a full
collection. ``--gc python`` keeps Python's defaults (what a host application
that does not tune its collector gets), ``--gc daemon`` collects as actorflowd
does (the start-up heap frozen, its thresholds), ``--gc both`` (the default)
runs the first, then the second.

Each line gives the rate, and the process CPU time per operation (the steadier
figure on a shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Literal, NamedTuple, cast

import structlog
from inprocess import preload

from flow.demo import echo
from flow.stores import SessionStore, open_store
from runtime import AsyncRuntime, Runtime, RuntimeConfig
from runtime.daemon._server import tune_gc

Durability = Literal["fsync", "commit", "passivate"]

COLLECTORS = {"python": "Python's collector settings", "daemon": "actorflowd's collector settings"}


class Timed(NamedTuple):
    """Wall-clock and process CPU seconds something took."""

    seconds: float
    cpu_seconds: float


def in_parallel(items: Sequence[str], fn: Callable[[str], object], threads: int) -> Timed:
    """Apply ``fn`` to every item from ``threads`` threads (thread i takes ``items[i::threads]``).

    Plain threads over slices, not an executor: a future per item would cost as
    much CPU as what is measured.
    """
    start = threading.Barrier(threads + 1)

    def work(index: int) -> None:
        mine = items[index::threads]
        start.wait()
        for item in mine:
            fn(item)

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    began = time.perf_counter()
    cpu_began = time.process_time()
    start.wait()
    for worker in workers:
        worker.join()
    return Timed(time.perf_counter() - began, time.process_time() - cpu_began)


async def gathered(
    items: Sequence[str], fn: Callable[[str], Awaitable[object]], tasks: int
) -> Timed:
    """Await ``fn`` on every item from ``tasks`` coroutines on this loop (each takes the
    next item when its last is done), as actorflowd's requests arrive."""
    pending = iter(items)

    async def work() -> None:
        for item in pending:
            await fn(item)

    began = time.perf_counter()
    cpu_began = time.process_time()
    await asyncio.gather(*(work() for _ in range(tasks)))
    return Timed(time.perf_counter() - began, time.process_time() - cpu_began)


def report(label: str, count: int, timed: Timed) -> None:
    """One line: rate and CPU per operation."""
    print(
        f"{label}: {count / timed.seconds:,.0f}/s ({count:,} in {timed.seconds:.2f} s; "
        f"{timed.cpu_seconds / count * 1e6:,.0f} us CPU each, so "
        f"{count / max(timed.cpu_seconds, 1e-9):,.0f}/s on one free core)",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, preload the store, then time loads and activations."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--history", type=int, default=10)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--durability", default="passivate", choices=("passivate", "fsync"))
    parser.add_argument(
        "--client",
        default="both",
        choices=("threads", "asyncio", "both"),
        help="client threads calling Runtime.step, coroutines calling AsyncRuntime.step, or both",
    )
    parser.add_argument(
        "--gc",
        default="both",
        choices=("python", "daemon", "both"),
        help="Python's default collector settings, actorflowd's, or the first then the second",
    )
    parser.add_argument(
        "--profile-only", action="store_true", help="activations only (for py-spy), no loads"
    )
    parser.add_argument(
        "--long-sessions",
        type=int,
        default=2_000,
        help="sessions of the long-history run (0: skip it)",
    )
    parser.add_argument("--long-history", type=int, default=1_000)
    args = parser.parse_args(argv)
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=True,
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"activation bench: {args.sessions:,} sessions, history {args.history}, "
        f"{args.threads} clients, durability {args.durability}, load average {load}",
        flush=True,
    )
    config = RuntimeConfig(
        durability=cast(Durability, args.durability),
        max_live=1_000_000,
        max_sessions_per_user=0,  # one owner holds every session
        idle_timeout=86_400.0,
        wait_timeout=86_400.0,
    )
    clients = ("threads", "asyncio") if args.client == "both" else (args.client,)
    # the daemon's settings last: a frozen heap stays frozen for the process
    short_cpu: list[float] = []
    collector = args.gc
    for collector in ("python", "daemon") if args.gc == "both" else (args.gc,):
        if collector == "daemon":
            tune_gc()
        for _ in range(args.repeats):
            for client in clients:
                timed = run_once(args, config, client, collector)
                if client == "asyncio":
                    short_cpu.append(timed.cpu_seconds / args.sessions)
    if args.long_sessions and not args.profile_only:
        long_args = argparse.Namespace(
            **{**vars(args), "sessions": args.long_sessions, "history": args.long_history}
        )
        timed = run_once(
            long_args, config, "asyncio", collector, label=f"{args.long_history:,}-message"
        )
        if short_cpu:
            each = timed.cpu_seconds / args.long_sessions
            print(
                f"activation of a {args.long_history:,}-message session against a "
                f"{args.history:,}-message one (asyncio clients, {COLLECTORS[collector]}): "
                f"{each * 1e6:,.0f} against {short_cpu[-1] * 1e6:,.0f} us of CPU "
                f"(x{each / short_cpu[-1]:.1f})",
                flush=True,
            )


def run_once(
    args: argparse.Namespace,
    config: RuntimeConfig,
    client: str,
    collector: str,
    label: str = "",
) -> Timed:
    """One repeat on a fresh store (a store reused across repeats grows its WAL); the
    activations' time."""
    with tempfile.TemporaryDirectory(prefix="actorflow-activation-") as tmp:
        data_dir = Path(tmp)
        store = open_store(None, data_dir, "fsync")
        try:
            ids = preload(store, args.sessions, args.history)
            # Closing checkpoints the preload's WAL into the file, where sessions
            # passivated a while ago are. Read out of a WAL of 200 MB instead (2,000
            # sessions of 1,000 messages), a load took twice the CPU, and the
            # checkpointer, copying it meanwhile, was counted as the activations'.
            store.close()
            store = open_store(None, data_dir, "fsync")
            if not args.profile_only and client == "threads":
                report("store.load alone", len(ids), in_parallel(ids, store.load, args.threads))
            if client == "threads":
                with Runtime.open(
                    data_dir=data_dir, graphs=[echo], config=config, store=store
                ) as rt:
                    timed = in_parallel(ids, lambda sid: rt.step(sid, "wake up"), args.threads)
                    woke = rt.stats().activations
                    hot = None
                    if not args.profile_only:
                        hot = in_parallel(ids, lambda sid: rt.step(sid, "again"), args.threads)
            else:
                timed, woke, hot = asyncio.run(by_coroutines(args, config, data_dir, store, ids))
            what = f"{args.threads} {client} clients, {COLLECTORS[collector]}"
            sessions = f" of {label} sessions" if label else ""
            report(f"activations{sessions}, {what} ({woke:,} counted)", len(ids), timed)
            if hot is not None:
                report(f"the same steps again, on live sessions, {what}", len(ids), hot)
        finally:
            store.close()
    return timed


async def by_coroutines(
    args: argparse.Namespace,
    config: RuntimeConfig,
    data_dir: Path,
    store: SessionStore,
    ids: list[str],
) -> tuple[Timed, int, Timed | None]:
    """The activations (and the steps again) from ``args.threads`` coroutines on this loop."""
    async with AsyncRuntime.open(
        data_dir=data_dir, graphs=[echo], config=config, store=store
    ) as rt:
        timed = await gathered(ids, lambda sid: rt.step(sid, "wake up"), args.threads)
        woke = (await rt.stats()).activations
        hot = None
        if not args.profile_only:
            hot = await gathered(ids, lambda sid: rt.step(sid, "again"), args.threads)
    return timed, woke, hot


if __name__ == "__main__":
    main()
