"""The admin ops read sessions only through runtime methods, never the raw store (issue 12):
every op runs against a runtime whose ``store`` attribute cannot be read."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from flow.demo import GRAPHS
from runtime import AsyncRuntime
from runtime.admin._ops import dispatch


class WithoutStore:
    """An ``AsyncRuntime`` whose ``store`` is out of reach: reading it fails the test."""

    def __init__(self, runtime: AsyncRuntime) -> None:
        self._runtime = runtime

    def __getattr__(self, name: str) -> Any:
        if name == "store":
            raise AssertionError("an admin op read runtime.store")
        return getattr(self._runtime, name)


async def _every_op(data_dir: Path) -> dict[str, Any]:
    async with AsyncRuntime.open(data_dir=data_dir, graphs=GRAPHS) as runtime:
        sid = await runtime.create_session("echo", owner="alice")
        for word in ("one", "two"):
            await runtime.step(sid, word, owner="alice")
        target: Any = WithoutStore(runtime)
        prefix = sid[:8]
        requests = {
            "inspect": {"op": "inspect", "id": prefix},
            "inspect@1": {"op": "inspect", "id": prefix, "revision": 1},
            "history": {"op": "history", "id": prefix, "limit": 5},
            "stored": {"op": "stored"},
            "config": {"op": "config"},
            "ls": {"op": "ls"},
            "stats": {"op": "stats"},
            "snapshot": {"op": "snapshot", "id": prefix},
            "passivate": {"op": "passivate", "id": prefix},
        }
        return {name: await dispatch(target, req, {}) for name, req in requests.items()}


def test_every_admin_op_runs_without_reading_the_raw_store(tmp_path: Path) -> None:
    results = asyncio.run(_every_op(tmp_path / "runtime"))
    assert results["inspect@1"]["revision"] == 1
    assert results["inspect@1"]["state"] == "past revision"
    assert [r.revision for r in results["history"]["revisions"]][:2] == [2, 1]
    assert results["config"]["store"] == "SqliteStore"
    assert results["stored"]["count"] == 1
