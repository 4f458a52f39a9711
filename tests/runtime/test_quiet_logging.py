"""Quiet by default: an in-process runtime whose host configured no logging prints nothing;
a host that enables ``logging`` gets actorflow's events as records with their fields."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_unconfigured_host_sees_nothing_and_logging_host_sees_records_with_fields(
    tmp_path: Path,
) -> None:
    child = Path(__file__).with_name("quiet_child.py")
    done = subprocess.run(
        [sys.executable, str(child), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("ACTORFLOW_")},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # while nothing was configured: stepping, a failing task, a passivation printed nothing
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert len(lines) == 1, lines[:5]
    records = json.loads(lines[0])
    by_event = {r["event"]: r for r in records}
    assert {"session_activated", "step_failed", "session_passivated"} <= set(by_event)
    failed = by_event["step_failed"]
    assert failed["level"] == "ERROR"
    assert failed["logger"] == "actorflow"
    assert failed["error"] == "TaskFailed"
    assert failed["message"].startswith(f"step_failed session_id={failed['session_id']} ")
    assert "ValueError: boom requested" in failed["traceback"]
    assert by_event["session_passivated"]["session_id"] == failed["session_id"]
    assert by_event["session_passivated"]["level"] == "DEBUG"
