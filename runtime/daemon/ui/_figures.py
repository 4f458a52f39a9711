"""The overview's figures: the daemon's own metrics sampled once a second, kept five minutes.

A ``Sample`` holds cumulative counters (steps, errors, the step-latency
histogram's buckets, the runtime's activations and passivations, the store's
transactions and saves); rates and percentiles come from the difference of two
samples, the way Prometheus' ``rate`` and ``histogram_quantile`` read the same
metrics. The sampler runs on the event loop, only while someone looked at the
dashboard in the last ``IDLE_STOP`` seconds, and reads the runtime's counters
off the loop (``AsyncRuntime.stats``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import Metric

from runtime import AsyncRuntime
from runtime._views import RuntimeStats
from runtime.daemon._metrics import DaemonMetrics
from runtime.daemon.ui._peers import Peers

__all__ = ["KEPT", "PERIOD", "Figures", "Sample", "Sampler", "figures", "quantile"]

PERIOD = 1.0  # seconds between samples
KEPT = 300  # samples kept: five minutes
WINDOW = 10  # samples the "now" figures are taken over
IDLE_STOP = 600.0  # seconds without a dashboard request before the sampler stops


@dataclass(frozen=True, slots=True)
class Sample:
    """Cumulative figures at monotonic time ``at``."""

    at: float
    steps: float
    errors: float
    buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count)
    stats: RuntimeStats
    transactions: int | None
    saves: int | None


@dataclass(frozen=True, slots=True)
class Figures:
    """What the overview shows: the latest figures and a series per chart.

    Rates are per second over the last ``WINDOW`` samples; ``p50``/``p99`` are step
    latencies in milliseconds over the same window (None: no step in it).
    """

    steps_per_s: float
    errors_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    commits_per_s: float | None
    batch_size: float | None
    stats: RuntimeStats | None
    series: dict[str, list[float]]


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a cumulative histogram (linear within a bucket), or None if empty."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def _rate(new: float, old: float, seconds: float) -> float:
    return max(0.0, new - old) / seconds if seconds > 0 else 0.0


def _window(new: Sample, old: Sample) -> tuple[float, ...]:
    seconds = new.at - old.at
    steps = _rate(new.steps, old.steps, seconds)
    errors = _rate(new.errors, old.errors, seconds)
    diff = [(bound, n - o) for (bound, n), (_, o) in zip(new.buckets, old.buckets, strict=True)]
    p50 = quantile(0.5, diff)
    p99 = quantile(0.99, diff)
    return steps, errors, -1.0 if p50 is None else p50 * 1000, -1.0 if p99 is None else p99 * 1000


def figures(samples: Sequence[Sample]) -> Figures:
    """The overview's figures from the samples kept (oldest first)."""
    if len(samples) < 2:
        stats = samples[-1].stats if samples else None
        return Figures(0.0, 0.0, None, None, None, None, stats, {})
    new, old = samples[-1], samples[max(0, len(samples) - 1 - WINDOW)]
    steps, errors, p50, p99 = _window(new, old)
    commits: float | None = None
    batch: float | None = None
    if new.transactions is not None and old.transactions is not None:
        commits = _rate(new.transactions, old.transactions, new.at - old.at)
        made = new.transactions - old.transactions
        saved = (new.saves or 0) - (old.saves or 0)
        batch = saved / made if made > 0 else None
    series: dict[str, list[float]] = {"steps": [], "errors": [], "p99": [], "live": []}
    for before, after in itertools.pairwise(samples):
        s, e, _, tail = _window(after, before)
        series["steps"].append(s)
        series["errors"].append(e)
        series["p99"].append(max(tail, 0.0))
        series["live"].append(float(after.stats.live))
    return Figures(
        steps_per_s=steps,
        errors_per_s=errors,
        p50_ms=None if p50 < 0 else p50,
        p99_ms=None if p99 < 0 else p99,
        commits_per_s=commits,
        batch_size=batch,
        stats=new.stats,
        series=series,
    )


def _counter_total(collected: Iterable[Metric], suffix: str) -> float:
    total = 0.0
    for family in collected:
        for sample in family.samples:
            if sample.name.endswith(suffix):
                total += sample.value
    return total


def metric_totals(metrics: DaemonMetrics) -> tuple[float, float, tuple[tuple[float, float], ...]]:
    """Steps, error answers and the step-latency buckets counted so far (public collectors)."""
    steps = _counter_total(metrics.steps.collect(), "_total")
    errors = _counter_total(metrics.errors.collect(), "_total")
    buckets = tuple(
        (float(sample.labels["le"]), sample.value)
        for family in metrics.step_duration.collect()
        for sample in family.samples
        if sample.name.endswith("_bucket")
    )
    return steps, errors, buckets


class Sampler:
    """Samples the daemon's metrics every ``PERIOD`` while the dashboard is looked at.

    Args:
        runtime: the runtime whose counters are read.
        metrics: the daemon's request metrics.
        writer_stats: the store's (transactions, saves) so far, when it counts them.
        stopped: whether the daemon is shutting down (the sampler then ends).
        peers: on a worker of ``--workers N``, every worker (runtime/daemon/ui/_peers.py):
            steps, errors, latencies and the runtime's counters are theirs, added up
            (the store's commit figures stay this worker's own).
    """

    def __init__(
        self,
        runtime: AsyncRuntime,
        metrics: DaemonMetrics,
        writer_stats: Callable[[], tuple[int, int] | None],
        stopped: Callable[[], bool],
        peers: Peers | None = None,
    ) -> None:
        self.runtime = runtime
        self.peers = peers
        self.metrics = metrics
        self.samples: deque[Sample] = deque(maxlen=KEPT)
        self._writer_stats = writer_stats
        self._stopped = stopped
        self._task: asyncio.Task[None] | None = None
        self._last_use = 0.0
        self.ticked = asyncio.Condition()

    def touch(self) -> None:
        """Someone looks at the dashboard: make sure the sampler runs (on the event loop)."""
        self._last_use = time.monotonic()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def sample(self) -> None:
        """Take one sample now."""
        if self.peers is not None:  # a worker of --workers N: every worker's figures
            steps, errors, buckets = await self.peers.metric_totals()
            stats = await self.peers.stats()
        else:
            steps, errors, buckets = metric_totals(self.metrics)
            stats = await self.runtime.stats()
        written = self._writer_stats()
        self.samples.append(
            Sample(
                at=time.monotonic(),
                steps=steps,
                errors=errors,
                buckets=buckets,
                stats=stats,
                transactions=None if written is None else written[0],
                saves=None if written is None else written[1],
            )
        )
        async with self.ticked:
            self.ticked.notify_all()

    async def _run(self) -> None:
        try:
            while not self._stopped() and time.monotonic() - self._last_use < IDLE_STOP:
                try:
                    await self.sample()
                except Exception:  # a closed runtime or a store that did not answer: again
                    if self._stopped():
                        return
                await asyncio.sleep(PERIOD)
        finally:
            async with self.ticked:  # wake the streams: they see the drain and end
                self.ticked.notify_all()
