"""One sorted, filtered page of the live session actors, without building them all.

``live_page`` is a pure function over the live index's entries (a list copied
under the index lock): it filters, picks the ``offset + limit`` first entries
of the chosen order with a heap (O(n log k), not a full sort) and builds a
``LiveSessionInfo`` only for the page's rows. The admin socket's ``ls`` and the
dashboard's live-actors table both read it (``Runtime.live_page``).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from actors._live_index import LiveEntry
from flow._errors import InvalidInput
from runtime._views import LiveSessionInfo

__all__ = ["LIVE_SORTS", "MAX_LIVE_PAGE", "LivePage", "LiveSort", "live_info", "live_page"]

LiveSort = Literal["mailbox_depth", "idle_seconds", "snapshot_bytes", "request_count", "session_id"]
LIVE_SORTS: tuple[str, ...] = get_args(LiveSort)
MAX_LIVE_PAGE = 1000


@dataclass(frozen=True, slots=True)
class LivePage:
    """A page of live actors and what the page was cut from.

    Attributes:
        total: live actors matching the filters.
        items: the page's rows, in the chosen order.
        offset: rows skipped before the page.
        graphs: live actors per graph among those the owner filter lets through
            (before the graph and status filters: what a graph filter can choose from).
    """

    total: int
    items: list[LiveSessionInfo]
    offset: int
    graphs: dict[str, int]


def live_info(entry: LiveEntry, now: float) -> LiveSessionInfo:
    """The ``LiveSessionInfo`` of one live index entry at clock time ``now``."""
    return LiveSessionInfo(
        session_id=entry.session_id,
        graph=entry.graph_id,
        owner=entry.owner,
        state="running" if entry.pending > 0 else "idle",
        status=entry.status,
        current_task=entry.current_step_task or entry.current_task,
        mailbox_depth=max(entry.pending, 0),
        idle_seconds=max(0.0, now - entry.last_used),
        request_count=entry.request_count,
        snapshot_bytes=entry.snapshot_bytes,
        revision=entry.revision,
        reason=entry.reason,
    )


def _key(sort: str) -> Callable[[LiveEntry], tuple[float | str, str]]:
    # Each key grows with the quantity shown; the session id breaks ties, so that
    # pages of one order never overlap nor skip a row while nothing changes.
    if sort == "mailbox_depth":
        return lambda e: (max(e.pending, 0), e.session_id)
    if sort == "idle_seconds":
        return lambda e: (-e.last_used, e.session_id)
    if sort == "snapshot_bytes":
        return lambda e: (e.snapshot_bytes, e.session_id)
    if sort == "request_count":
        return lambda e: (e.request_count, e.session_id)
    return lambda e: (e.session_id, "")


def live_page(
    entries: Sequence[LiveEntry],
    now: float,
    *,
    sort: str = "mailbox_depth",
    descending: bool = True,
    graph: str | None = None,
    owner: str | None = None,
    status: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> LivePage:
    """The ``limit`` live actors after ``offset`` in ``sort`` order, matching the filters.

    ``status`` matches the session's status (``waiting_for_input``...) or the actor's
    state (``running``, ``idle``).

    Raises:
        InvalidInput: an unknown sort, or a bad offset or limit.
    """
    if sort not in LIVE_SORTS:
        raise InvalidInput(f"sort must be one of {', '.join(LIVE_SORTS)}, got {sort!r}")
    if not 1 <= limit <= MAX_LIVE_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIVE_PAGE}, got {limit!r}")
    if offset < 0:
        raise InvalidInput(f"offset must be >= 0, got {offset!r}")
    mine = [e for e in entries if owner is None or e.owner == owner]
    graphs = dict(Counter(e.graph_id for e in mine))
    chosen = [
        e
        for e in mine
        if (graph is None or e.graph_id == graph)
        and (status is None or status in (e.status, "running" if e.pending > 0 else "idle"))
    ]
    pick = heapq.nlargest if descending else heapq.nsmallest
    top = pick(offset + limit, chosen, key=_key(sort))[offset:]
    return LivePage(len(chosen), [live_info(e, now) for e in top], offset, graphs)
