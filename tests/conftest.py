"""Fixtures shared by every test directory: a real redis-server and PostgreSQL on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from pgserver import PostgresServer, find_pg_bin, missing_message
from testkit import free_port, wait_for_port

from actors._ownership import clear_violations, enable_checks, violations

# Debug mode for the whole suite: an actor field touched outside its actor's
# turn raises, and is recorded so that the test that caused it fails.
enable_checks()


@pytest.fixture(autouse=True)
def _actor_fields_touched_only_in_turn() -> Iterator[None]:
    """Fail a test during which any actor field was touched off its actor's turn."""
    clear_violations()
    yield
    found = violations()
    assert not found, "actor fields touched outside their actor's turn:\n" + "\n".join(found)


@pytest.fixture(autouse=True)
def _structlog_config_per_test() -> Iterator[None]:
    """Each test starts with structlog's defaults and leaves them so.

    Tests that run an entry point in process (``runtime.cli.main``) configure
    structlog; without this, the next tests would log through a filtering
    logger (dropping the events they capture) into pytest's closed capture files.
    """
    structlog.reset_defaults()
    try:
        yield
    finally:
        structlog.reset_defaults()


class RedisServer:
    """A redis-server subprocess on a free loopback port, in its own directory."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            message = "redis-server is not installed (./bin/test installs it with apt-get as root)"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return process

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """Stop the server (its append-only file stays for ``start``)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def start(self) -> None:
        """Start again on the same port and data directory after ``stop``."""
        if self.process.poll() is None:
            return
        self.process = self._spawn()


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A fresh redis-server for one test (fails in CI when redis-server is missing)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of a fresh redis-server."""
    return redis_server.url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the run (fails in CI when PostgreSQL is missing)."""
    bindir = find_pg_bin()
    if bindir is None:
        if os.environ.get("CI") == "true":
            pytest.fail(missing_message())
        pytest.skip(missing_message())
    server = PostgresServer(bindir)
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A URL whose search_path is a new, empty schema on the shared PostgreSQL server."""
    return postgres_server.fresh_url()
