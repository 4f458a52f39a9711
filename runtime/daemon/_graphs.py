"""Loading the graphs and migrations to serve from ``module:attr`` references.

``reload=True`` re-imports each referenced module first (``actorflow admin
reload``, SIGHUP): only that module is re-executed, not the modules it imports.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from flow import Graph
from flow._versions import Migration
from runtime.daemon._config import ConfigError

__all__ = ["load_graphs", "load_migrations", "pick_default_graph"]


def _attr(ref: str, flag: str, reload: bool) -> object:
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
        if reload:
            module = importlib.reload(module)
    except Exception as exc:  # an import runs arbitrary code: report whatever it raised
        raise ConfigError(
            f"{flag} {ref}: cannot import {module_name!r}: {_where(exc)}{type(exc).__name__}: {exc}"
        ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{flag} {ref}: module {module_name!r} has no {attr!r}") from None


def _load_one(ref: str, reload: bool = False) -> list[Graph]:
    value = _attr(ref, "--graphs", reload)
    if isinstance(value, Graph):
        return [value]
    if isinstance(value, list | tuple) and value and all(isinstance(g, Graph) for g in value):
        return list(value)
    raise ConfigError(
        f"--graphs {ref}: expected a Graph or a non-empty list of Graphs, "
        f"found {type(value).__name__}"
    )


def _where(exc: BaseException) -> str:
    """``file:line: `` of the user's code that failed, or "" when the module was not found.

    The last traceback frame outside the import machinery is the line that raised;
    a syntax error carries its own file and line.
    """
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}: "
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<frozen importlib")
        and frame.filename != __file__
        and not frame.filename.endswith(f"{os.sep}importlib{os.sep}__init__.py")
    ]
    return f"{frames[-1].filename}:{frames[-1].lineno}: " if frames else ""


def _import_from_working_directory() -> None:
    """Put the current directory first on the import path, as ``python -m`` does."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def load_graphs(refs: Sequence[str], *, reload: bool = False) -> list[Graph]:
    """Import every ``module:attr`` and return the graphs, in order.

    The current directory is on the import path (as with ``python -m`` or
    uvicorn's ``--app-dir``), so an app's own folder can serve its module.
    Several versions of one graph id may be served; the last one given is the
    default for new sessions.

    Raises:
        ConfigError: a reference cannot be imported, is not a graph (or list of
            graphs), or two graphs share an id and a version.
    """
    _import_from_working_directory()
    graphs: list[Graph] = []
    seen: dict[tuple[str, str], str] = {}
    for ref in refs:
        for graph in _load_one(ref, reload):
            key = (graph.id, graph.version)
            if key in seen:
                raise ConfigError(
                    f"--graphs {ref}: graph id {graph.id!r} is also served by {seen[key]} at "
                    f"the same version {graph.version!r} (serve another version with "
                    "GraphBuilder(id, version=...))"
                )
            seen[key] = ref
            graphs.append(graph)
    return graphs


def load_migrations(refs: Sequence[str], *, reload: bool = False) -> list[Migration]:
    """Import every ``module:attr`` (a Migration or a list of them) and return them, in order.

    Raises:
        ConfigError: a reference cannot be imported or is not a Migration (or list).
    """
    found: list[Migration] = []
    for ref in refs:
        value = _attr(ref, "--migrations", reload)
        if isinstance(value, Migration):
            found.append(value)
        elif isinstance(value, list | tuple) and all(isinstance(m, Migration) for m in value):
            found.extend(value)
        else:
            raise ConfigError(
                f"--migrations {ref}: expected a Migration or a list of Migrations, "
                f"found {type(value).__name__}"
            )
    return found


def pick_default_graph(graphs: Sequence[Graph], wanted: str | None) -> str:
    """The graph ``/v1/execute`` creates sessions of: ``wanted``, or the first graph.

    Raises:
        ConfigError: ``wanted`` is not among ``graphs``.
    """
    ids = list(dict.fromkeys(graph.id for graph in graphs))
    if wanted is None:
        return ids[0]
    if wanted not in ids:
        raise ConfigError(f"--default-graph {wanted!r} is not served (graphs: {', '.join(ids)})")
    return wanted
