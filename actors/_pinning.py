"""Pinning a session to its graph version when it is read for activation.

Runs on the thread that read the snapshot (the loader pool, or a sync caller's
own thread), never on the supervisor: a migration is user code and its new
revision is a store write, and the supervisor waits on neither.
"""

from __future__ import annotations

from actors._services import ActorServices
from flow._errors import GraphVersionUnavailable, RevisionConflict
from flow._session import Session
from flow._versions import GraphRegistry, upgrade

__all__ = ["pin_version", "unserved"]


def pin_version(services: ActorServices, session: Session) -> Session:
    """``session`` if its version is served, else migrated and committed as a new revision.

    Raises:
        GraphVersionUnavailable: no served version and no migration (nothing written).
        MigrationFailed: a migration failed (nothing written).
        StoreUnavailable: the migrated revision could not be committed.
    """
    _, migrated = upgrade(services.graphs, session)
    if migrated is None:
        return session
    try:
        services.store.save(migrated, expected_revision=session.revision).result()
    except RevisionConflict:
        # Another reader of the same snapshot (a caller's preload and the loader)
        # migrated it first: use what it committed.
        fresh = services.store.load(session.session_id)
        if fresh is None or services.graphs.find(fresh.graph_id, fresh.graph_version) is None:
            raise
        return fresh
    services.log.info(
        "session_migrated",
        session_id=session.session_id,
        graph=session.graph_id,
        from_version=session.graph_version,
        to_version=migrated.graph_version,
        revision=migrated.revision,
    )
    return migrated


def unserved(registry: GraphRegistry, session: Session) -> GraphVersionUnavailable:
    """The error for a session whose version is not served (nor migrated yet)."""
    return GraphVersionUnavailable(
        session.session_id,
        session.graph_id,
        session.graph_version,
        registry.versions(session.graph_id),
    )
