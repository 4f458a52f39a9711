"""``python -m runtime.cli`` runs the same command as the ``actorflow`` script."""

from __future__ import annotations

import subprocess
import sys


def test_python_dash_m_runtime_cli_prints_usage_and_fails_on_bad_usage() -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0
    assert "usage: actorflow" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "no-such-command"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
