"""The fan-out's pure parts: the per-worker cursor, the k-way page merge, /metrics and
``stats`` merging (runtime/daemon/_shard_cursor.py, _shard_metrics.py, _shard_stats.py)."""

from __future__ import annotations

import bisect

import pytest
from prometheus_client.parser import text_string_to_metric_families

from runtime.daemon._metrics import DaemonMetrics
from runtime.daemon._shard_cursor import (
    BadCursor,
    Position,
    ShardPage,
    decode_cursor,
    encode_cursor,
    merge_pages,
)
from runtime.daemon._shard_metrics import merge_metrics
from runtime.daemon._shard_stats import merge_stats, merge_versions


def test_a_cursor_round_trips_and_anything_else_is_refused() -> None:
    positions: list[Position] = [None, "0b7e-id", True]
    assert decode_cursor(encode_cursor(positions), 3) == positions
    assert decode_cursor(None, 2) == [None, None]
    for bad in ("!!", "e30", encode_cursor(["a"]), encode_cursor([True, True])):
        with pytest.raises(BadCursor):
            decode_cursor(bad, 2)
    with pytest.raises(BadCursor, match="2 workers"):
        decode_cursor(encode_cursor([None, None, None]), 2)
    with pytest.raises(BadCursor):
        decode_cursor(encode_cursor([False, None]), 2)
    with pytest.raises(BadCursor):
        decode_cursor(encode_cursor(["x" * 600, None]), 2)


def test_paging_merges_the_shards_in_order_asking_each_for_one_page() -> None:
    shards = [[f"{c}0" for c in "abcdefgh"], [f"{c}1" for c in "bdfhjl"], ["a2", "b2"]]
    asked = [0, 0, 0]

    def page_of(shard: int, after: Position, limit: int) -> ShardPage | None:
        if after is True:
            return None  # done: not asked again
        asked[shard] += 1
        rows = shards[shard]
        start = 0 if after is None else bisect.bisect_right(rows, after)
        return ShardPage(rows[start : start + limit], start + limit < len(rows))

    seen: list[str] = []
    positions = decode_cursor(None, 3)
    pages = 0
    while True:
        answered = [page_of(k, p, 4) for k, p in enumerate(positions)]
        items, after = merge_pages(answered, positions, 4, key=str)
        assert len(items) <= 4
        seen += items
        pages += 1
        if after is None:
            break
        positions = decode_cursor(encode_cursor(after), 3)
    assert seen == sorted(row for rows in shards for row in rows)
    assert all(n <= pages for n in asked)  # never more than one page per shard per page
    assert asked[2] < pages  # the shard with fewest rows was done early and left alone


def _worker_metrics(steps: int, live: int) -> str:
    metrics = DaemonMetrics()
    for n in range(steps):
        metrics.record_step(0.001 * (n + 1))
    metrics.record_error("session-not-found")
    metrics.inflight.set(live)
    return metrics.render(None).decode()


def test_metrics_counters_sum_histograms_stay_valid_and_gauges_get_a_worker_label() -> None:
    merged = {
        family.name: family
        for family in text_string_to_metric_families(
            merge_metrics([_worker_metrics(3, 1), _worker_metrics(4, 2)]).decode()
        )
    }
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in merged.values()
        for s in family.samples
    }
    assert samples[("actorflow_steps_total", ())] == 7
    assert samples[("actorflow_errors_total", (("type", "session-not-found"),))] == 2
    assert samples[("actorflow_step_duration_seconds_count", ())] == 7
    assert samples[("actorflow_step_duration_seconds_sum", ())] == pytest.approx(0.016)
    buckets = [
        s.value for s in merged["actorflow_step_duration_seconds"].samples if "le" in s.labels
    ]
    assert buckets == sorted(buckets)
    assert buckets[-1] == 7
    assert samples[("actorflow_steps_in_flight", (("worker", "0"),))] == 1
    assert samples[("actorflow_steps_in_flight", (("worker", "1"),))] == 2
    assert ("actorflow_steps_created", ()) in samples  # the earliest start, not one per worker


def test_metrics_of_different_types_under_one_name_are_refused() -> None:
    counter = "# TYPE x counter\nx_total 1\n"
    gauge = "# TYPE x gauge\nx 1\n"
    with pytest.raises(ValueError, match="worker 1"):
        merge_metrics([counter, gauge])


def test_stats_add_up_keep_the_largest_maximum_and_sum_the_lateness_buckets() -> None:
    def stats(steps: int, biggest: int, late: list[int]) -> dict[str, object]:
        bounds: list[object] = [0.1, 1.0, "Infinity"]
        return {
            "live": 1,
            "steps": steps,
            "mailbox_max": biggest,
            "timers": {"fired": 2, "lateness": [[b, n] for b, n in zip(bounds, late, strict=True)]},
        }

    merged = merge_stats([stats(3, 7, [1, 2, 2]), stats(4, 5, [0, 1, 1])])
    assert merged["live"] == 2
    assert merged["steps"] == 7
    assert merged["mailbox_max"] == 7
    assert merged["timers"] == {"fired": 4, "lateness": [[0.1, 1], [1.0, 3], ["Infinity", 3]]}
    assert merge_stats([{"timers": None, "steps": 1}, {"timers": None, "steps": 1}]) == {
        "timers": None,
        "steps": 2,
    }


def test_versions_sum_live_and_stored_per_graph_version() -> None:
    def row(live: int, stored: int) -> dict[str, object]:
        version = {"version": "v1", "served": True, "default": True, "live": live}
        return {"id": "echo", "default_version": "v1", "versions": [{**version, "stored": stored}]}

    merged = merge_versions([[row(1, 5)], [row(2, 3)]])
    assert merged == [
        {
            "id": "echo",
            "default_version": "v1",
            "versions": [
                {"version": "v1", "served": True, "default": True, "live": 3, "stored": 8}
            ],
        }
    ]
