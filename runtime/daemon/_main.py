"""The ``actorflowd`` entry point: configuration, logging, then the server on uvloop."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence

import structlog
import uvloop

from runtime.daemon._auth import Authenticator, TokensFileError
from runtime.daemon._config import ConfigError, DaemonConfig, can_run_workers, parse_config
from runtime.daemon._graphs import load_graphs, load_migrations, pick_default_graph
from runtime.daemon._logging import configure_logging
from runtime.daemon._preflight import StartupError, check_can_start
from runtime.daemon._server import serve
from runtime.daemon._sharding import ShardMismatch, default_workers, record_workers
from runtime.daemon._workers import run_workers, worker_config

__all__ = ["EXIT_CONFIG", "EXIT_FAILED", "main"]

EXIT_CONFIG = 2
EXIT_FAILED = 1


def _fail(message: str, status: int = EXIT_CONFIG) -> int:
    print(f"actorflowd: error: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT; the exit status (2: it cannot start).

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).
    """
    try:
        config = parse_config(argv, isatty=sys.stdout.isatty())
    except ConfigError as exc:
        return _fail(str(exc))
    configure_logging(config.log_format)
    try:
        config = _with_worker_count(config)
    except ShardMismatch as exc:
        return _fail(str(exc))
    if config.workers > 1:
        return _run_parent(config, sys.argv[1:] if argv is None else argv)
    config = worker_config(config)
    try:
        graphs = load_graphs(config.graphs)
        migrations = load_migrations(config.migrations)
        default_graph = pick_default_graph(graphs, config.default_graph)
        auth = Authenticator.from_file(config.tokens)
        if not config.shard:
            record_workers(config.data_dir, 1)
        data_dir_lock = check_can_start(config)
    except (ConfigError, TokensFileError, StartupError, ShardMismatch) as exc:
        return _fail(str(exc))
    try:
        with data_dir_lock:
            return uvloop.run(serve(config, graphs, default_graph, auth, migrations))
    except Exception as exc:
        structlog.get_logger("actorflowd").exception("daemon_failed")
        return _fail(f"{type(exc).__name__}: {exc}", EXIT_FAILED)


def _with_worker_count(config: DaemonConfig) -> DaemonConfig:
    """``--workers`` not given (0): the data directory's count, else one per core (logged)."""
    if config.workers:
        return config
    workers, reason = default_workers(config.data_dir, sharding_allowed=can_run_workers(config))
    structlog.get_logger("actorflowd").info("workers_chosen", workers=workers, reason=reason)
    return dataclasses.replace(config, workers=workers)


def _run_parent(config: DaemonConfig, argv: Sequence[str]) -> int:
    """``--workers N``: the front and N workers (runtime/daemon/_workers.py)."""
    try:
        data_dir_lock = check_can_start(config)
    except StartupError as exc:
        return _fail(str(exc))
    try:
        with data_dir_lock:
            record_workers(config.data_dir, config.workers)
            return uvloop.run(run_workers(config, argv))
    except ShardMismatch as exc:
        return _fail(str(exc))
    except Exception as exc:
        structlog.get_logger("actorflowd").exception("daemon_failed")
        return _fail(f"{type(exc).__name__}: {exc}", EXIT_FAILED)
