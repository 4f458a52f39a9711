"""contrib/ files: the systemd unit verifies, the Prometheus example scrapes /metrics."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    unit = (ROOT / "contrib" / "actorflowd.service").read_text()
    assert "ExecStart=/opt/actorflow/.venv/bin/actorflowd" in unit
    # The unit names the install location; point it at a real executable so
    # that verify checks everything else.
    (tmp_path / "actorflowd.service").write_text(
        unit.replace("/opt/actorflow/.venv/bin/actorflowd", "/bin/true")
    )
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / "actorflowd.service")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    complaints = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "actorflowd.service" in line
    ]
    assert complaints == []


def test_prometheus_example_scrapes_the_daemon_metrics_path() -> None:
    text = (ROOT / "contrib" / "prometheus.yml").read_text()
    assert "metrics_path: /metrics" in text
    assert "127.0.0.1:8700" in text
