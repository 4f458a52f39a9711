"""Prometheus metrics for /metrics; every name is prefixed ``actorflow_``.

Request-path figures (steps, step latency, errors by type, steps in flight) are
counted as requests finish. The runtime's own counters (live actors,
activations, passivations, restarts, mailbox depth) are read from the runtime
when the endpoint is scraped, so a scrape shows them as of that moment.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from runtime._views import RuntimeStats
from runtime.events import StreamStats

__all__ = ["CONTENT_TYPE", "DaemonMetrics", "RuntimeSample"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STEP_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class RuntimeSample:
    """The runtime's figures as of one scrape."""

    stats: RuntimeStats
    mailbox_total: int
    mailbox_max: int

    @classmethod
    def of(cls, stats: RuntimeStats) -> RuntimeSample:
        """A sample from ``runtime.stats()`` (computed off the event loop)."""
        return cls(stats, stats.mailbox_total, stats.mailbox_max)


class _RuntimeCollector(Collector):
    """Yields the last ``RuntimeSample`` as metric families."""

    def __init__(self) -> None:
        self.sample: RuntimeSample | None = None

    def collect(self) -> Iterator[Metric]:
        sample = self.sample
        if sample is None:
            return
        stats = sample.stats
        yield _gauge("actorflow_live_actors", "Live session actors.", stats.live)
        yield _counter("actorflow_activations", "Sessions activated.", stats.activations)
        yield _counter("actorflow_passivations", "Sessions passivated.", stats.passivations)
        yield _counter("actorflow_restarts", "Session actors restarted.", stats.restarts)
        yield _counter("actorflow_evictions", "Sessions evicted (max_live).", stats.evictions)
        yield _counter("actorflow_expirations", "Sessions expired (TTL).", stats.expirations)
        yield _gauge(
            "actorflow_hibernated_sessions",
            "Live sessions hibernated (kept as encoded bytes, no actor).",
            stats.hibernated,
        )
        yield _counter("actorflow_hibernations", "Live sessions hibernated.", stats.hibernations)
        yield _counter("actorflow_wakes", "Hibernated sessions woken.", stats.wakes)
        yield _gauge("actorflow_stored_sessions", "Sessions in the store.", stats.stored)
        yield _gauge("actorflow_quarantined_rows", "Undecodable rows kept.", stats.quarantined)
        yield _gauge(
            "actorflow_mailbox_depth", "Messages waiting in all session mailboxes.",
            sample.mailbox_total,
        )  # fmt: skip
        yield _gauge("actorflow_mailbox_depth_max", "Deepest session mailbox.", sample.mailbox_max)
        timers = stats.timers
        if timers is not None:
            yield _counter("actorflow_timers_set", "Durable timers set.", timers.set)
            yield _counter("actorflow_timers_fired", "Durable timers fired.", timers.fired)
            yield _counter(
                "actorflow_timers_late", "Durable timers fired more than 1 s late.", timers.late
            )
            yield _counter(
                "actorflow_timers_cancelled",
                "Durable timers cancelled (by cancel_schedule, or an input before a wake_after).",
                timers.cancelled,
            )
            yield HistogramMetricFamily(
                "actorflow_timer_lateness_seconds",
                "Seconds after its due time each durable timer fired.",
                buckets=[("+Inf" if b == float("inf") else repr(b), n) for b, n in timers.lateness],
                sum_value=timers.lateness_sum,
            )


