"""Fixtures for the actor tests: a harness factory, and stopping every actor after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from actor_helpers import HARNESSES as _HARNESSES
from actor_helpers import Harness

from actors import Settings
from flow import Graph
from flow.demo import GRAPHS
from flow.stores import SqliteStore


@pytest.fixture(autouse=True)
def _stop_every_actor() -> Iterator[None]:
    """Stop every actor, dispatcher and thread a test's harnesses started."""
    yield
    while _HARNESSES:
        _HARNESSES.pop().close()


@pytest.fixture
def make_harness(tmp_path: Path) -> Callable[..., Harness]:
    """Build a harness with the demo graphs plus ``graphs`` and ``Settings(**settings)``."""

    def make(graphs: list[Graph] | None = None, **settings: Any) -> Harness:
        store = SqliteStore(tmp_path / f"actors-{len(_HARNESSES)}.db")
        harness = Harness(store, [*GRAPHS, *(graphs or [])], Settings(**settings))
        _HARNESSES.append(harness)
        return harness

    return make
