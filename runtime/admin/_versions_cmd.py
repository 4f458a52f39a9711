"""``actorflow sessions versions`` and ``sessions migrate``: on a live daemon or offline.

When a daemon answers on the data directory's admin socket, the command runs as
its ``versions`` / ``migrate`` op (each session is migrated through its own
actor). Otherwise it opens the store itself, with the graphs and migrations
named by ``--graphs`` / ``--migrations`` (the daemon's flags): every shard's
store on a data directory of ``--workers N``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flow._versions import GraphRegistry
from runtime._bulk_migrate import migrate_offline
from runtime._version_counts import stored_version_counts, version_table
from runtime.admin._client import AdminClient, DaemonUnavailable
from runtime.admin._offline_shards import open_offline_shards

__all__ = ["sessions_migrate", "sessions_versions"]


def _registry(graph_refs: Sequence[str], migration_refs: Sequence[str]) -> GraphRegistry:
    # Imported here: the daemon package imports the admin socket at its top.
    from runtime.daemon._graphs import load_graphs, load_migrations

    return GraphRegistry(load_graphs(graph_refs), load_migrations(migration_refs))


def _live(socket: Path, op: str, **args: Any) -> Any:
    """The op's result from a daemon on ``socket``, or None when none answers."""
    try:
        with AdminClient(socket) as client:
            return client.call(op, **args)
    except DaemonUnavailable:
        return None


def sessions_versions(
    socket: Path,
    data_dir: Path,
    store_url: str | None,
    graph_refs: Sequence[str],
    migration_refs: Sequence[str],
) -> dict[str, Any]:
    """Sessions per graph version (served, default, live and stored counts)."""
    result = _live(socket, "versions")
    if result is not None:
        return dict(result)
    registry = _registry(graph_refs, migration_refs)
    shards = open_offline_shards(data_dir, store_url)
    try:
        counts = sum((stored_version_counts(store) for store in shards.stores), Counter())
        return {"graphs": version_table(registry, [], counts)}
    finally:
        shards.close()


def sessions_migrate(
    socket: Path,
    data_dir: Path,
    store_url: str | None,
    graph_refs: Sequence[str],
    migration_refs: Sequence[str],
    *,
    graph: str,
    to: str,
    dry_run: bool,
) -> dict[str, Any]:
    """Move every stored session of ``graph`` to version ``to``; what moved, what could not."""
    result = _live(socket, "migrate", graph=graph, to=to, dry_run=int(dry_run))
    if result is not None:
        return dict(result)
    registry = _registry(graph_refs, migration_refs)
    shards = open_offline_shards(data_dir, store_url)
    try:
        reports = [migrate_offline(store, registry, graph, to, dry_run) for store in shards.stores]
    finally:
        shards.close()
    merged = reports[0]
    for report in reports[1:]:
        merged["moved"] += report["moved"]
        merged["failed"] += report["failed"]
    return merged
