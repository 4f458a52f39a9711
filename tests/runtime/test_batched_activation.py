"""Activations in a burst are read from the store in batches, one job and message each."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flow import ActorflowError, Session
from flow.demo import GRAPHS
from flow.stores import SqliteStore
from runtime import AsyncRuntime, RuntimeConfig


class CountingStore:
    """A SQLite store that counts its reads (any other call goes to it unchanged)."""

    def __init__(self, path: Path) -> None:
        self.inner = SqliteStore(path)
        self.lock = threading.Lock()
        self.batches: list[int] = []
        self.loads = 0

    def load(self, session_id: str, revision: int | None = None) -> Session | None:
        with self.lock:
            self.loads += 1
        return self.inner.load(session_id, revision)

    def load_many(self, session_ids: Sequence[str]) -> dict[str, Session | ActorflowError]:
        with self.lock:
            self.batches.append(len(session_ids))
        return self.inner.load_many(session_ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_burst_of_activations_is_read_in_batches_and_every_step_lands(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "sessions.db")
    config = RuntimeConfig(max_sessions_per_user=0)
    count = 300

    async def run() -> list[int]:
        async with AsyncRuntime.open(
            data_dir=tmp_path, graphs=GRAPHS, config=config, store=store
        ) as rt:
            ids = [await rt.create_session("echo", owner="a") for _ in range(count)]
            await asyncio.gather(*(rt.passivate(sid) for sid in ids))
            results = await asyncio.gather(*(rt.step(sid, "hi") for sid in ids))
            assert (await rt.stats()).activations == count
            return [result.revision for result in results]

    assert asyncio.run(run()) == [1] * count
    assert sum(store.batches) + store.loads == count, "each session read once"
    assert store.loads == 0, "an async caller never reads on its own: the supervisor batches"
    assert len(store.batches) < count / 4, f"reads not batched: {store.batches}"
