"""An AsyncRuntime with its admin socket, served on a loop thread, as the daemon does."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from flow.demo import GRAPHS
from runtime import AsyncRuntime, RuntimeConfig
from runtime.admin import AdminClient, AdminServer, start_admin_server

T = TypeVar("T")

CALL_TIMEOUT = 30.0
CONFIG_INFO: dict[str, object] = {"host": "127.0.0.1", "port": 0, "graphs": ["echo", "support"]}


class LoopThread:
    """An asyncio loop running on its own thread (the daemon's loop, in a test)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="admin-test-loop")
        self._thread.start()

    def run(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` on the loop and wait for its result."""

        async def wrapper() -> T:
            return await awaitable

        future: Future[T] = asyncio.run_coroutine_threadsafe(wrapper(), self.loop)
        return future.result(CALL_TIMEOUT)

    def stop(self) -> None:
        """Stop the loop and join its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(CALL_TIMEOUT)
        self.loop.close()


@dataclass
class LiveAdmin:
    """A runtime on ``data_dir``, its admin socket, and the loop they run on."""

    loop: LoopThread
    runtime: AsyncRuntime
    server: AdminServer
    data_dir: Path
    clients: list[AdminClient] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        """The admin socket's path."""
        return self.server.path

    def client(self) -> AdminClient:
        """A fresh client (closed at teardown)."""
        client = AdminClient(self.socket, timeout=CALL_TIMEOUT)
        self.clients.append(client)
        return client

    def create(self, graph: str, owner: str = "alice") -> str:
        """A new session's id."""
        return self.loop.run(self.runtime.create_session(graph, owner=owner))

    def step(self, session_id: str, text: str | None = None) -> Any:
        """One step of ``session_id``."""
        return self.loop.run(self.runtime.step(session_id, text))


def open_live_admin(data_dir: Path, config: RuntimeConfig) -> LiveAdmin:
    """Open a runtime and its admin socket on a new loop thread."""
    loop = LoopThread()
    try:
        runtime = loop.run(AsyncRuntime.open(data_dir=data_dir, graphs=GRAPHS, config=config))
    except BaseException:
        loop.stop()
        raise
    try:
        server = loop.run(
            start_admin_server(runtime, data_dir / "admin.sock", config_info=CONFIG_INFO)
        )
    except BaseException:
        loop.run(runtime.aclose())
        loop.stop()
        raise
    return LiveAdmin(loop, runtime, server, data_dir)


def close_live_admin(live: LiveAdmin) -> None:
    """Close the clients, the admin socket, the runtime and the loop."""
    for client in live.clients:
        client.close()
    try:
        live.loop.run(live.server.close())
        live.loop.run(live.runtime.aclose())
    finally:
        live.loop.stop()


@pytest.fixture
def live_admin(tmp_path: Path) -> Iterator[LiveAdmin]:
    """A runtime whose sweeper never passivates on its own during a test."""
    config = RuntimeConfig(idle_timeout=3600.0, wait_timeout=3600.0, durability="commit")
    live = open_live_admin(tmp_path / "var", config)
    try:
        yield live
    finally:
        close_live_admin(live)
