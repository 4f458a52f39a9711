"""actorflowd's configuration: flags > environment (``ACTORFLOW_*``) > TOML file > defaults.

Every setting is one dataclass field (runtime/_settings.py): the daemon's own in
``DaemonConfig``, the runtime's in ``RuntimeConfig`` (held, not copied, as
``DaemonConfig.runtime``). The flag is ``--name-with-dashes``, the environment
variable ``ACTORFLOW_NAME_WITH_UNDERSCORES`` and the TOML key
``name_with_underscores`` (dashes are accepted too). ``--graphs`` and
``--migrations`` are repeatable; in the environment each is a comma-separated
list and in TOML a list of strings.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from runtime._config import RuntimeConfig
from runtime._settings import ENV_PREFIX, Setting, SettingError, convert, setting, settings_of

__all__ = [
    "ConfigError",
    "DaemonConfig",
    "LogFormat",
    "build_parser",
    "can_run_workers",
    "config_table",
    "is_loopback",
    "parse_config",
]

LogFormat = Literal["json", "console"]
TaskLoopChoice = Literal["server", "own"]
DEFAULT_GRAPHS = ("flow.demo:GRAPHS",)
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Count = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]


class ConfigError(Exception):
    """The configuration is invalid; the message is one line naming the setting."""


_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _graph_ref(text: str) -> str:
    module, sep, attr = text.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"{text!r} is not module:attr (e.g. flow.demo:GRAPHS)")
    return text


_SHARD = re.compile(r"^(\d+)/(\d+)$")


def _shard_ref(text: str) -> str:
    match = _SHARD.match(text.strip())
    if match is None or int(match.group(1)) >= int(match.group(2)):
        raise ValueError(f"{text!r} is not K/N with 0 <= K < N (e.g. 0/2)")
    return text.strip()


def _size(text: str) -> int:
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size (bytes, or with a K/M/G suffix: 1MiB)")
    unit = (match.group(2) or "").lower()[:1]
    return int(match.group(1)) * _SIZE_UNITS[unit]


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """Everything actorflowd needs to start. Times are seconds, sizes bytes.

    Each field's help line (``--help``, docs/configuration.md) is in its
    definition; ``runtime`` holds the runtime's settings, ``config_file`` the
    TOML file read, if any.
    """

    host: str = setting(
        "127.0.0.1",
        "address to listen on; a non-loopback address needs --tokens",
        metavar="ADDR",
    )
    port: Port = setting(8700, "TCP port", metavar="PORT")
    uds: Path | None = setting(
        None,
        "serve HTTP on this Unix socket (mode 0600) instead of --host/--port",
        metavar="PATH",
        shown="none (TCP)",
    )
    workers: Annotated[int, msgspec.Meta(ge=0)] = setting(
        0,
        "worker processes, each owning a shard of the sessions behind one front that "
        "relays requests by session id (1: one process, no front; 0: the count recorded "
        "in DATA_DIR, 1 on a single daemon's DATA_DIR, else one per available core)",
        shown="0 (cores)",
    )
    shard: str = setting(
        "",
        "the shard a worker of --workers N serves, K/N (set by the parent on its workers)",
        metavar="K/N",
        shown="none",
        parse=_shard_ref,
    )
    data_dir: Path = setting(
        Path("./var"), "data directory (sessions.db, admin.sock)", metavar="DIR", shown="./var"
    )
    graphs: tuple[str, ...] = setting(
        DEFAULT_GRAPHS,
        "graphs to serve, module:attr (a Graph or a list of Graphs); repeatable",
        metavar="MODULE:ATTR",
        parse=_graph_ref,
    )
    migrations: tuple[str, ...] = setting(
        (),
        "migrations between graph versions, module:attr (a Migration or a list of "
        "Migrations); repeatable",
        metavar="MODULE:ATTR",
        parse=_graph_ref,
    )
    default_graph: str | None = setting(
        None,
        "the graph POST /v1/execute creates sessions of",
        metavar="GRAPH",
        shown="the first graph",
    )
    tokens: Path | None = setting(
        None,
        "bearer tokens file, one 'token user [admin]' per line (mode 0600)",
        shown="none (one local user, loopback only)",
    )
    log_format: LogFormat = setting(
        "console",
        "json or console: log lines as JSON or for a console",
        metavar="FORMAT",
        shown="console on a TTY, else json",
    )
    max_inflight: Count = setting(10_000, "most steps in flight in the daemon; beyond it 503")
    max_body: Count = setting(
        1024 * 1024,
        "largest request body (bytes, or 512K, 1MiB); beyond it 413",
        metavar="SIZE",
        shown="1MiB",
        parse=_size,
    )
    tls_cert: Path | None = setting(None, "TLS certificate (PEM), with --tls-key")
    tls_key: Path | None = setting(None, "TLS private key (PEM), with --tls-cert")
    max_header_bytes: Count = setting(
        16 * 1024,
        "largest request line plus headers (bytes, or 16K); beyond it 431",
        metavar="SIZE",
        shown="16KiB",
        parse=_size,
    )
    max_connections: Annotated[int, msgspec.Meta(ge=0)] = setting(
        0, "most open HTTP connections (0: the fd limit less headroom)"
    )
    header_timeout: Seconds = setting(
        10.0, "seconds a client has to send a request's line and headers"
    )
    body_timeout: Seconds = setting(60.0, "seconds a client has to send a request's body")
    keepalive_timeout: Seconds = setting(5.0, "seconds an idle keep-alive connection stays open")
    drain_delay: Annotated[float, msgspec.Meta(ge=0)] = setting(
        0.0,
        "on SIGTERM, seconds to keep serving while /readyz answers 503, before draining: "
        "time for a load balancer's health checks to take the daemon out (0: drain at once)",
    )
    allowed_hosts: tuple[str, ...] = setting(
        (),
        "a name the Host header may carry; repeatable (none: the loopback names on a "
        "loopback address, any name otherwise)",
        metavar="NAME",
    )
    cors_origin: tuple[str, ...] = setting(
        (), "a browser origin allowed to call the API (*: any); repeatable", metavar="ORIGIN"
    )
    user_step_rate: Annotated[float, msgspec.Meta(ge=0)] = setting(
        20_000.0,
        "steps per second per user, bursts as large (0: no limit); beyond it 429",
        metavar="N",
    )
    forwarded_allow_ips: tuple[str, ...] = setting(
        (), "a proxy address whose X-Forwarded-For is trusted; repeatable", metavar="IP"
    )
    sse_heartbeat: Seconds = setting(
        15.0, "seconds between heartbeat comments on an idle event stream (SSE)"
    )
    task_loop: TaskLoopChoice = setting(
        "server",
        "where async tasks run: server (the daemon's event loop: streamed tokens go out "
        "without a hand-over between threads; a task that blocks stalls every request) "
        "or own (a loop thread of the runtime's own)",
        metavar="WHERE",
    )
    forward_timeout: Annotated[float, msgspec.Meta(ge=0)] = setting(
        0.0,
        "most seconds a request sent on to the daemon holding its session may take in all; "
        "then 503 (for a step: outcome-unknown)",
        shown="0 (step timeout + 2 x lease ttl)",
    )
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    config_file: Path | None = field(default=None, compare=False)


_DAEMON = settings_of(DaemonConfig)
_RUNTIME = settings_of(RuntimeConfig)
SETTINGS: tuple[Setting, ...] = _DAEMON + _RUNTIME
_BY_NAME = {item.name: item for item in SETTINGS}


def build_parser() -> argparse.ArgumentParser:
    """The ``actorflowd`` argument parser (its ``--help`` documents every setting)."""
    parser = argparse.ArgumentParser(
        prog="actorflowd",
        description="actorflow's HTTP daemon: serves graph sessions over HTTP.",
        epilog=(
            "Precedence: flags > environment (ACTORFLOW_<NAME>, e.g. ACTORFLOW_DATA_DIR; "
            "ACTORFLOW_GRAPHS is comma-separated) > TOML file (--config; keys like "
            "data_dir) > defaults. Without --tokens only a loopback --host is allowed."
        ),
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        default=None,
        help="TOML configuration file (env ACTORFLOW_CONFIG; default: none)",
    )
    for item in SETTINGS:
        parser.add_argument(
            item.flag,
            dest=item.name,
            metavar=item.metavar,
            action="append" if item.repeatable else "store",
            default=None,
            help=f"{item.help} (env {item.env}; default: {item.default_text})",
        )
    return parser


def config_table() -> str:
    """The settings table of docs/configuration.md, generated from the definitions."""
    rows = [
        "| flag | environment | default | meaning |",
        "|---|---|---|---|",
        "| `--config FILE` | `ACTORFLOW_CONFIG` | none | TOML file with any of the keys below |",
    ]
    for item in SETTINGS:
        rows.append(
            f"| `{item.flag} {item.metavar}` | `{item.env}` | {item.default_text} | {item.help} |"
        )
    return "\n".join(rows) + "\n"


def _value(item: Setting, raw: Any, source: str) -> Any:
    try:
        return convert(item, raw)
    except SettingError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in SETTINGS:
        raw = env.get(item.env)
        if raw is None or raw == "":
            continue
        value: Any = raw
        if item.repeatable:
            value = [part.strip() for part in raw.split(",") if part.strip()]
        values[item.name] = _value(item, value, f"environment {item.env}")
    return values


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"--config: file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"--config: {str(path)!r} is a directory, not a file") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"--config: cannot read {str(path)!r}: {exc}") from None
    values: dict[str, Any] = {}
    for key, raw in document.items():
        name = key.replace("-", "_")
        item = _BY_NAME.get(name)
        if item is None:
            raise ConfigError(f"{path}: unknown setting {key!r}")
        if isinstance(raw, list) and not item.repeatable:
            raise ConfigError(f"{path}: {key} takes one value, not a list")
        values[name] = _value(item, raw, f"{path}: {key}")
    return values


def _from_flags(namespace: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in SETTINGS:
        raw = getattr(namespace, item.name)
        if raw is not None:
            values[item.name] = _value(item, raw, item.flag)
    return values


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check(config: DaemonConfig) -> None:
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key must be given together")
    for name in ("tls_cert", "tls_key", "tokens"):
        path = getattr(config, name)
        flag = _BY_NAME[name].flag
        if path is None:
            continue
        if not path.exists():
            raise ConfigError(f"{flag}: file {str(path)!r} does not exist")
        if not path.is_file():
            raise ConfigError(f"{flag}: {str(path)!r} is not a file")
    if config.tokens is None and not is_loopback(config.host):
        raise ConfigError(
            f"--host {config.host} is not a loopback address: serving it without "
            "authentication is refused; pass --tokens FILE (or use --host 127.0.0.1)"
        )
    if config.workers > 1:
        _check_workers(config)
    if config.data_dir.exists() and not config.data_dir.is_dir():
        raise ConfigError(f"--data-dir: {str(config.data_dir)!r} is not a directory")


def _shared_store(store: str) -> bool:
    return store.startswith(("redis://", "rediss://", "postgres"))


def can_run_workers(config: DaemonConfig) -> bool:
    """Whether ``config`` may run several workers: on TCP, not a worker itself, and with
    SQLite per shard (no ``--store``) or a shared Redis/PostgreSQL store."""
    store = config.runtime.store or ""
    return not (config.uds or config.shard) and (not store or _shared_store(store))


def _check_workers(config: DaemonConfig) -> None:
    if config.uds is not None:
        raise ConfigError("--workers: the front listens on --host/--port; drop --uds")
    if config.shard:
        raise ConfigError("--shard is set by --workers on its workers; give one of them")
    store = config.runtime.store or ""
    if store and not _shared_store(store):
        raise ConfigError(
            f"--workers {config.workers} with --store {store}: workers share only a Redis "
            "or PostgreSQL store; without --store each keeps SQLite in DATA_DIR/shard-K"
        )


def _build(merged: dict[str, Any], config_file: Path | None) -> DaemonConfig:
    daemon = {item.name: merged[item.name] for item in _DAEMON if item.name in merged}
    runtime = {item.name: merged[item.name] for item in _RUNTIME if item.name in merged}
    config = DaemonConfig(**daemon, runtime=RuntimeConfig(**runtime), config_file=config_file)
    if not config.runtime.advertise:
        advertised = dataclasses.replace(
            config.runtime, advertise=f"http://{config.host}:{config.port}"
        )
        config = dataclasses.replace(config, runtime=advertised)
    return config


def parse_config(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    isatty: bool = False,
) -> DaemonConfig:
    """Build the configuration from flags, environment, TOML file and defaults.

    Args:
        argv: command-line arguments without the program name (default ``sys.argv[1:]``).
        env: the environment (default ``os.environ``).
        isatty: whether stdout is a terminal (picks the default log format).

    Raises:
        ConfigError: a value is invalid; the message names the setting.
        SystemExit: ``--help`` was given, or argparse rejected a flag (exit 2).
    """
    namespace = build_parser().parse_args(argv)
    environment = os.environ if env is None else env
    config_file: Path | None = namespace.config
    if config_file is None and environment.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(environment[ENV_PREFIX + "CONFIG"])
    merged: dict[str, Any] = {"log_format": "console" if isatty else "json"}
    if config_file is not None:
        merged.update(_from_toml(config_file))
    merged.update(_from_env(environment))
    merged.update(_from_flags(namespace))
    config = _build(merged, config_file)
    _check(config)
    return config
