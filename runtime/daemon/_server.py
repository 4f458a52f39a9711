"""Running the daemon: the runtime, the admin socket, uvicorn, signals and the drain.

On SIGTERM or SIGINT the daemon stops accepting connections, lets running
steps finish (up to ``--drain-timeout``), closes the runtime (which flushes
every snapshot), closes the admin socket and exits 0. A second signal exits at
once, with status 1. On SIGHUP (or ``actorflow admin reload``) it re-imports the
``--graphs`` and ``--migrations`` modules and serves what they hold too
(`runtime.daemon._reload`).
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import resource
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
import uvicorn

from flow import Graph
from flow._versions import Migration
from runtime import AsyncRuntime
from runtime.admin import start_admin_server
from runtime.admin._socket_file import bind_private_socket, unlink_own_socket
from runtime.daemon._app import OPENAPI_PATH, build_app
from runtime.daemon._auth import Authenticator
from runtime.daemon._config import DaemonConfig, is_loopback
from runtime.daemon._logging import flush_logs
from runtime.daemon._metrics import DaemonMetrics
from runtime.daemon._policy import LOOPBACK_NAMES, GatewayPolicy
from runtime.daemon._reload import on_hangup, reloader
from runtime.daemon._routes import Api
from runtime.daemon._stop_signals import StopSignals
from runtime.daemon._storage import secure_data_dir
from runtime.daemon._transport import ConnectionLimits, guarded_protocol
from runtime.daemon.ui._peers import Peers

__all__ = ["DaemonServer", "serve", "tune_gc"]

EXIT_ON_SECOND_SIGNAL = 1
# uvicorn cancels the requests still open this long after the drain timeout: the
# runtime answers steps still running at the drain deadline itself (RuntimeClosed,
# a 503 problem), and this margin lets those answers go out before uvicorn cuts the
# connections (a cancelled request would get uvicorn's plain-text 500).
SHUTDOWN_MARGIN = 3
# Young collections after this many allocations (CPython's default: 700). Every
# request allocates short-lived containers; collecting them less often costs less
# CPU per step under load. 5,000, not 50,000: a young collection of 50,000 objects
# paused the event loop 13-20 ms (a streamed token's p99, a step's at 64
# connections), and 5,000 cost no more CPU per step (docs/http-api.md, "Performance").
GC_THRESHOLDS = (5_000, 50, 100)
_log = structlog.get_logger("actorflowd")


class DaemonServer(uvicorn.Server):
    """uvicorn's server without its own signal handling: ``serve`` installs the daemon's."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave signals to the daemon (uvicorn would re-raise them after shutdown)."""
        yield


def tune_gc() -> None:
    """Freeze the start-up heap (modules, graphs, the app) and collect less often.

    What start-up built lives until exit: frozen, the collector never walks it again.
    (The benches call it too, to collect as actorflowd does.)
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _config_info(config: DaemonConfig, graphs: list[Graph]) -> dict[str, object]:
    return {
        "host": config.host,
        "port": config.port,
        "uds": str(config.uds) if config.uds else None,
        "data_dir": str(config.data_dir.resolve()),
        "graphs": [graph.id for graph in graphs],
        "durability": config.runtime.durability,
        "store": config.runtime.store or f"sqlite:///{(config.data_dir / 'sessions.db').resolve()}",
        "tls": config.tls_cert is not None,
        "auth": "tokens" if config.tokens is not None else "local",
        "max_inflight": config.max_inflight,
        "pid": os.getpid(),
    }


# file descriptors kept for the store, the admin socket, logs and the runtime's threads
FD_HEADROOM = 256


def default_max_connections() -> int:
    """The fd limit less ``FD_HEADROOM`` (at least 64): past it, connections are refused."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 65_536
    return max(64, soft - FD_HEADROOM)


def connection_limits(config: DaemonConfig) -> ConnectionLimits:
    """The per-connection limits for the daemon's settings."""
    return ConnectionLimits(
        max_header_bytes=config.max_header_bytes,
        max_connections=config.max_connections or default_max_connections(),
        header_timeout=config.header_timeout,
        body_timeout=config.body_timeout,
    )


