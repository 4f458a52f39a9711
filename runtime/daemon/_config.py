"""actorflowd's configuration: flags > environment (``ACTORFLOW_*``) > TOML file > defaults.

Every setting has one name. The flag is ``--name-with-dashes``, the environment
variable ``ACTORFLOW_NAME_WITH_UNDERSCORES`` and the TOML key ``name_with_underscores``
(dashes are accepted too). ``--graphs`` is repeatable; in the environment it is a
comma-separated list and in TOML a list of strings.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from flow._errors import InvalidInput
from flow.stores._log import LogPolicy

__all__ = ["ConfigError", "DaemonConfig", "LogFormat", "is_loopback", "parse_config"]

LogFormat = Literal["json", "console"]
DurabilityName = Literal["fsync", "commit", "passivate"]
ENV_PREFIX = "ACTORFLOW_"
DEFAULT_GRAPHS = ("flow.demo:GRAPHS",)


class ConfigError(Exception):
    """The configuration is invalid; the message is one line naming the setting."""


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """Everything actorflowd needs to start. Times are seconds, sizes bytes.

    Attributes:
        host: address to listen on.
        port: TCP port to listen on.
        data_dir: where sessions.db and admin.sock live.
        graphs: ``module:attr`` references; attr is a Graph or a list of Graphs.
        migrations: ``module:attr`` references; attr is a Migration or a list of them.
        tokens: the bearer tokens file (``token user`` per line), or None for one
            local user (loopback only).
        durability: ``fsync``, ``commit`` or ``passivate``.
        idle_timeout: passivate sessions idle this long.
        max_live: most live session actors.
        session_ttl: sessions expire this long after their last use.
        step_timeout: a step's deadline; past it 504.
        max_pending: per-session mailbox bound; beyond it 429.
        log_format: ``json`` or ``console``.
        max_inflight: most steps in flight in the whole daemon; beyond it 503.
        max_body: largest accepted request body; beyond it 413.
        drain_timeout: how long SIGTERM waits for running steps.
        tls_cert: TLS certificate file (with ``tls_key``), or None for plain HTTP.
        tls_key: TLS private key file, or None.
        store: the store URL, or None for SQLite at ``data_dir/sessions.db``.
        advertise: the base URL other daemons reach this one at (default
            ``http://HOST:PORT``).
        lease_ttl: with a Redis store, a session lease's lifetime: a dead
            daemon's sessions move to another after at most this long.
        node_id: this daemon's id in a cluster (generated at start when empty).
        default_graph: the graph ``/v1/execute`` creates sessions of (None: the first).
        history_retention: how far back time travel reaches (revisions, an age or ``all``).
        max_header_bytes: largest request line plus headers; beyond it 431.
        max_connections: most open HTTP connections (0: the fd limit less headroom).
        header_timeout: seconds a client has to send a request's line and headers.
        body_timeout: seconds a client has to send a request's body.
        keepalive_timeout: seconds an idle keep-alive connection stays open.
        allowed_hosts: names a ``Host`` header may carry (empty: the loopback names
            on a loopback address, any name otherwise).
        cors_origin: browser origins allowed to call the API ("*": any).
        user_step_rate: steps per second per user (bursts as large); beyond it 429.
        forwarded_allow_ips: proxies whose ``X-Forwarded-For`` is trusted (none by default).
        config_file: the TOML file read, if any.
    """

    host: str = "127.0.0.1"
    port: int = 8700
    data_dir: Path = Path("./var")
    graphs: tuple[str, ...] = DEFAULT_GRAPHS
    migrations: tuple[str, ...] = ()
    tokens: Path | None = None
    durability: DurabilityName = "fsync"
    idle_timeout: float = 300.0
    max_live: int = 100_000
    session_ttl: float = 7 * 24 * 3600.0
    step_timeout: float = 300.0
    max_pending: int = 64
    log_format: LogFormat = "console"
    max_inflight: int = 10_000
    max_body: int = 1024 * 1024
    drain_timeout: float = 30.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    store: str | None = None
    advertise: str = ""
    lease_ttl: float = 10.0
    node_id: str = ""
    default_graph: str | None = None
    history_retention: str = "1000"
    max_header_bytes: int = 16 * 1024
    max_connections: int = 0
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    keepalive_timeout: float = 5.0
    allowed_hosts: tuple[str, ...] = ()
    cors_origin: tuple[str, ...] = ()
    user_step_rate: float = 20_000.0
    forwarded_allow_ips: tuple[str, ...] = ()
    config_file: Path | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class _Option:
    name: str
    parse: Callable[[str], Any]
    help: str
    metavar: str
    repeatable: bool = False


_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _size(text: str) -> int:
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size (bytes, or with a K/M/G suffix: 1MiB)")
    unit = (match.group(2) or "").lower()[:1]
    return int(match.group(1)) * _SIZE_UNITS[unit]


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"{text!r} must be a positive number of seconds")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"{text!r} must be a positive integer")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"{text!r} must be 0 or a positive integer")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError(f"{text!r} must be 0 (unlimited) or a positive number")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise ValueError(f"{text!r} is not a TCP port (1-65535)")
    return value


def _graph_ref(text: str) -> str:
    module, sep, attr = text.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"{text!r} is not module:attr (e.g. flow.demo:GRAPHS)")
    return text


def _choice(allowed: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"{text!r} is not one of {', '.join(allowed)}")
        return text

    return parse


def _text(text: str) -> str:
    return text


def _retention(text: str) -> str:
    try:
        LogPolicy.parse(text)
    except InvalidInput as exc:
        raise ValueError(str(exc)) from None
    return text.strip().lower()


_OPTIONS: tuple[_Option, ...] = (
    _Option("host", _text, "address to listen on", "ADDR"),
    _Option("port", _port, "TCP port", "PORT"),
    _Option("data_dir", Path, "data directory (sessions.db, admin.sock)", "DIR"),
    _Option(
        "graphs",
        _graph_ref,
        "graphs to serve, module:attr (a Graph or a list of Graphs); repeatable",
        "MODULE:ATTR",
        repeatable=True,
    ),
    _Option(
        "migrations",
        _graph_ref,
        "migrations between graph versions, module:attr (a Migration or a list); repeatable",
        "MODULE:ATTR",
        repeatable=True,
    ),
    _Option("tokens", Path, "bearer tokens file, one 'token user' per line (mode 0600)", "FILE"),
    _Option(
        "durability",
        _choice(get_args(DurabilityName)),
        "when a step is acknowledged: after an fsynced commit, after a commit, or "
        "only on passivation",
        "|".join(get_args(DurabilityName)),
    ),
    _Option("idle_timeout", _positive_float, "passivate sessions idle this many seconds", "SECS"),
    _Option("max_live", _positive_int, "most live session actors", "N"),
    _Option("session_ttl", _positive_float, "seconds a session lives after its last use", "SECS"),
    _Option("step_timeout", _positive_float, "a step's deadline in seconds; past it 504", "SECS"),
    _Option("max_pending", _positive_int, "per-session queue bound; beyond it 429", "N"),
    _Option(
        "log_format",
        _choice(get_args(LogFormat)),
        "log lines as JSON or for a console",
        "|".join(get_args(LogFormat)),
    ),
    _Option("max_inflight", _positive_int, "most steps in flight; beyond it 503", "N"),
    _Option(
        "max_body", _size, "largest request body (bytes, or 512K, 1MiB); beyond it 413", "SIZE"
    ),
    _Option("drain_timeout", _positive_float, "seconds SIGTERM waits for running steps", "SECS"),
    _Option("tls_cert", Path, "TLS certificate (PEM), with --tls-key", "FILE"),
    _Option("tls_key", Path, "TLS private key (PEM), with --tls-cert", "FILE"),
    _Option("store", _text, "store URL: sqlite:///path, memory://, redis://host:port/db", "URL"),
    _Option("advertise", _text, "base URL other daemons reach this one at", "URL"),
    _Option("lease_ttl", _positive_float, "Redis session lease lifetime in seconds", "SECS"),
    _Option("node_id", _text, "this daemon's id in a cluster", "ID"),
    _Option("default_graph", _text, "graph /v1/execute creates sessions of", "GRAPH"),
    _Option(
        "history_retention",
        _retention,
        "how far back time travel reaches: revisions (1000), an age (90s, 30m, 12h, 7d) or all",
        "N|AGE|all",
    ),
    _Option("max_header_bytes", _size, "largest request line plus headers; beyond it 431", "SIZE"),
    _Option("max_connections", _count, "most open connections (0: fd limit less headroom)", "N"),
    _Option("header_timeout", _positive_float, "seconds to send a request's headers", "SECS"),
    _Option("body_timeout", _positive_float, "seconds to send a request's body", "SECS"),
    _Option("keepalive_timeout", _positive_float, "seconds an idle connection stays", "SECS"),
    _Option(
        "allowed_hosts",
        _text,
        "a name the Host header may carry; repeatable",
        "NAME",
        repeatable=True,
    ),
    _Option(
        "cors_origin",
        _text,
        "a browser origin allowed to call the API; repeatable",
        "ORIGIN",
        repeatable=True,
    ),
    _Option("user_step_rate", _rate, "steps per second per user (0: no limit); beyond 429", "N"),
    _Option(
        "forwarded_allow_ips",
        _text,
        "a proxy address whose X-Forwarded-For is trusted; repeatable",
        "IP",
        repeatable=True,
    ),
)
_BY_NAME = {option.name: option for option in _OPTIONS}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default_text(name: str) -> str:
    if name == "log_format":
        return "console on a TTY, else json"
    if name == "default_graph":
        return "the first graph"
    if name == "store":
        return "SQLite at DATA_DIR/sessions.db"
    if name == "max_body":
        return "1MiB"
    if name == "data_dir":
        return "./var"
    value = getattr(DaemonConfig(), name)
    if value is None or value == "" or value == ():
        return "none"
    if isinstance(value, tuple):
        return " ".join(value) or "none"
    return str(value)


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
    for option in _OPTIONS:
        env = ENV_PREFIX + option.name.upper()
        parser.add_argument(
            _flag(option.name),
            dest=option.name,
            metavar=option.metavar,
            action="append" if option.repeatable else "store",
            default=None,
            help=f"{option.help} (env {env}; default: {_default_text(option.name)})",
        )
    return parser


def _parse_value(option: _Option, raw: Any, source: str) -> Any:
    try:
        if option.repeatable:
            items = raw if isinstance(raw, list) else [raw]
            values = tuple(option.parse(str(item)) for item in items)
            if not values:
                raise ValueError("needs at least one value")
            return values
        if isinstance(raw, bool | list | dict):
            raise ValueError(f"{raw!r} is not a single value")
        return option.parse(str(raw))
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for option in _OPTIONS:
        name = ENV_PREFIX + option.name.upper()
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        if option.repeatable:
            items: Any = [item.strip() for item in raw.split(",") if item.strip()]
        else:
            items = raw
        values[option.name] = _parse_value(option, items, f"environment {name}")
    return values


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"--config: file {str(path)!r} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"--config: cannot read {str(path)!r}: {exc}") from None
    values: dict[str, Any] = {}
    for key, raw in document.items():
        name = key.replace("-", "_")
        option = _BY_NAME.get(name)
        if option is None:
            raise ConfigError(f"{path}: unknown setting {key!r}")
        if isinstance(raw, list) and not option.repeatable:
            raise ConfigError(f"{path}: {key} takes one value, not a list")
        values[name] = _parse_value(option, raw, f"{path}: {key}")
    return values


def _from_flags(namespace: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for option in _OPTIONS:
        raw = getattr(namespace, option.name)
        if raw is not None:
            values[option.name] = _parse_value(option, raw, _flag(option.name))
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
        if path is not None and not path.is_file():
            raise ConfigError(f"{_flag(name)}: file {str(path)!r} does not exist")
    if config.tokens is None and not is_loopback(config.host):
        raise ConfigError(
            f"--host {config.host} is not a loopback address: serving it without "
            "authentication is refused; pass --tokens FILE (or use --host 127.0.0.1)"
        )
    if config.data_dir.exists() and not config.data_dir.is_dir():
        raise ConfigError(f"--data-dir: {str(config.data_dir)!r} is not a directory")


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
    known = {f.name for f in fields(DaemonConfig)}
    config = DaemonConfig(
        **{k: v for k, v in merged.items() if k in known}, config_file=config_file
    )
    _check(config)
    return config
