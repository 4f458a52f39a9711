"""Graph versions: the registry of served versions, and migrations between versions.

A session is pinned to the graph version it was created on. A runtime serves
several versions of one graph id at once (``GraphRegistry``); the last one given
is the default for new sessions. When a stored session's version is no longer
served, a chain of ``Migration``s may move it to a served one (``upgrade``); with
neither, it is ``GraphVersionUnavailable`` and the session is left as it was.

The registry is read by any thread and replaced whole on a reload (``swap``):
readers see either the old table or the new one, never a mix.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from flow._context import ROLES, ChatHistory, ChatMessage, Context, Role
from flow._errors import (
    GraphNotFound,
    GraphVersionUnavailable,
    InvalidInput,
    MigrationFailed,
)
from flow._graph import Graph
from flow._session import Session

__all__ = ["GraphRegistry", "Migration", "MigrationState", "upgrade", "upgrade_to"]


@dataclass(slots=True)
class MigrationState:
    """What a migration function gets, changes and returns: one session's data.

    Attributes:
        context: the context's keys and values (a plain dict).
        current_task: the task the session is at.
        back_stack: the tasks a ``NextAction.go_back`` returns to, oldest first.
        chat_history: the chat messages, oldest first, as ``{"role", "content",
            "timestamp"}`` dicts.
    """

    context: dict[str, Any]
    current_task: str
    back_stack: list[str] = field(default_factory=list)
    chat_history: list[dict[str, str]] = field(default_factory=list)


MigrateFn = Callable[[MigrationState], MigrationState]


@dataclass(frozen=True, slots=True)
class Migration:
    """Moves sessions of ``graph`` from ``from_version`` to ``to_version``.

    ``migrate`` gets a ``MigrationState`` and returns it (changed in place or a
    new one): rename keys, map removed tasks to new ones. Migrations chain
    (1 → 2 → 3); a chain is applied all or nothing, as one new revision.
    """

    graph: str
    from_version: str
    to_version: str
    migrate: MigrateFn

    def __post_init__(self) -> None:
        for name in ("graph", "from_version", "to_version"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InvalidInput(f"Migration.{name} must be a non-empty str, got {value!r}")
        if self.from_version == self.to_version:
            raise InvalidInput(
                f"Migration of graph {self.graph!r} goes from version {self.from_version!r} "
                "to itself"
            )
        if not callable(self.migrate):
            raise InvalidInput(f"Migration.migrate of graph {self.graph!r} is not callable")


@dataclass(frozen=True, slots=True)
class _Table:
    """One immutable generation of the registry."""

    versions: dict[str, dict[str, Graph]]
    defaults: dict[str, str]
    migrations: dict[tuple[str, str], Migration]


def _table(graphs: Iterable[Graph], migrations: Iterable[Migration]) -> _Table:
    versions: dict[str, dict[str, Graph]] = {}
    defaults: dict[str, str] = {}
    for graph in graphs:
        if not isinstance(graph, Graph):
            raise InvalidInput(f"graphs must be Graph objects, got {type(graph).__name__}")
        served = versions.setdefault(graph.id, {})
        if graph.version in served:
            raise InvalidInput(
                f"two graphs share the id {graph.id!r} and version {graph.version!r}"
            )
        served[graph.version] = graph
        defaults[graph.id] = graph.version
    steps: dict[tuple[str, str], Migration] = {}
    for migration in migrations:
        if not isinstance(migration, Migration):
            raise InvalidInput(
                f"migrations must be Migration objects, got {type(migration).__name__}"
            )
        key = (migration.graph, migration.from_version)
        if key in steps:
            raise InvalidInput(
                f"two migrations of graph {migration.graph!r} start at version "
                f"{migration.from_version!r}"
            )
        steps[key] = migration
    return _Table(versions, defaults, steps)


class GraphRegistry:
    """The graphs served, by id and version, and the migrations between versions.

    Thread-safe: every method reads one immutable table; ``swap`` replaces it.
    """

    def __init__(self, graphs: Iterable[Graph] = (), migrations: Iterable[Migration] = ()) -> None:
        self._table = _table(graphs, migrations)
        self._swap_lock = threading.Lock()

    def swap(self, graphs: Iterable[Graph], migrations: Iterable[Migration]) -> None:
        """Serve ``graphs`` and ``migrations`` from now on, keeping every version served so far.

        A version given again replaces the old graph object of that version; the
        last version given of each id becomes its default. Nothing is dropped, so
        no stored session loses the version it is pinned to.
        """
        graphs = list(graphs)
        migrations = list(migrations)
        fresh = _table(graphs, migrations)
        with self._swap_lock:
            old = self._table
            kept = [
                g
                for gid, served in old.versions.items()
                for version, g in served.items()
                if version not in fresh.versions.get(gid, {})
            ]
            merged = _table([*kept, *graphs], [])
            merged.defaults.update(fresh.defaults)
            steps = dict(old.migrations)
            steps.update(fresh.migrations)
            self._table = _Table(merged.versions, merged.defaults, steps)

    def ids(self) -> list[str]:
        """The graph ids served, in the order first given."""
        return list(self._table.versions)

    def defaults(self) -> list[Graph]:
        """The default version of every graph id."""
        table = self._table
        return [table.versions[gid][v] for gid, v in table.defaults.items()]

    def all(self) -> list[Graph]:
        """Every graph served, every version."""
        return [g for served in self._table.versions.values() for g in served.values()]

    def versions(self, graph_id: str) -> list[str]:
        """The versions of ``graph_id`` served (empty if none), in the order given."""
        return list(self._table.versions.get(graph_id, {}))

    def default_version(self, graph_id: str) -> str | None:
        """The version new sessions of ``graph_id`` get, or None if it is not served."""
        return self._table.defaults.get(graph_id)

    def migrations(self) -> list[Migration]:
        """Every registered migration."""
        return list(self._table.migrations.values())

    def get(self, graph_id: str, version: str | None = None) -> Graph:
        """The graph ``graph_id`` at ``version`` (default: its default version).

        Raises:
            GraphNotFound: no such graph id, or it has no such version served.
        """
        table = self._table
        served = table.versions.get(graph_id)
        if not served:
            raise GraphNotFound(graph_id)
        graph = served.get(version if version is not None else table.defaults[graph_id])
        if graph is None:
            shown = ", ".join(repr(v) for v in served)
            raise GraphNotFound(
                graph_id,
                f"graph {graph_id!r} has no version {version!r} served (served: {shown})",
            )
        return graph

    def find(self, graph_id: str, version: str) -> Graph | None:
        """The graph ``graph_id`` at exactly ``version``, or None when it is not served."""
        return self._table.versions.get(graph_id, {}).get(version)

    def unavailable(self, session: Session) -> GraphVersionUnavailable:
        """The error for ``session`` when its version is not served (nor migrated to one)."""
        return GraphVersionUnavailable(
            session.session_id,
            session.graph_id,
            session.graph_version,
            self.versions(session.graph_id),
        )

    def plan(self, graph_id: str, version: str) -> list[Migration] | None:
        """The migrations leading from ``version`` to a served version, or None.

        An empty list when ``version`` is served. Follows the chain of registered
        migrations and stops at the first served version on it.
        """
        table = self._table
        served = table.versions.get(graph_id, {})
        chain: list[Migration] = []
        seen = {version}
        current = version
        while current not in served:
            migration = table.migrations.get((graph_id, current))
            if migration is None or migration.to_version in seen:
                return None
            chain.append(migration)
            seen.add(migration.to_version)
            current = migration.to_version
        return chain

    def plan_to(self, graph_id: str, version: str, target: str) -> list[Migration] | None:
        """The migrations leading from ``version`` to ``target``, or None if none do."""
        steps = self._table.migrations
        chain: list[Migration] = []
        seen = {version}
        current = version
        while current != target:
            migration = steps.get((graph_id, current))
            if migration is None or migration.to_version in seen:
                return None
            chain.append(migration)
            seen.add(migration.to_version)
            current = migration.to_version
        return chain


def upgrade(registry: GraphRegistry, session: Session) -> tuple[Graph, Session | None]:
    """The graph ``session`` runs on, and the migrated session if it had to move.

    The migrated session is a new revision (status message "migrated support
    1 → 2") to be saved before it runs; ``session`` itself is never changed.

    Raises:
        GraphVersionUnavailable: neither the session's version nor a migration
            from it is served.
        MigrationFailed: a migration raised, or left the session at a task the
            target graph lacks, or with a context value that cannot be stored.
    """
    graph = registry.find(session.graph_id, session.graph_version)
    if graph is not None:
        return graph, None
    chain = registry.plan(session.graph_id, session.graph_version)
    if not chain:
        raise registry.unavailable(session)
    return _apply(registry, session, chain)


def upgrade_to(
    registry: GraphRegistry, session: Session, version: str
) -> tuple[Graph, Session | None]:
    """Like ``upgrade``, but to ``version`` (served) even when the session's own is served.

    Raises:
        GraphNotFound: ``version`` is not served.
        GraphVersionUnavailable: no chain of migrations leads to ``version``.
        MigrationFailed: as for ``upgrade``.
    """
    target = registry.get(session.graph_id, version)
    if session.graph_version == version:
        return target, None
    chain = registry.plan_to(session.graph_id, session.graph_version, version)
    if not chain:
        raise GraphVersionUnavailable(
            session.session_id,
            session.graph_id,
            session.graph_version,
            registry.versions(session.graph_id),
            f"session {session.session_id!r}: no chain of migrations of graph "
            f"{session.graph_id!r} leads from version {session.graph_version!r} to {version!r}",
        )
    return _apply(registry, session, chain)


def _apply(
    registry: GraphRegistry, session: Session, chain: list[Migration]
) -> tuple[Graph, Session]:
    target = registry.get(session.graph_id, chain[-1].to_version)
    state = _state_of(session)
    for migration in chain:
        try:
            state = migration.migrate(state)
        except Exception as exc:
            why = f"raised {type(exc).__name__}: {exc}"
            raise _failed(session, registry, migration, why) from exc
        if not isinstance(state, MigrationState):
            raise _failed(
                session, registry, migration, f"returned {type(state).__name__}, not MigrationState"
            )
    path = " → ".join([session.graph_version, *(m.to_version for m in chain)])
    migrated = _session_from(session, state, target, chain[-1], registry)
    migrated.status_message = f"migrated {session.graph_id} {path}"
    return target, migrated


def _state_of(session: Session) -> MigrationState:
    return MigrationState(
        context=session.context.to_dict(),
        current_task=session.current_task,
        back_stack=list(session.back_stack),
        chat_history=[m.to_dict() for m in session.context.chat_history.messages],
    )


def _session_from(
    session: Session,
    state: MigrationState,
    target: Graph,
    last: Migration,
    registry: GraphRegistry,
) -> Session:
    def bad(why: str) -> MigrationFailed:
        return _failed(session, registry, last, why)

    lacks = f"which version {target.version!r} lacks"
    if state.current_task not in target.tasks:
        raise bad(f"left the session at task {state.current_task!r}, {lacks}")
    missing = [t for t in state.back_stack if t not in target.tasks]
    if missing:
        raise bad(f"left task {missing[0]!r} on the back-stack, {lacks}")
    old_history = session.context.chat_history
    try:
        if state.chat_history == [m.to_dict() for m in old_history.messages]:
            history = old_history.copy()
        else:
            history = ChatHistory(
                [_message(m) for m in state.chat_history], max_messages=old_history.max_messages
            )
        context = Context(dict(state.context), history, session_id=session.session_id)
    except (InvalidInput, KeyError, TypeError) as exc:
        raise bad(f"returned data that cannot be stored: {exc}") from exc
    work = session.copy()
    work.context = context
    work.current_task = state.current_task
    work.back_stack = list(state.back_stack)
    work.graph_version = target.version
    work.revision = session.revision + 1
    return work


def _message(raw: dict[str, str]) -> ChatMessage:
    role, content, stamp = raw["role"], raw["content"], raw["timestamp"]
    if role not in ROLES or not isinstance(content, str) or not isinstance(stamp, str):
        raise InvalidInput(f"a chat message must have a role in {ROLES} and str content: {raw!r}")
    return ChatMessage(cast(Role, role), content, stamp)


def _failed(
    session: Session, registry: GraphRegistry, migration: Migration, why: str
) -> MigrationFailed:
    return MigrationFailed(
        session.session_id,
        session.graph_id,
        session.graph_version,
        registry.versions(session.graph_id),
        f"session {session.session_id!r}: the migration of graph {session.graph_id!r} from "
        f"version {migration.from_version!r} to {migration.to_version!r} {why}; the session "
        f"is untouched on version {session.graph_version!r}; fix the migration (or serve "
        f"version {session.graph_version!r} again) and retry",
    )
