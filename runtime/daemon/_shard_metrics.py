"""One /metrics out of every worker's: counters and histograms summed, gauges labelled.

Each worker counts its own steps, errors and activations; the sum of the
workers' counters is the daemon's counter, and histograms with the same buckets
sum bucket by bucket (``_sum`` and ``_count`` too), so a rate or a quantile over
the merged text means what it meant for one process. A gauge (live actors,
mailbox depth, steps in flight) is a figure of one process: it keeps one sample
per worker, told apart by a ``worker="K"`` label, and ``sum()`` in PromQL adds
them. Parsing and writing are prometheus_client's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

__all__ = ["WORKER_LABEL", "merge_metrics"]

WORKER_LABEL = "worker"
SUMMED_TYPES = frozenset({"counter", "histogram"})
_CREATED = "_created"

Labels = tuple[tuple[str, str], ...]


class _Merged(Collector):
    """Hands the merged families to ``generate_latest``."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def _sum_samples(family: Metric, into: dict[tuple[str, Labels], float]) -> None:
    for sample in family.samples:
        key = (sample.name, tuple(sorted(sample.labels.items())))
        if sample.name.endswith(_CREATED):  # a start time: the earliest worker's
            into[key] = min(into.get(key, sample.value), sample.value)
        else:
            into[key] = into.get(key, 0.0) + sample.value


def _is_start_time(family: Metric, families: dict[str, Metric]) -> bool:
    """Whether ``family`` is the ``_created`` time of a counter or histogram: the text
    format writes it as a gauge of its own, and the merge keeps the earliest."""
    if not family.name.endswith(_CREATED):
        return False
    summed = families.get(family.name.removesuffix(_CREATED))
    return summed is not None and summed.type in SUMMED_TYPES


def merge_metrics(texts: Sequence[str]) -> bytes:
    """The exposition text of the workers' ``texts`` (in worker order) merged.

    Raises:
        ValueError: a text is not Prometheus exposition text.
    """
    families: dict[str, Metric] = {}
    sums: dict[str, dict[tuple[str, Labels], float]] = {}
    for worker, text in enumerate(texts):
        for parsed in text_string_to_metric_families(text):
            family = families.get(parsed.name)
            if family is None:
                family = families[parsed.name] = Metric(
                    parsed.name, parsed.documentation, parsed.type, parsed.unit
                )
            elif family.type != parsed.type:
                raise ValueError(
                    f"metric {parsed.name} is a {family.type} on one worker and a "
                    f"{parsed.type} on worker {worker}"
                )
            if parsed.type in SUMMED_TYPES or _is_start_time(parsed, families):
                _sum_samples(parsed, sums.setdefault(parsed.name, {}))
                continue
            for sample in parsed.samples:
                labels = {**sample.labels, WORKER_LABEL: str(worker)}
                family.add_sample(sample.name, labels, sample.value, sample.timestamp)
    for name, summed in sums.items():
        for (sample_name, label_pairs), value in summed.items():
            families[name].add_sample(sample_name, dict(label_pairs), value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(list(families.values())))
    return generate_latest(registry)
