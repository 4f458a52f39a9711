"""Moving every stored session of a graph to one version: ``actorflow sessions migrate``.

Offline (on a data directory no daemon serves) each session is migrated and saved
with compare-and-set; on a live daemon each one goes through its actor's mailbox
(``migrate_session``), so a running step is never raced. ``dry_run`` runs the
migrations on copies and saves nothing. The report lists what moved and what
could not, with the reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, Protocol

from flow._errors import ActorflowError
from flow._session import Session
from flow._step import StepResult
from flow._versions import GraphRegistry, upgrade_to
from flow.stores._protocol import SessionStore

__all__ = ["LiveTarget", "candidates", "migrate_live", "migrate_offline"]

PAGE = 500


class LiveTarget(Protocol):
    """What a live migration needs of a runtime (``AsyncRuntime`` provides it)."""

    @property
    def store(self) -> SessionStore:
        """The session store."""
        ...

    @property
    def registry(self) -> GraphRegistry:
        """The graphs and migrations served."""
        ...

    async def migrate_session(
        self, session_id: str, version: str, *, by: str = "admin"
    ) -> StepResult:
        """Move one session to ``version`` through its actor."""
        ...


def candidates(store: SessionStore, graph_id: str, version: str) -> Iterator[Session]:
    """Stored sessions of ``graph_id`` not on ``version`` (read page by page, no leases)."""
    reader: SessionStore = getattr(store, "inner", store)
    cursor: str | None = None
    while True:
        page = reader.list(None, cursor, PAGE)
        for item in page.items:
            if item.graph_id != graph_id:
                continue
            try:
                session = reader.load(item.session_id)
            except ActorflowError:
                continue
            if session is not None and session.graph_version != version:
                yield session
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def _pinned_ids(store: SessionStore, graph_id: str, version: str) -> list[tuple[str, str]]:
    return [(s.session_id, s.graph_version) for s in candidates(store, graph_id, version)]


def _report(graph_id: str, version: str, dry_run: bool) -> dict[str, Any]:
    return {"graph": graph_id, "to": version, "dry_run": dry_run, "moved": [], "failed": []}


def _entry(session: Session, error: BaseException | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"session_id": session.session_id, "from": session.graph_version}
    if error is not None:
        row["error"] = f"{type(error).__name__}: {error}"
    return row


def migrate_offline(
    store: SessionStore, registry: GraphRegistry, graph_id: str, version: str, dry_run: bool
) -> dict[str, Any]:
    """Migrate (or with ``dry_run`` try) every stored session of ``graph_id`` to ``version``.

    Raises:
        GraphNotFound: ``version`` of ``graph_id`` is not in ``registry``.
    """
    registry.get(graph_id, version)
    report = _report(graph_id, version, dry_run)
    for session in candidates(store, graph_id, version):
        try:
            _, migrated = upgrade_to(registry, session, version)
            if migrated is not None and not dry_run:
                store.save(migrated, expected_revision=session.revision).result()
        except ActorflowError as exc:
            report["failed"].append(_entry(session, exc))
        else:
            report["moved"].append(_entry(session))
    return report


async def migrate_live(
    runtime: LiveTarget, graph_id: str, version: str, dry_run: bool
) -> dict[str, Any]:
    """``migrate_offline`` on a running runtime: each session through its own actor."""
    registry = runtime.registry
    registry.get(graph_id, version)
    if dry_run:
        return await asyncio.to_thread(
            migrate_offline, runtime.store, registry, graph_id, version, True
        )
    found = await asyncio.to_thread(
        lambda: [
            (s.session_id, s.graph_version) for s in candidates(runtime.store, graph_id, version)
        ]
    )
    report = _report(graph_id, version, dry_run)
    for session_id, old in found:
        row: dict[str, Any] = {"session_id": session_id, "from": old}
        try:
            await runtime.migrate_session(session_id, version, by="admin")
        except ActorflowError as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
            report["failed"].append(row)
        else:
            report["moved"].append(row)
    return report
