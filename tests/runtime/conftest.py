"""Fixtures for the runtime tests: cleanup, a manual clock, a runtime opener."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flow import Graph
from flow.demo import GRAPHS
from runtime import Runtime, RuntimeConfig
from runtime.testing import ManualClock, close_all_runtimes


@pytest.fixture(autouse=True)
def _close_runtimes() -> Iterator[None]:
    """Close any runtime a test left open (which stops its actors and threads)."""
    yield
    close_all_runtimes()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def open_runtime(tmp_path: Path) -> Callable[..., Runtime]:
    """Open a runtime on ``tmp_path`` (demo graphs plus ``graphs``), closed after the test."""

    def opener(graphs: list[Graph] | None = None, store: Any = None, **config: Any) -> Runtime:
        return Runtime.open(
            data_dir=tmp_path / "var",
            graphs=[*GRAPHS, *(graphs or [])],
            config=RuntimeConfig(**config),
            store=store,
        )

    return opener
