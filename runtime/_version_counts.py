"""How many sessions each graph version has: served versions, live and stored counts.

The stored counts read every snapshot (the store's index does not hold the
version), so they cost one scan of the store: ``GET /v1/graphs`` caches them, and
``actorflow sessions versions`` is an operator's command.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from flow._errors import ActorflowError
from flow._versions import GraphRegistry
from flow.stores._protocol import SessionStore
from runtime._views import LiveSessionInfo

__all__ = ["stored_version_counts", "version_table"]

#: Sessions read per store page while counting.
PAGE = 500


def stored_version_counts(store: SessionStore) -> Counter[tuple[str, str]]:
    """Stored sessions per (graph id, version); blocking (one read per session).

    A cluster's fenced store is read underneath its leases: counting takes none.
    """
    reader: SessionStore = getattr(store, "inner", store)
    counts: Counter[tuple[str, str]] = Counter()
    cursor: str | None = None
    while True:
        page = reader.list(None, cursor, PAGE)
        for item in page.items:
            try:
                session = reader.load(item.session_id)
            except ActorflowError:
                continue  # quarantined or unreadable: `actorflow sessions` reports those
            if session is not None:
                counts[(session.graph_id, session.graph_version)] += 1
        if page.next_cursor is None:
            return counts
        cursor = page.next_cursor


def version_table(
    registry: GraphRegistry,
    live: Iterable[LiveSessionInfo],
    stored: Counter[tuple[str, str]] | None,
) -> list[dict[str, Any]]:
    """One row per graph id: its default version and every version served or stored.

    A version that is stored but not served is listed with ``served: false`` (its
    sessions need that version back, or a migration).
    """
    live_counts = Counter((info.graph, info.graph_version) for info in live)
    ids = list(dict.fromkeys([*registry.ids(), *(g for g, _ in (stored or {}))]))
    rows = []
    for graph_id in ids:
        served = registry.versions(graph_id)
        extra = sorted(v for g, v in (stored or {}) if g == graph_id and v not in served)
        rows.append(
            {
                "id": graph_id,
                "default_version": registry.default_version(graph_id),
                "versions": [
                    {
                        "version": version,
                        "served": version in served,
                        "default": version == registry.default_version(graph_id),
                        "live": live_counts[(graph_id, version)],
                        "stored": None if stored is None else stored[(graph_id, version)],
                    }
                    for version in [*served, *extra]
                ],
            }
        )
    return rows
