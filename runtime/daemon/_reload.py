"""Hot reload: SIGHUP and ``actorflow admin reload`` re-import the graphs and migrations.

Threads: the reload coroutine runs on the daemon's event loop; the imports run
on a worker thread (``asyncio.to_thread``), so steps in flight are not disturbed.
Only each referenced module is re-executed, not the modules it imports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from flow import Graph
from flow._errors import ActorflowError
from flow._versions import Migration
from runtime import AsyncRuntime
from runtime.admin import AdminError
from runtime.daemon._config import ConfigError, DaemonConfig
from runtime.daemon._graphs import load_graphs, load_migrations

__all__ = ["Reload", "on_hangup", "reloader"]

Reload = Callable[[], Coroutine[Any, Any, dict[str, Any]]]
_log = structlog.get_logger("actorflowd")


def _reimport(config: DaemonConfig) -> tuple[list[Graph], list[Migration]]:
    return (
        load_graphs(config.graphs, reload=True),
        load_migrations(config.migrations, reload=True),
    )


def reloader(config: DaemonConfig, runtime: AsyncRuntime) -> Reload:
    """What SIGHUP and ``actorflow admin reload`` run: re-import, then serve the new versions.

    Nothing is dropped: every version served so far stays served. A module that
    fails to import changes nothing (``ReloadFailed``).
    """
    lock = asyncio.Lock()

    async def reload() -> dict[str, Any]:
        async with lock:
            try:
                graphs, migrations = await asyncio.to_thread(_reimport, config)
                runtime.reload(graphs, migrations)
            except (ConfigError, ActorflowError) as exc:
                _log.warning("reload_failed", error=str(exc))
                raise AdminError("ReloadFailed", f"{exc}; still serving what was served") from exc
            served = {gid: runtime.graph_versions(gid) for gid in runtime.registry.ids()}
            _log.info("reloaded", graphs=served, migrations=len(runtime.migrations()))
            return {"graphs": served, "migrations": len(runtime.migrations())}

    return reload


def on_hangup(reload: Reload) -> Callable[[], None]:
    """The SIGHUP handler: start a reload (its failure is logged by the reload itself)."""
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[Any]] = set()

    def done(task: asyncio.Task[Any]) -> None:
        running.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved so that asyncio does not log it again

    def handler() -> None:
        task = loop.create_task(reload())
        running.add(task)
        task.add_done_callback(done)

    return handler