class _StreamCollector(Collector):
    """The event hub's counters (streams, tails, events, overflows), read at each scrape."""

    def __init__(self, source: Callable[[], StreamStats]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        stats = self.source()
        yield _gauge(
            "actorflow_stream_subscribers", "Event readers attached (streams and tails).",
            stats.subscribers,
        )  # fmt: skip
        yield _counter("actorflow_stream_steps", "Steps streamed.", stats.streams)
        yield _counter("actorflow_stream_tails", "Session tails opened (/events).", stats.tails)
        yield _counter("actorflow_stream_events", "Events handed to readers.", stats.events)
        yield _counter(
            "actorflow_stream_overflows", "Readers dropped for falling behind.", stats.overflows
        )
        yield _counter("actorflow_stream_refused", "Tails refused past a cap (429).", stats.refused)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


class _StepCounts(Collector):
    """Successful steps, their latency histogram and the steps in flight, as plain ints.

    The step path counts here with an int add and a ``bisect`` (a prometheus_client
    ``Counter``/``Histogram``/``Gauge`` takes a lock per call: four per step); the
    figures become metric families only when collected. Written on the event loop
    thread only; a scrape reads a copy of the buckets, so count and +Inf agree.
    """

    def __init__(self) -> None:
        self.count = 0
        self.total_seconds = 0.0
        self.buckets = [0] * (len(STEP_BUCKETS) + 1)  # per bucket, not cumulative; last: +Inf
        self.inflight = 0
        self.created = time.time()  # the counter's _created sample, as prometheus_client's

    def record(self, seconds: float) -> None:
        self.count += 1
        self.total_seconds += seconds
        self.buckets[bisect.bisect_left(STEP_BUCKETS, seconds)] += 1

    def steps(self) -> CounterMetricFamily:
        return CounterMetricFamily(
            "actorflow_steps",
            "Steps that completed successfully.",
            value=self.count,
            created=self.created,
        )

    def duration(self) -> HistogramMetricFamily:
        cumulative = list(itertools.accumulate(self.buckets))
        bounds = [*map(repr, STEP_BUCKETS), "+Inf"]
        return HistogramMetricFamily(
            "actorflow_step_duration_seconds",
            "Seconds a successful step took, as the daemon saw it.",
            buckets=list(zip(bounds, cumulative, strict=True)),
            sum_value=self.total_seconds,
        )

    def collect(self) -> Iterator[Metric]:
        yield self.steps()
        yield self.duration()
        yield _gauge("actorflow_steps_in_flight", "Steps being run right now.", self.inflight)


@dataclass(frozen=True, slots=True)
class _Family:
    """One of ``_StepCounts``' families, collectable alone (the dashboard reads them)."""

    make: Callable[[], Metric]

    def collect(self) -> list[Metric]:
        return [self.make()]


class _InFlight:
    """The steps-in-flight gauge's ``inc``/``dec``/``set`` over ``_StepCounts.inflight``."""

    __slots__ = ("_counts",)

    def __init__(self, counts: _StepCounts) -> None:
        self._counts = counts

    def inc(self) -> None:
        self._counts.inflight += 1

    def dec(self) -> None:
        self._counts.inflight -= 1

    def set(self, value: int) -> None:
        self._counts.inflight = value


class DaemonMetrics:
    """The daemon's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._steps = _StepCounts()
        self.registry.register(self._steps)
        self.steps = _Family(self._steps.steps)
        self.step_duration = _Family(self._steps.duration)
        self.inflight = _InFlight(self._steps)
        self.errors = Counter(
            "actorflow_errors",
            "Error responses, by problem type.",
            ["type"],
            registry=self.registry,
        )
        self.stream_disconnects = Counter(
            "actorflow_stream_disconnects",
            "Event streams whose client left before the end (the step went on).",
            registry=self.registry,
        )
        self.forwarded = Counter(
            "actorflow_forwarded",
            "Requests sent on to the daemon holding their session's lease (a cluster).",
            registry=self.registry,
        )
        self._runtime = _RuntimeCollector()
        self.registry.register(self._runtime)

    def watch_streams(self, source: Callable[[], StreamStats]) -> None:
        """Report the event hub's counters, read from ``source`` at each scrape."""
        self.registry.register(_StreamCollector(source))

    def record_step(self, seconds: float) -> None:
        """Count one successful step that took ``seconds``."""
        self._steps.record(seconds)

    def record_error(self, slug: str) -> None:
        """Count one error response of problem type ``slug``."""
        self.errors.labels(slug).inc()

    def render(self, sample: RuntimeSample | None) -> bytes:
        """The exposition text, with the runtime's figures from ``sample``."""
        self._runtime.sample = sample
        return generate_latest(self.registry)
