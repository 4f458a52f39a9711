"""docs/configuration.md names every daemon flag and every RuntimeConfig field."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

from runtime import RuntimeConfig

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "configuration.md").read_text()


def test_every_actorflowd_flag_and_env_var_is_documented() -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "runtime", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    flags = set(re.findall(r"(--[a-z][a-z0-9-]+)", help_text)) - {"--help"}
    assert len(flags) > 15
    missing = sorted(f for f in flags if f"`{f}" not in DOC)
    assert missing == []
    for flag in flags - {"--config"}:
        env = "ACTORFLOW_" + flag[2:].replace("-", "_").upper()
        assert f"`{env}`" in DOC, env


def test_every_runtime_config_field_is_documented() -> None:
    names = [f.name for f in dataclasses.fields(RuntimeConfig)]
    missing = [name for name in names if f"| `{name}` |" not in DOC]
    assert missing == []
