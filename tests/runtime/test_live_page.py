"""``Runtime.live_page``: one sorted, filtered page of the live actors."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from actors._live_index import LiveEntry
from runtime import InvalidInput, Runtime
from runtime._live_page import live_page


def _entry(n: int, *, pending: int = 0, graph: str = "echo", owner: str = "ann") -> LiveEntry:
    return LiveEntry(
        session_id=f"s{n:03d}",
        incarnation=n,
        owner=owner,
        graph_id=graph,
        last_used=float(n),
        status="waiting_for_input",
        current_task="t",
        revision=n,
        request_count=n % 7,
        expires_at=None,
        activated_at=0.0,
        reason="activated by a request",
        graph_version="v1",
        pending=pending,
        snapshot_bytes=1000 - n,
    )


def test_pages_of_one_order_cover_every_match_once_without_overlap() -> None:
    entries = [_entry(n, pending=n % 4) for n in range(95)]
    seen: list[str] = []
    for offset in range(0, 95, 20):
        page = live_page(entries, 100.0, sort="mailbox_depth", offset=offset, limit=20)
        assert page.total == 95
        seen.extend(info.session_id for info in page.items)
    assert sorted(seen) == sorted(e.session_id for e in entries)
    depths = [int(sid[1:]) % 4 for sid in seen]
    assert depths == sorted(depths, reverse=True)


@pytest.mark.parametrize(
    ("sort", "first"),
    [("idle_seconds", "s000"), ("snapshot_bytes", "s000"), ("request_count", "s006")],
)
def test_each_sort_puts_the_largest_first(sort: str, first: str) -> None:
    entries = [_entry(n) for n in range(10)]
    page = live_page(entries, 100.0, sort=sort, limit=1)
    assert page.items[0].session_id == first
    ascending = live_page(entries, 100.0, sort=sort, descending=False, limit=10)
    assert ascending.items[-1].session_id == first


def test_filters_and_the_graph_counts_they_choose_from() -> None:
    entries = [
        *(_entry(n, graph="echo") for n in range(5)),
        *(_entry(n, graph="support", pending=1) for n in range(5, 8)),
        _entry(9, graph="support", owner="bob"),
    ]
    mine = live_page(entries, 100.0, owner="ann", graph="support")
    assert mine.total == 3
    assert mine.graphs == {"echo": 5, "support": 3}
    assert mine.versions == {("echo", "v1"): 5, ("support", "v1"): 3}
    assert {i.owner for i in mine.items} == {"ann"}
    running = live_page(entries, 100.0, status="running")
    assert {i.session_id for i in running.items} == {"s005", "s006", "s007"}
    assert running.items[0].reason == "activated by a request"
    waiting = live_page(entries, 100.0, status="waiting_for_input", limit=1000)
    assert waiting.total == 9


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"sort": "owner"}, "sort must be one of"),
        ({"limit": 0}, "limit must be between 1 and 1000"),
        ({"limit": 1001}, "limit must be between 1 and 1000"),
        ({"offset": -1}, "offset must be >= 0"),
    ],
)
def test_a_bad_query_is_invalid_input(query: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        live_page([], 0.0, **query)  # type: ignore[arg-type]


def test_runtime_live_page_lists_live_sessions(open_runtime: Callable[..., Runtime]) -> None:
    rt = open_runtime()
    ids = [rt.create_session("echo", owner="ann") for _ in range(3)]
    for sid in ids:
        rt.step(sid, "hi")
    page = rt.live_page(sort="session_id", descending=False, owner="ann", limit=2)
    assert page.total == 3
    assert [i.session_id for i in page.items] == sorted(ids)[:2]
    assert page.graphs == {"echo": 3}
    assert sum(page.versions.values()) == 3
    assert {i.graph_version for i in page.items} == {rt.graph("echo").version}
    assert all(i.reason for i in page.items)
