"""docs/configuration.md holds the settings table generated from their definitions."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

from runtime import RuntimeConfig
from runtime.daemon._config import config_table

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "configuration.md").read_text()


def test_the_documented_settings_table_is_the_generated_one() -> None:
    table = config_table()
    assert table in DOC, (
        "docs/configuration.md's actorflowd table is stale; it should be:\n" + table
    )


def test_help_shows_the_same_defaults_as_the_docs() -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "runtime", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    flat = " ".join(help_text.split())
    rows = re.findall(r"^\| `(--[a-z-]+) [^`]*` \| `(\w+)` \| ([^|]+) \|", DOC, re.MULTILINE)
    assert len(rows) > 25
    for flag, env, default in rows:
        if flag == "--config":
            continue
        assert f"(env {env}; default: {default.strip()})" in flat, flag


def test_every_runtime_config_field_is_a_daemon_setting() -> None:
    names = [f.name for f in dataclasses.fields(RuntimeConfig) if f.name != "clock"]
    missing = [name for name in names if f"`--{name.replace('_', '-')} " not in DOC]
    assert missing == []


def test_every_runtime_config_field_is_documented() -> None:
    names = [f.name for f in dataclasses.fields(RuntimeConfig)]
    missing = [name for name in names if f"| `{name}` |" not in DOC]
    assert missing == []
