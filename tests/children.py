"""A Python child process the tests can SIGKILL: the code given, on this tree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_child(code: str, *args: str) -> subprocess.Popen[str]:
    """Run ``code`` (``python -c``) with ``args`` on this tree; its stdout is a text pipe."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def kill(child: subprocess.Popen[str]) -> None:
    """SIGKILL ``child`` and reap it."""
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    if child.stdout is not None:
        child.stdout.close()
