"""Actor-type benchmark: pykka's ThreadingActor against actorflow's DispatcherActor.

Usage: ``.venv-dev/bin/python bench/actor_types.py [--quick]``.

Each actor type is measured in its own subprocess (RSS never shrinks back, and
20,000 threads would disturb the other measurement). Prints one line per
figure and writes ``bench/out/actors.png``:

- RSS per live idle actor (VmRSS delta from /proc/self/status / actors);
- actor starts/s;
- hot ask round trips/s to ONE actor, with no other actor alive and with many
  live idle actors beside it (20,000 thread actors; 100,000 dispatcher actors).

Targets from issue 4: ~2.9 KiB per dispatcher actor, >= 27,000 starts/s, and an
unchanged ~27,000 asks/s with 100,000 live.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.dispatcher import Dispatcher, DispatcherActor  # noqa: E402 (needs the repo on sys.path)

OUT = ROOT / "bench" / "out" / "actors.png"
KINDS = ("threading", "dispatcher")


@dataclass(frozen=True, slots=True)
class Plan:
    """How many actors and asks each measurement uses."""

    rss_actors: int  # actors started for the RSS and start-rate figures
    live_threading: int  # idle thread actors beside the hot one
    live_dispatcher: int  # idle dispatcher actors beside the hot one
    asks: int  # asks per round
    rounds: int  # rounds per ask figure (the median is reported)


FULL = Plan(
    rss_actors=20_000, live_threading=20_000, live_dispatcher=100_000, asks=10_000, rounds=7
)
QUICK = Plan(rss_actors=5_000, live_threading=5_000, live_dispatcher=20_000, asks=3_000, rounds=3)


class ThreadEchoActor(pykka.ThreadingActor):
    """Answers every message with itself, on its own (daemon) thread."""

    use_daemon_thread = True  # the subprocess exits without stopping 20,000 threads

    def on_receive(self, message: Any) -> Any:
        return message


class DispatchedEchoActor(DispatcherActor):
    """Answers every message with itself, on the shared dispatcher."""

    def on_receive(self, message: Any) -> Any:
        return message


def vm_rss_bytes() -> int:
    """This process's resident set size, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line in /proc/self/status (Linux only)")


def asks_per_second(ref: pykka.ActorRef[Any], asks: int, rounds: int) -> tuple[float, float]:
    """The median and the best rate of blocking ask round trips to ``ref`` over ``rounds``.

    The machine is shared: the best round is the closest to an idle machine,
    the median says what a loaded one gives.
    """
    for i in range(asks // 10):
        ref.ask(i)
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(asks):
            ref.ask(i)
        rates.append(asks / (time.perf_counter() - start))
    return statistics.median(rates), max(rates)


def start_many(start: Any, count: int) -> tuple[list[pykka.ActorRef[Any]], float, float]:
    """Start ``count`` actors with ``start()``; return them, starts/s and RSS bytes per actor.

    Each actor answers one ask before the clock stops, so that a start counts
    only once the actor runs.
    """
    gc.collect()
    rss_before = vm_rss_bytes()
    begin = time.perf_counter()
    refs = [start() for _ in range(count)]
    pykka.get_all([ref.ask(None, block=False) for ref in refs])
    elapsed = time.perf_counter() - begin
    gc.collect()
    return refs, count / elapsed, (vm_rss_bytes() - rss_before) / count


def measure(kind: str, plan: Plan) -> dict[str, float]:
    """All figures for one actor type, in this process."""
    dispatcher = Dispatcher() if kind == "dispatcher" else None
    if dispatcher is not None:

        def start() -> pykka.ActorRef[Any]:
            return dispatcher.spawn(DispatchedEchoActor)

        live = plan.live_dispatcher
    else:
        start = ThreadEchoActor.start
        live = plan.live_threading
    hot = start()
    figures: dict[str, float] = {}
    figures["asks_alone"], figures["asks_alone_best"] = asks_per_second(hot, plan.asks, plan.rounds)
    refs, figures["starts_per_s"], figures["rss_per_actor"] = start_many(start, plan.rss_actors)
    if live > plan.rss_actors:
        more, _, _ = start_many(start, live - plan.rss_actors)
        refs += more
    figures["live"] = len(refs)
    figures["asks_with_live"], figures["asks_with_live_best"] = asks_per_second(
        hot, plan.asks, plan.rounds
    )
    return figures


def run_child(kind: str, quick: bool) -> dict[str, float]:
    """Measure one actor type in a fresh subprocess and return its figures."""
    args = [sys.executable, __file__, "--child", kind] + (["--quick"] if quick else [])
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the {kind} measurement failed:\n{done.stderr}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def plot(results: dict[str, dict[str, float]], path: Path) -> None:
    """Three bar charts: RSS per actor, starts/s, asks/s alone and with live actors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rss, starts, asks) = plt.subplots(1, 3, figsize=(13, 4.2))
    colors = {"threading": "#c44e52", "dispatcher": "#4c72b0"}
    rss.bar(KINDS, [results[k]["rss_per_actor"] / 1024 for k in KINDS], color=colors.values())
    rss.set_title("RSS per live idle actor (KiB)")
    starts.bar(KINDS, [results[k]["starts_per_s"] for k in KINDS], color=colors.values())
    starts.set_title("actor starts/s")
    width = 0.38
    for offset, kind in ((-width / 2, "threading"), (width / 2, "dispatcher")):
        asks.bar(
            [0 + offset, 1 + offset],
            [results[kind]["asks_alone"], results[kind]["asks_with_live"]],
            width,
            label=f"{kind} ({int(results[kind]['live']):,} live)",
            color=colors[kind],
        )
    asks.set_xticks([0, 1], ["alone", "with live idle actors"])
    asks.set_title("hot ask round trips/s to one actor (median)")
    asks.legend(fontsize=8)
    fig.suptitle("pykka ThreadingActor vs actorflow DispatcherActor (2-core machine)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    """Run both measurements in subprocesses, print the figures and write the plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer actors and asks")
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    options = parser.parse_args()
    plan = QUICK if options.quick else FULL
    if options.child:
        print(json.dumps(measure(options.child, plan)), flush=True)
        return

    results = {kind: run_child(kind, options.quick) for kind in KINDS}
    for kind in KINDS:
        r = results[kind]
        print(f"{kind}: rss per live actor {r['rss_per_actor'] / 1024:.1f} KiB")
        print(f"{kind}: starts/s {r['starts_per_s']:,.0f}")
        print(
            f"{kind}: hot asks/s alone {r['asks_alone']:,.0f} "
            f"(median of rounds; best {r['asks_alone_best']:,.0f})"
        )
        print(
            f"{kind}: hot asks/s with {int(r['live']):,} live {r['asks_with_live']:,.0f} "
            f"(median of rounds; best {r['asks_with_live_best']:,.0f})"
        )
    plot(results, OUT)
    print(f"plot: {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
