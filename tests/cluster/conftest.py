"""Fixtures for the cluster tests: ``start_node(name, *flags)`` starts an actorflowd node
on the test's redis-server (see cluster_nodes.py); all are stopped after the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_nodes import Node, StartNode


@pytest.fixture
def start_node(tmp_path: Path, redis_url: str) -> Iterator[StartNode]:
    """Start cluster nodes on the test's redis-server; all are stopped after the test."""
    started: list[Node] = []

    def start(name: str, *extra: str) -> Node:
        workdir = tmp_path / name
        workdir.mkdir()
        node = Node(workdir, name, redis_url, list(extra))
        started.append(node)
        return node.start()

    try:
        yield start
    finally:
        for node in started:
            node.stop()
