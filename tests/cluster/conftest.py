"""Fixtures for the cluster tests: ``start_node(name, *flags)`` starts an actorflowd node
on the test's redis-server (see cluster_nodes.py); ``backend`` is Redis or PostgreSQL
(each test using it runs on both) and ``start_shared_node`` starts nodes on it; all are
stopped after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cluster_nodes import Backend, Node, PostgresBackend, RedisBackend, StartNode


@pytest.fixture
def start_node(tmp_path: Path, redis_url: str) -> Iterator[StartNode]:
    """Start cluster nodes on the test's redis-server; all are stopped after the test."""
    yield from _nodes_on(tmp_path, redis_url)


@pytest.fixture(
    params=[
        pytest.param(RedisBackend, id="redis", marks=pytest.mark.redis),
        pytest.param(PostgresBackend, id="postgres", marks=pytest.mark.postgres),
    ]
)
def backend(request: pytest.FixtureRequest) -> Backend:
    """The store the test's daemons share: a fresh redis-server, or a fresh schema of the
    run's PostgreSQL server."""
    kind: Callable[[object], Backend] = request.param
    server = request.getfixturevalue("redis_server" if kind is RedisBackend else "postgres_server")
    return kind(server)


@pytest.fixture
def start_shared_node(tmp_path: Path, backend: Backend) -> Iterator[StartNode]:
    """Start cluster nodes on ``backend``; all are stopped after the test."""
    yield from _nodes_on(tmp_path, backend.url)


def _nodes_on(tmp_path: Path, url: str) -> Iterator[StartNode]:
    started: list[Node] = []

    def start(name: str, *extra: str) -> Node:
        workdir = tmp_path / name
        workdir.mkdir()
        node = Node(workdir, name, url, list(extra))
        started.append(node)
        return node.start()

    try:
        yield start
    finally:
        for node in started:
            node.stop()
