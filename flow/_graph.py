"""Graphs: ``GraphBuilder`` validates tasks and edges and builds an immutable ``Graph``.

Routing follows graph-flow: after a task, its conditional edges are tried in the
order they were added and the first true predicate wins; otherwise the plain edge
(or the conditional edges' shared "no" branch) is taken. Unlike graph-flow, a task
may not have both a plain edge and a conditional one, nor conditional edges whose
"no" branches differ: ``build()`` rejects such ambiguity.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import structlog

from flow._context import Context
from flow._errors import GraphInvalid, TaskNotFound
from flow._task import Task

__all__ = ["ConditionalEdge", "Edge", "Graph", "GraphBuilder", "Predicate"]

Predicate = Callable[[Context], bool]
_log = structlog.get_logger("actorflow.graph")


@dataclass(frozen=True, slots=True)
class Edge:
    """A plain edge: after ``source`` comes ``target``."""

    source: str
    target: str


@dataclass(frozen=True, slots=True)
class ConditionalEdge:
    """After ``source``: ``yes`` when ``predicate(ctx)`` is true, else ``no``."""

    source: str
    predicate: Predicate
    yes: str
    no: str


def _callable_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "?"
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{name}"


class Graph:
    """An immutable, validated graph of tasks. Build one with ``GraphBuilder``.

    Attributes:
        id: the graph's id.
        version: the author's version (``GraphBuilder(id, version=...)``), else
            ``structure_hash``. Sessions are pinned to it.
        structure_hash: a stable hash of the structure (task ids and classes,
            edges, start).
        start: the id of the task a new session starts at.
    """

    __slots__ = (
        "_conditional",
        "_edges",
        "_hash_hex",
        "_id",
        "_plain",
        "_record_input",
        "_start",
        "_tasks",
        "_version",
    )

    def __init__(
        self,
        graph_id: str,
        tasks: Mapping[str, Task],
        edges: tuple[Edge | ConditionalEdge, ...],
        start: str,
        version: str | None = None,
        *,
        record_input: bool = True,
    ) -> None:
        """Internal: use ``GraphBuilder.build()``, which validates first."""
        self._id = graph_id
        self._record_input = record_input
        self._tasks: Mapping[str, Task] = MappingProxyType(dict(tasks))
        self._edges = edges
        self._start = start
        self._plain: dict[str, str] = {}
        self._conditional: dict[str, list[ConditionalEdge]] = {}
        for edge in edges:
            if isinstance(edge, Edge):
                self._plain[edge.source] = edge.target
            else:
                self._conditional.setdefault(edge.source, []).append(edge)
        self._hash_hex = self._hash()
        self._version = self._hash_hex if version is None else version

    @property
    def id(self) -> str:
        """The graph's id."""
        return self._id

    @property
    def version(self) -> str:
        """The author's version, else ``structure_hash``."""
        return self._version

    @property
    def structure_hash(self) -> str:
        """A stable hash of the graph's structure (16 hex digits)."""
        return self._hash_hex

    @property
    def start(self) -> str:
        """The id of the start task."""
        return self._start

    @property
    def record_input(self) -> bool:
        """Whether a step's str input goes into the chat history as a user message."""
        return self._record_input

    @property
    def tasks(self) -> Mapping[str, Task]:
        """A read-only mapping of task id to task, in the order they were added."""
        return self._tasks

    @property
    def edges(self) -> tuple[Edge | ConditionalEdge, ...]:
        """Every edge, in the order it was added."""
        return self._edges

    @property
    def nonblocking(self) -> bool:
        """True when every task is sync and declares ``blocking = False``.

        The session actor may then run this graph's steps inline on a dispatcher thread.
        """
        return all(not t.is_async and not t.blocking for t in self._tasks.values())

    def task(self, task_id: str) -> Task:
        """The task with ``task_id``.

        Raises:
            TaskNotFound: the graph has no such task.
        """
        try:
            return self._tasks[task_id]
        except KeyError:
            raise TaskNotFound(task_id, self._id) from None

    def next_task(self, task_id: str, ctx: Context) -> str | None:
        """Where an edge leads after ``task_id`` given ``ctx``; None when there is no edge.

        Conditional edges are tried in order (the first true predicate wins), then the
        "no" branch, then the plain edge. A predicate's exception propagates.
        """
        conditional = self._conditional.get(task_id)
        if conditional:
            for edge in conditional:
                if edge.predicate(ctx):
                    return edge.yes
            return conditional[0].no
        return self._plain.get(task_id)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description: ``{"id", "version", "start", "tasks", "edges"}``."""
        return {
            "id": self._id,
            "version": self._version,
            "start": self._start,
            "tasks": list(self._tasks),
            "edges": [_describe_edge(e) for e in self._edges],
        }

    def _hash(self) -> str:
        structure = {
            "id": self._id,
            "start": self._start,
            "tasks": [
                [tid, f"{type(t).__module__}.{type(t).__qualname__}"]
                for tid, t in self._tasks.items()
            ],
            "edges": [_describe_edge(e) for e in self._edges],
        }
        blob = json.dumps(structure, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"<Graph {self._id!r} version={self._version} tasks={len(self._tasks)}>"


def _describe_edge(edge: Edge | ConditionalEdge) -> dict[str, str]:
    if isinstance(edge, Edge):
        return {"from": edge.source, "to": edge.target}
    return {
        "from": edge.source,
        "yes": edge.yes,
        "no": edge.no,
        "condition": _callable_name(edge.predicate),
    }


class GraphBuilder:
    """Collects tasks and edges; ``build()`` validates them into a ``Graph``.

    Every method but ``build`` returns the builder, so calls chain::

        graph = (
            GraphBuilder("support")
            .add_task(greet).add_task(classify).add_task(refund).add_task(faq)
            .add_edge("greet", "classify")
            .add_conditional_edge("classify", wants_refund, "refund", "faq")
            .build()
        )

    The first task added is the start task unless ``start`` names another.
    ``version`` names this build of the graph (``GraphBuilder("support",
    version="2")``); without it the version is the structural hash.

    ``record_input=False`` leaves the chat history to the tasks: a task ported from
    graph-flow that records the user's message itself would otherwise record it twice.
    """

    def __init__(
        self, graph_id: str, version: str | None = None, *, record_input: bool = True
    ) -> None:
        if not isinstance(graph_id, str) or not graph_id:
            raise GraphInvalid(f"a graph id must be a non-empty str, got {graph_id!r}")
        if version is not None and (not isinstance(version, str) or not version):
            raise GraphInvalid(
                f"graph {graph_id!r}: a version must be a non-empty str, got {version!r}"
            )
        self._id = graph_id
        self._version = version
        self._record_input = bool(record_input)
        self._tasks: list[Task] = []
        self._edges: list[Edge | ConditionalEdge] = []
        self._start: str | None = None

    def add_task(self, t: Task) -> GraphBuilder:
        """Add a task (its ``id`` must be unique in the graph)."""
        if not isinstance(t, Task):
            raise GraphInvalid(f"graph {self._id!r}: add_task needs a Task, got {type(t).__name__}")
        self._tasks.append(t)
        return self

    def add_edge(self, source: str, target: str) -> GraphBuilder:
        """After ``source`` comes ``target``."""
        self._edges.append(Edge(source, target))
        return self

    def add_conditional_edge(
        self, source: str, predicate: Predicate, yes: str, no: str
    ) -> GraphBuilder:
        """After ``source``: ``yes`` if ``predicate(ctx)`` is true, else ``no``.

        The predicate sees the context as ``source`` left it.
        """
        if not callable(predicate):
            raise GraphInvalid(
                f"graph {self._id!r}: the predicate of the conditional edge from "
                f"{source!r} is not callable"
            )
        self._edges.append(ConditionalEdge(source, predicate, yes, no))
        return self

    def start(self, task_id: str) -> GraphBuilder:
        """Name the start task (default: the first task added)."""
        self._start = task_id
        return self

    def build(self) -> Graph:
        """Validate and return the immutable graph.

        Raises:
            GraphInvalid: no tasks; a duplicate task id; an edge from or to an unknown
                task; an unknown start task; two plain edges out of one task; a plain
                and a conditional edge out of one task; conditional edges out of one
                task with different "no" branches.
                The message names the task. A task no edge leads to from the start
                is accepted (a ``GoTo`` may jump there) and logged as a warning,
                ``graph_tasks_without_edge_in``.
        """
        gid = self._id
        if not self._tasks:
            raise GraphInvalid(f"graph {gid!r} has no tasks")
        tasks: dict[str, Task] = {}
        for t in self._tasks:
            if t.id in tasks:
                raise GraphInvalid(f"graph {gid!r}: duplicate task id {t.id!r}")
            tasks[t.id] = t
        start = self._start if self._start is not None else self._tasks[0].id
        if start not in tasks:
            raise GraphInvalid(f"graph {gid!r}: start task {start!r} is not in the graph")
        self._check_edges(tasks)
        reachable = self._reachable(start)
        unreachable = [tid for tid in tasks if tid not in reachable]
        if unreachable:
            # a GoTo may be the only way in (menus jump so): warn, as graph-flow does
            _log.warning(
                "graph_tasks_without_edge_in",
                graph=gid,
                start=start,
                tasks=unreachable,
                hint="reachable only by NextAction.GoTo",
            )
        return Graph(
            gid, tasks, tuple(self._edges), start, self._version, record_input=self._record_input
        )

    def _check_edges(self, tasks: Mapping[str, Task]) -> None:
        gid = self._id
        plain: dict[str, str] = {}
        no_branch: dict[str, str] = {}
        for edge in self._edges:
            ends = [edge.target] if isinstance(edge, Edge) else [edge.yes, edge.no]
            if edge.source not in tasks:
                raise GraphInvalid(f"graph {gid!r}: an edge leaves unknown task {edge.source!r}")
            for end in ends:
                if end not in tasks:
                    raise GraphInvalid(
                        f"graph {gid!r}: the edge from {edge.source!r} leads to unknown "
                        f"task {end!r}"
                    )
            if isinstance(edge, Edge):
                if edge.source in plain:
                    raise GraphInvalid(
                        f"graph {gid!r}: task {edge.source!r} has two plain edges "
                        f"(to {plain[edge.source]!r} and {edge.target!r})"
                    )
                plain[edge.source] = edge.target
            else:
                earlier = no_branch.setdefault(edge.source, edge.no)
                if earlier != edge.no:
                    raise GraphInvalid(
                        f"graph {gid!r}: task {edge.source!r} has conditional edges with "
                        f"different 'no' branches ({earlier!r} and {edge.no!r})"
                    )
            if edge.source in plain and edge.source in no_branch:
                raise GraphInvalid(
                    f"graph {gid!r}: task {edge.source!r} has both a plain edge and a "
                    "conditional edge; which one applies would be ambiguous"
                )

    def _reachable(self, start: str) -> set[str]:
        successors: dict[str, list[str]] = {}
        for edge in self._edges:
            ends = [edge.target] if isinstance(edge, Edge) else [edge.yes, edge.no]
            successors.setdefault(edge.source, []).extend(ends)
        seen = {start}
        frontier = [start]
        while frontier:
            for nxt in successors.get(frontier.pop(), []):
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        return seen