def gateway_policy(config: DaemonConfig) -> GatewayPolicy:
    """The gateway's host, origin and rate checks for the daemon's settings."""
    hosts: frozenset[str] | None = frozenset(h.lower() for h in config.allowed_hosts)
    if not hosts:
        loopback = is_loopback(config.host)
        hosts = LOOPBACK_NAMES | {config.host.lower()} if loopback else None
    return GatewayPolicy(
        allowed_hosts=hosts,
        cors_origins=frozenset(config.cors_origin),
        step_rate=config.user_step_rate,
        client_from_front=bool(config.shard),
    )


def _uvicorn_config(app: Any, config: DaemonConfig) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        loop="uvloop",
        http=guarded_protocol(connection_limits(config)),
        timeout_keep_alive=max(1, math.ceil(config.keepalive_timeout)),
        proxy_headers=bool(config.forwarded_allow_ips),
        forwarded_allow_ips=list(config.forwarded_allow_ips) or None,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=math.ceil(config.runtime.drain_timeout) + SHUTDOWN_MARGIN,
        ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
        ssl_keyfile=str(config.tls_key) if config.tls_key else None,
    )


async def serve(
    config: DaemonConfig,
    graphs: list[Graph],
    default_graph: str,
    auth: Authenticator,
    migrations: list[Migration] | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT, then drain; the process exit status.

    Must run on the event loop of the main thread (it installs signal handlers).
    """
    secure_data_dir(config.data_dir)
    loop = asyncio.get_running_loop()
    runtime = await AsyncRuntime.open(
        data_dir=config.data_dir,
        graphs=graphs,
        config=config.runtime,
        migrations=migrations or (),
        task_loop="caller" if config.task_loop == "server" else "own",
    )
    reload = reloader(config, runtime)
    try:
        admin = await start_admin_server(
            runtime,
            config.data_dir / "admin.sock",
            config_info=_config_info(config, graphs),
            reload=reload,
        )
    except BaseException:
        await runtime.aclose()
        raise
    metrics = DaemonMetrics()
    metrics.watch_streams(runtime.stream_stats)
    api = Api(
        runtime=runtime,
        graphs=graphs,
        default_graph=default_graph,
        max_inflight=config.max_inflight,
        metrics=metrics,
        admins=auth.admins,
    )
    app = build_app(
        api,
        auth,
        max_body=config.max_body,
        policy=gateway_policy(config),
        forward_timeout=config.forward_timeout,
        secure_cookies=config.tls_cert is not None,
        sse_heartbeat=config.sse_heartbeat,
        peers=Peers.of_worker(config.data_dir) if config.shard else None,
    )
    server = DaemonServer(_uvicorn_config(app, config))

    def drain(signum: int) -> None:
        _log.info("draining", signal=signal.Signals(signum).name, inflight=api.inflight)
        api.draining = True
        runtime.begin_drain()
        server.should_exit = True

    def exit_now() -> None:
        flush_logs()
        os._exit(EXIT_ON_SECOND_SIGNAL)

    StopSignals(
        loop,
        announce=lambda: setattr(api, "unready", True),
        drain=drain,
        exit_now=exit_now,
        # a worker of --workers N: the front waits out the drain delay for every worker
        delay=0.0 if config.shard else config.drain_delay,
    ).install()
    loop.add_signal_handler(signal.SIGHUP, on_hangup(reload))
    tune_gc()
    scheme = "https" if config.tls_cert else "http"
    _log.info(
        "starting",
        url=f"{scheme}://{config.host}:{config.port}" if config.uds is None else None,
        uds=str(config.uds) if config.uds is not None else None,
        openapi=f"{OPENAPI_PATH}/openapi.json",
        docs=f"{OPENAPI_PATH}/swagger",
        graphs=[graph.id for graph in graphs],
        data_dir=str(config.data_dir),
        auth="tokens" if config.tokens is not None else "local user (loopback only)",
    )
    listener: tuple[socket.socket, int] | None = None
    try:
        if config.uds is not None:
            listener = bind_private_socket(config.uds)
        await server.serve(sockets=None if listener is None else [listener[0]])
    finally:
        if listener is not None and config.uds is not None:
            listener[0].close()
            unlink_own_socket(config.uds, listener[1])
        _log.info("closing_runtime", inflight=api.inflight)
        try:
            await app.aclose()
        finally:
            try:
                await runtime.aclose()
            finally:
                await admin.close()
    if not server.started:
        return 1
    _log.info("stopped")
    return 0
