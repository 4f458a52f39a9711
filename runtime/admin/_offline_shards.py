"""The offline ``actorflow sessions ...`` commands on a data directory of ``--workers N``.

A sharded data directory (``DATA_DIR/workers`` records N) keeps shard K's
sessions in ``DATA_DIR/shard-K/sessions.db``. ``OfflineShards`` opens every
shard's file: a full session id is looked up in its shard by the daemon's own
hash (runtime/_shard_map.py), an id prefix in every shard, ``ls`` merges the
shards' pages by id (every store lists by id and takes the last id seen as its
cursor, so one plain id pages through all shards), and the counts add up. A
single daemon's directory, or ``--store URL``, is one "shard" and behaves as
before. Runs on the command's own thread.
"""

from __future__ import annotations

import builtins
import heapq
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flow._session import claim_session_ids
from flow.stores import SessionStore
from flow.stores._protocol import QuarantinedRow, SessionPage
from runtime._shard_map import recorded_workers, shard_dir, shard_of
from runtime.admin._offline import (
    FULL_ID_LENGTH,
    MAX_CANDIDATES_SHOWN,
    open_offline_store,
    resolve_stored_id,
)
from runtime.admin._protocol import AdminError

__all__ = ["OfflineShards", "open_offline_shards"]


class OfflineShards:
    """Every shard's store of one data directory (one store when it is not sharded)."""

    def __init__(self, stores: list[SessionStore]) -> None:
        self.stores = stores

    @property
    def sharded(self) -> bool:
        return len(self.stores) > 1

    def shard_for(self, session_id: str) -> int:
        """The shard holding the full id ``session_id``."""
        return shard_of(session_id, len(self.stores)) if self.sharded else 0

    def resolve(self, prefix: str) -> tuple[str, int]:
        """The one stored id starting with ``prefix``, and its shard.

        Raises:
            AdminError: ``SessionNotFound`` or ``AmbiguousId`` (across every shard).
        """
        if not self.sharded:
            return resolve_stored_id(self.stores[0], prefix), 0
        if len(prefix) >= FULL_ID_LENGTH:
            return prefix, self.shard_for(prefix)
        found: builtins.list[tuple[str, int]] = []
        for shard, store in enumerate(self.stores):
            try:
                found.append((resolve_stored_id(store, prefix), shard))
            except AdminError as exc:
                if exc.type != "SessionNotFound":
                    raise
        if not found:
            raise AdminError("SessionNotFound", f"no stored session id starts with {prefix!r}")
        if len(found) > 1:
            shown = ", ".join(session_id for session_id, _ in found[:MAX_CANDIDATES_SHOWN])
            raise AdminError(
                "AmbiguousId", f"id prefix {prefix!r} matches several sessions: {shown}"
            )
        return found[0]

    def list(self, owner: str | None, cursor: str | None, limit: int) -> SessionPage:
        """One page of every shard's sessions in id order (``cursor``: the last id seen)."""
        pages = [store.list(owner, cursor, limit) for store in self.stores]
        merged = list(heapq.merge(*(p.items for p in pages), key=lambda item: item.session_id))
        more = len(merged) > limit or any(p.next_cursor is not None for p in pages)
        items = merged[:limit]
        return SessionPage(items, items[-1].session_id if more and items else None)

    def count(self) -> int:
        return sum(store.count() for store in self.stores)

    def quarantined(self, limit: int) -> builtins.list[QuarantinedRow]:
        rows = [row for store in self.stores for row in store.quarantined(limit)]
        return sorted(rows, key=lambda row: row.quarantined_at, reverse=True)[:limit]

    @contextmanager
    def new_ids_in(self, shard: int) -> Iterator[None]:
        """Sessions created meanwhile (a fork) get ids of ``shard``, so they stay findable."""
        if self.sharded:
            n = len(self.stores)
            claim_session_ids(lambda session_id: shard_of(session_id, n) == shard)
        try:
            yield
        finally:
            claim_session_ids(None)

    def close(self) -> None:
        for store in self.stores:
            store.close()


def open_offline_shards(data_dir: Path, store_url: str | None) -> OfflineShards:
    """Every shard's store under ``data_dir`` (``--store URL``: that one store).

    Raises:
        AdminError: ``StoreNotFound`` for a missing file, ``BadArgument`` for an
            unreadable ``DATA_DIR/workers``.
    """
    if store_url is not None:
        return OfflineShards([open_offline_store(data_dir, store_url)])
    try:
        n = recorded_workers(data_dir)
    except ValueError as exc:
        raise AdminError("BadArgument", str(exc)) from None
    if n is None:
        return OfflineShards([open_offline_store(data_dir, None)])
    stores: list[SessionStore] = []
    try:
        for shard in range(n):
            stores.append(open_offline_store(shard_dir(data_dir, shard), None))
    except AdminError as exc:
        for store in stores:
            store.close()
        raise AdminError(
            exc.type,
            f"{data_dir} holds the sessions of actorflowd --workers {n}, one store per worker, "
            f"and worker {len(stores)}'s is missing: {exc} (pass --data-dir "
            f"{shard_dir(data_dir, 0).with_name('shard-K')} to read one worker's store)",
        ) from None
    return OfflineShards(stores)
