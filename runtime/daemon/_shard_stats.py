"""Merging the workers' ``stats`` and ``versions`` admin answers into one daemon's.

Counters and counts add up; a ``*_max`` figure is the largest worker's; the
timers' lateness histogram (``[[upper bound, count], ...]``, the same bounds on
every worker) adds up bucket by bucket.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["merge_stats", "merge_versions"]


def _merge(values: Sequence[Any], key: str) -> Any:
    present = [v for v in values if v is not None]
    if not present:
        return None
    first = present[0]
    if isinstance(first, bool | str):
        return first
    if isinstance(first, int | float):
        numbers = [v for v in present if isinstance(v, int | float)]
        return max(numbers) if key.endswith("_max") else sum(numbers)
    if isinstance(first, dict):
        return {name: _merge([v.get(name) for v in present], name) for name in first}
    if isinstance(first, list) and all(isinstance(row, list) and len(row) == 2 for row in first):
        return [
            [bound, sum(v[i][1] for v in present if i < len(v))]
            for i, (bound, _) in enumerate(first)
        ]
    return first


def merge_stats(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One ``stats`` answer from every worker's (``RuntimeStats`` as JSON)."""
    merged = _merge(results, "")
    assert isinstance(merged, dict)  # a stats answer is an object
    return merged


def merge_versions(tables: Sequence[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One ``versions`` table from every worker's: per graph and version, live and
    stored sessions summed (every worker serves the same graphs)."""
    graphs: dict[str, dict[str, Any]] = {}
    for table in tables:
        for row in table:
            graph = graphs.setdefault(row["id"], {**row, "versions": []})
            versions = {v["version"]: v for v in graph["versions"]}
            for version in row["versions"]:
                seen = versions.get(version["version"])
                if seen is None:
                    graph["versions"].append(dict(version))
                    continue
                seen["served"] = seen["served"] or version["served"]
                seen["default"] = seen["default"] or version["default"]
                seen["live"] += version["live"]
                if version["stored"] is not None:
                    seen["stored"] = (seen["stored"] or 0) + version["stored"]
    return list(graphs.values())
