"""Fixtures for the client tests: a real daemon subprocess, and both sides of the API.

``daemon`` is one actorflowd (no tokens: the user ``local``) shared by the client tests.
``api`` is parametrized: the same test runs against an in-process ``Runtime``
and against a ``Client`` of the daemon, through the ``SessionAPI`` protocol.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from client_graphs import GRAPHS as TEST_GRAPHS
from client_harness import Daemon

from flow.demo import GRAPHS as DEMO_GRAPHS
from runtime import Runtime
from runtime.client import Client, RetryPolicy, SessionAPI


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon shared by the client tests (each test makes its own sessions)."""
    process = Daemon(tmp_path_factory.mktemp("daemon"))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[Client]:
    """A client of the shared daemon (retries with short waits)."""
    with Client(daemon.url, retry=RetryPolicy(deadline=10.0, wait_initial=0.01)) as c:
        yield c


@pytest.fixture(params=["runtime", "client"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionAPI]:
    """The sessions API in process (``Runtime``) and over HTTP (``Client``)."""
    side: SessionAPI
    if request.param == "runtime":
        side = Runtime.open(tmp_path / "data", graphs=[*DEMO_GRAPHS, *TEST_GRAPHS])
    else:
        side = Client(request.getfixturevalue("daemon").url)
    try:
        yield side
    finally:
        side.close()
