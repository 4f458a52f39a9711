"""PostgreSQL against SQLite and Redis, against LangGraph's PostgresSaver, and two daemons on it.

Usage: ``.venv-dev/bin/python bench/postgres.py [--quick]``.

Starts a throwaway PostgreSQL (initdb + pg_ctl in a temp dir, fsync and
``synchronous_commit`` on; the tests' own helper, tests/pgserver.py) and a
redis-server (append-only, ``appendfsync always``), then prints one line per figure:

- durable (``fsync``) in-process steps/s, p50/p99 and CPU per step of 64 ``echo``
  sessions at 8 and 64 client threads through PostgreSQL, SQLite and Redis, same run;
- LangGraph with ``PostgresSaver`` (a connection pool) on the same server and the
  same workload (``bench/langgraph_baseline.py``'s graph), and actorflow's ratio;
- over HTTP, 16 clients: one daemon on PostgreSQL, then two daemons sharing it with
  random routing (about half the requests forwarded to the lease holder), each after
  a second of load not counted, for at least 4 s.

Writes ``bench/out/postgres.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # flow/ before tests/flow (a namespace package there)
sys.path.append(str(ROOT / "tests"))  # pgserver: the tests' throwaway PostgreSQL

from _plot import grouped_bars  # noqa: E402
from cluster import run_load, start_daemon, start_redis  # noqa: E402
from inprocess import (  # noqa: E402
    HOT_SESSIONS,
    LoadResult,
    Plan,
    closed_loop,
    config_for,
    in_parallel,
    preload,
    print_load,
    run_actorflow,
)
from pgserver import PostgresServer, find_pg_bin  # noqa: E402

from flow.demo import echo  # noqa: E402
from flow.stores import open_store  # noqa: E402
from runtime import Runtime  # noqa: E402

CLIENTS = (8, 64)
OUT = Path(__file__).resolve().parent / "out" / "postgres.png"


def bench_store(label: str, url: str | None, data_dir: Path, plan: Plan) -> dict[int, LoadResult]:
    """Durable echo steps in process through the store at ``url`` (None: SQLite)."""
    data_dir.mkdir(parents=True)
    store = open_store(url, data_dir, "fsync")
    results: dict[int, LoadResult] = {}
    try:
        hot = preload(store, HOT_SESSIONS, 10)
        config = config_for(url)
        with Runtime.open(data_dir=data_dir, graphs=[echo], config=config, store=store) as rt:
            in_parallel(hot, lambda sid: rt.step(sid, "warm up"))
            run_actorflow(rt, store, 64, hot, replace(plan, repeats=1))  # warm-up, not shown
            for clients in CLIENTS:
                results[clients] = run_actorflow(rt, store, clients, hot, plan)
                print_load(f"{label:8} clients={clients}", results[clients])
    finally:
        store.close()
    return results


def bench_langgraph(url: str, plan: Plan) -> dict[int, LoadResult] | None:
    """LangGraph + PostgresSaver on the same server, or None when it is not installed."""
    try:
        from langgraph.checkpoint.postgres import PostgresSaver
        from langgraph.graph import END, START, StateGraph
        from langgraph_baseline import EchoState, _append_and_count
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool
    except ImportError as exc:
        print(f"langgraph+PostgresSaver: not run ({exc}; pip install -e '.[bench]')")
        return None
    pool: ConnectionPool[Any] = ConnectionPool(
        url,
        min_size=4,
        max_size=64,
        kwargs={"autocommit": True, "row_factory": dict_row, "prepare_threshold": 0},
    )
    try:
        saver = PostgresSaver(pool)  # type: ignore[arg-type]
        saver.setup()
        builder = StateGraph(EchoState)
        builder.add_node("append", _append_and_count)
        builder.add_edge(START, "append")
        builder.add_edge("append", END)
        graph = builder.compile(checkpointer=saver)

        def step(thread_id: str, text: str) -> object:
            return graph.invoke({"input": text}, {"configurable": {"thread_id": thread_id}})

        threads = [f"thread-{i}" for i in range(HOT_SESSIONS)]
        for thread in threads:
            step(thread, "warm up")
        results: dict[int, LoadResult] = {}
        for clients in CLIENTS:
            results[clients] = closed_loop(clients, threads, step, seconds=plan.langgraph_seconds)
            print_load(f"langgraph+PostgresSaver clients={clients}", results[clients])
        return results
    finally:
        pool.close()


def bench_daemons(url: str, work: Path, seconds: float) -> dict[str, float]:
    """Steps/s over HTTP, 16 clients: one daemon on PostgreSQL, then two sharing it."""
    rates: dict[str, float] = {}
    for label, count in (("postgres x1", 1), ("postgres x2", 2)):
        config_dir = work / label.replace(" ", "")
        config_dir.mkdir()
        daemons = [start_daemon(config_dir, f"n{i}", url) for i in range(count)]
        try:
            urls = [u for _, u in daemons]
            pids = [process.pid for process, _ in daemons]
            # a first second not counted (leases taken, connections pooled, caches warm):
            # the --quick figure of two daemons swung from 40 to 250 steps/s without it
            asyncio.run(run_load(urls, pids, 16, 1.0))
            fig = asyncio.run(run_load(urls, pids, 16, max(seconds, 4.0)))
            rates[label] = fig.rate
            print(
                f"http {label} clients=16: {fig.rate:,.0f} steps/s  p50 {fig.p50_ms:.1f} ms  "
                f"p99 {fig.p99_ms:.1f} ms  daemon CPU {fig.cpu_us:,.0f} us/step",
                flush=True,
            )
        finally:
            for process, _ in daemons:
                process.send_signal(signal.SIGTERM)
            for process, _ in daemons:
                process.wait(30)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    seconds = 2.0 if args.quick else 5.0
    plan = Plan(
        seconds=seconds,
        langgraph_seconds=seconds,
        idle_sessions=0,
        activations=0,
        repeats=1 if args.quick else 3,
    )
    bindir = find_pg_bin()
    if bindir is None:
        raise SystemExit("PostgreSQL is not installed (apt-get install postgresql)")
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    server = PostgresServer(bindir)
    try:
        with tempfile.TemporaryDirectory(prefix="actorflow-bench-pg-") as tmp:
            work = Path(tmp)
            (work / "redis").mkdir()
            redis_process, redis_url = start_redis(work / "redis")
            try:
                ours = {
                    "postgres": bench_store("postgres", server.fresh_url("b"), work / "pg", plan),
                    "sqlite": bench_store("sqlite", None, work / "sqlite", plan),
                    "redis": bench_store("redis", redis_url, work / "redis-rt", plan),
                }
            finally:
                redis_process.terminate()
                redis_process.wait(10)
            langgraph = bench_langgraph(server.fresh_url("lg"), plan)
            if langgraph is not None:
                for clients in CLIENTS:
                    ratio = ours["postgres"][clients].rate / max(langgraph[clients].rate, 1e-9)
                    print(f"actorflow/langgraph on PostgreSQL, clients={clients}: {ratio:.1f}x")
            bench_daemons(server.fresh_url("d"), work, seconds)
    finally:
        server.destroy()
    series = {name: [r[c].rate for c in CLIENTS] for name, r in ours.items()}
    if langgraph is not None:
        series["langgraph+PostgresSaver"] = [langgraph[c].rate for c in CLIENTS]
    plot = grouped_bars(
        OUT,
        title="Durable steps/s in process (fsync), 64 echo sessions",
        ylabel="steps/s",
        groups=[f"{c} clients" for c in CLIENTS],
        series=series,
    )
    print(f"plot: {plot}")


if __name__ == "__main__":
    main()
