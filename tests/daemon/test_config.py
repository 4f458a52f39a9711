"""actorflowd's configuration: precedence, validation, --help and the loopback rule."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import ROOT, daemon_env, write_tokens

from runtime import RuntimeConfig
from runtime.daemon._config import ConfigError, DaemonConfig, parse_config
from runtime.daemon._graphs import load_graphs, pick_default_graph


def test_defaults_are_the_documented_ones() -> None:
    config = parse_config([], env={})
    assert config.host == "127.0.0.1"
    assert config.port == 8700
    assert config.data_dir == Path("./var")
    assert config.graphs == ("flow.demo:GRAPHS",)
    assert config.max_inflight == 10_000
    assert config.max_body == 1024 * 1024
    assert config.runtime.durability == "fsync"
    assert config.log_format == "json"
    assert parse_config([], env={}, isatty=True).log_format == "console"


def test_flags_beat_environment_which_beats_toml(tmp_path: Path) -> None:
    toml = tmp_path / "actorflowd.toml"
    toml.write_text(
        'port = 9001\nidle_timeout = 5\nmax-live = 7\ngraphs = ["flow.demo:echo"]\n'
        'durability = "commit"\n'
    )
    env = {"ACTORFLOW_PORT": "9002", "ACTORFLOW_IDLE_TIMEOUT": "6"}
    config = parse_config(["--config", str(toml), "--port", "9003"], env=env)
    assert config.port == 9003  # flag
    assert config.runtime.idle_timeout == 6.0  # environment over TOML
    assert config.runtime.max_live == 7  # TOML over default
    assert config.graphs == ("flow.demo:echo",)
    assert config.runtime.durability == "commit"
    assert config.config_file == toml


def test_graphs_repeat_as_flags_and_split_on_commas_in_the_environment() -> None:
    flags = parse_config(["--graphs", "a:b", "--graphs", "c:d"], env={})
    assert flags.graphs == ("a:b", "c:d")
    env = parse_config([], env={"ACTORFLOW_GRAPHS": "a:b, c:d"})
    assert env.graphs == ("a:b", "c:d")


def test_sizes_accept_suffixes() -> None:
    assert parse_config(["--max-body", "512K"], env={}).max_body == 512 * 1024
    assert parse_config(["--max-body", "2MiB"], env={}).max_body == 2 * 1024 * 1024
    assert parse_config(["--max-body", "100"], env={}).max_body == 100


def test_a_drain_delay_of_zero_drains_at_once_and_any_other_is_seconds() -> None:
    assert parse_config([], env={}).drain_delay == 0
    assert parse_config(["--drain-delay", "0"], env={}).drain_delay == 0
    assert parse_config([], env={"ACTORFLOW_DRAIN_DELAY": "2.5"}).drain_delay == 2.5


@pytest.mark.parametrize(
    ("argv", "env", "fragment"),
    [
        (["--port", "70000"], {}, "--port"),
        (["--max-inflight", "0"], {}, "--max-inflight"),
        (["--drain-delay", "-1"], {}, "--drain-delay"),
        (["--durability", "maybe"], {}, "--durability"),
        (["--log-format", "xml"], {}, "--log-format"),
        (["--graphs", "no-colon"], {}, "--graphs"),
        (["--max-body", "lots"], {}, "--max-body"),
        ([], {"ACTORFLOW_IDLE_TIMEOUT": "-1"}, "ACTORFLOW_IDLE_TIMEOUT"),
        (["--tls-cert", "/nonexistent.pem"], {}, "--tls-key"),
        (["--tokens", "/nonexistent/tokens"], {}, "--tokens"),
        (["--host", "0.0.0.0"], {}, "not a loopback address"),
        (["--config", "/nonexistent.toml"], {}, "--config"),
    ],
)
def test_invalid_settings_raise_a_message_naming_them(
    argv: list[str], env: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_config(argv, env=env)


def test_unknown_toml_key_is_an_error(tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'prot'"):
        parse_config(["--config", str(toml)], env={})


def test_non_loopback_host_is_allowed_with_tokens(tmp_path: Path) -> None:
    tokens = write_tokens(tmp_path / "tokens", {"t": "u"})
    config = parse_config(["--host", "0.0.0.0", "--tokens", str(tokens)], env={})
    assert config.host == "0.0.0.0"
    assert isinstance(config, DaemonConfig)


def _run_daemon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime", *args],
        cwd=ROOT,
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_help_shows_every_flag_with_its_default() -> None:
    result = _run_daemon("--help")
    assert result.returncode == 0
    for flag in (
        "--host", "--port", "--data-dir", "--graphs", "--tokens", "--durability",
        "--idle-timeout", "--max-live", "--session-ttl", "--log-format", "--max-inflight",
        "--max-body", "--drain-timeout", "--tls-cert", "--tls-key", "--store", "--advertise",
        "--default-graph", "--config",
    ):  # fmt: skip
        assert flag in result.stdout, flag
    assert "ACTORFLOW_DATA_DIR" in result.stdout
    assert "8700" in result.stdout
    assert "127.0.0.1" in result.stdout


def test_non_loopback_host_without_tokens_exits_2_with_one_line() -> None:
    result = _run_daemon("--host", "0.0.0.0", "--port", "1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "not a loopback address" in lines[0]
    assert lines[0].startswith("actorflowd: error:")


def test_unimportable_graph_exits_2(tmp_path: Path) -> None:
    result = _run_daemon("--graphs", "no_such_module_here:GRAPHS", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "no_such_module_here" in result.stderr


def test_default_graph_must_be_served(tmp_path: Path) -> None:
    result = _run_daemon("--default-graph", "nope", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "--default-graph 'nope'" in result.stderr


def test_graph_refs_load_one_graph_or_a_list() -> None:
    assert [g.id for g in load_graphs(["flow.demo:echo"])] == ["echo"]
    assert [g.id for g in load_graphs(["flow.demo:GRAPHS"])] == ["echo", "support", "storyteller"]
    assert pick_default_graph(load_graphs(["flow.demo:GRAPHS"]), None) == "echo"
    assert pick_default_graph(load_graphs(["flow.demo:GRAPHS"]), "support") == "support"


@pytest.mark.parametrize(
    ("refs", "fragment"),
    [
        (["flow.demo:GRAPHS", "flow.demo:echo"], "graph id 'echo' is also served"),
        (["flow.demo:Echo"], "expected a Graph or a non-empty list of Graphs"),
        (["flow.demo:missing"], "has no 'missing'"),
        (["flow.nowhere:GRAPHS"], "cannot import 'flow.nowhere'"),
    ],
)
def test_bad_graph_refs_are_config_errors(refs: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_graphs(refs)


def test_every_runtime_config_field_is_settable_by_flag_env_and_toml(tmp_path: Path) -> None:
    values = {
        "idle_timeout": 11.0, "wait_timeout": 12.0, "max_live": 13, "session_ttl": 14.0,
        "max_pending": 15, "step_timeout": 16.0, "max_restarts": 0, "restart_window": 18.0,
        "dispatcher_threads": 2, "task_threads": 3, "durability": "commit", "max_chain": 21,
        "sweep_interval": 0.5, "sweep_batch": 23, "drain_timeout": 24.0,
        "store": "memory://", "lease_ttl": 26.0, "node_id": "n1", "advertise": "http://h:1",
        "history_retention": "7d", "max_session_bytes": 1_000_000, "max_sessions_per_user": 27,
        "stream_buffer": 28,
        "timer_fire_rate": 28, "timer_poll_interval": 2.5, "hibernate_after": 29.0,
        "max_tails_per_session": 30, "max_tails": 31,
    }  # fmt: skip
    names = {f.name for f in dataclasses.fields(RuntimeConfig)} - {"clock"}
    assert set(values) == names
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        by_flag = parse_config([flag, str(value)], env={})
        by_env = parse_config([], env={"ACTORFLOW_" + name.upper(): str(value)})
        toml = tmp_path / f"{name}.toml"
        toml.write_text(f"{name} = {json.dumps(value)}\n")
        by_toml = parse_config(["--config", str(toml)], env={})
        for config in (by_flag, by_env, by_toml):
            assert getattr(config.runtime, name) == value, (name, config.runtime)


APP = """
from flow import FunctionTask, GraphBuilder, TaskResult

GRAPHS = [GraphBuilder("{name}").add_task(FunctionTask("t", lambda ctx: TaskResult())).build()]
"""


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An app's own folder as the working directory; its modules are forgotten after."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_graphs_load_from_the_working_directory(app_dir: Path) -> None:
    (app_dir / "supportapp_cwd.py").write_text(APP.format(name="mine"))
    assert [g.id for g in load_graphs(["supportapp_cwd:GRAPHS"])] == ["mine"]


def test_a_failing_import_inside_the_users_module_names_its_file_and_line(app_dir: Path) -> None:
    app = app_dir / "supportapp_broken.py"
    app.write_text("import os\n\nimport not_installed_anywhere\n" + APP.format(name="x"))
    with pytest.raises(ConfigError) as info:
        load_graphs(["supportapp_broken:GRAPHS"])
    assert f"{app}:3: ModuleNotFoundError" in str(info.value)
    assert "not_installed_anywhere" in str(info.value)


def test_a_syntax_error_in_the_users_module_names_its_file_and_line(app_dir: Path) -> None:
    app = app_dir / "supportapp_syntax.py"
    app.write_text("x = 1\ndef broken(:\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(app))}:2: SyntaxError"):
        load_graphs(["supportapp_syntax:GRAPHS"])
