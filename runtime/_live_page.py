"""One sorted, filtered page of the live session actors, without building them all.

``live_page`` is a pure function over the live index's entries (a list copied
under the index lock): it filters, orders the entries with two stable sorts on
plain attributes (the session id, then the chosen figure: C-level comparisons,
no key tuple per entry; ~20-40 ms of CPU for 100,000, whatever the page) and
builds a ``LiveSessionInfo`` only for the page's rows. The dashboard's
live-actors table reads it (``Runtime.live_page``); the admin socket's ``ls``
builds every row with the same ``live_info``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
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
        versions: the same, per (graph, graph version).
    """

    total: int
    items: list[LiveSessionInfo]
    offset: int
    graphs: dict[str, int]
    versions: dict[tuple[str, str], int]


def live_info(entry: LiveEntry, now: float) -> LiveSessionInfo:
    """The ``LiveSessionInfo`` of one live index entry at clock time ``now``."""
    return LiveSessionInfo(
        session_id=entry.session_id,
        graph=entry.graph_id,
        owner=entry.owner,
        state="running" if entry.pending > 0 else "hibernated" if entry.frozen else "idle",
        status=entry.status,
        current_task=entry.current_step_task or entry.current_task,
        mailbox_depth=max(entry.pending, 0),
        idle_seconds=max(0.0, now - entry.last_used),
        request_count=entry.request_count,
        snapshot_bytes=len(entry.frozen) if entry.frozen else entry.snapshot_bytes,
        revision=entry.revision,
        graph_version=entry.graph_version,
        reason=entry.reason,
    )


# The entry attribute each sort orders by, and whether it runs opposite to the figure
# shown (idle time grows as ``last_used`` shrinks).
_ORDER: dict[str, tuple[str, bool]] = {
    "mailbox_depth": ("pending", False),
    "idle_seconds": ("last_used", True),
    "snapshot_bytes": ("snapshot_bytes", False),
    "request_count": ("request_count", False),
    "session_id": ("session_id", False),
}


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
    versions = Counter((e.graph_id, e.graph_version) for e in mine)
    graphs: Counter[str] = Counter()
    for (graph_id, _), count in versions.items():
        graphs[graph_id] += count
    chosen = [
        e
        for e in mine
        if (graph is None or e.graph_id == graph)
        and (status is None or status in (e.status, "running" if e.pending > 0 else "idle"))
    ]
    # Ties keep the session-id order of the first sort, so pages of one order never
    # overlap nor skip a row while nothing changes.
    attr, opposite = _ORDER[sort]
    chosen.sort(key=attrgetter("session_id"), reverse=descending)
    chosen.sort(key=attrgetter(attr), reverse=descending != opposite)
    page = chosen[offset : offset + limit]
    return LivePage(
        len(chosen), [live_info(e, now) for e in page], offset, dict(graphs), dict(versions)
    )
