"""Fixtures for the graph-version tests: every runtime a test opened is closed after it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runtime.testing import close_all_runtimes


@pytest.fixture(autouse=True)
def _close_runtimes() -> Iterator[None]:
    yield
    close_all_runtimes()
