"""docs/client.md's first example, run as written against a real daemon."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from client_harness import Daemon

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "client.md").read_text()
DOC_URL = "http://127.0.0.1:8700"


def test_the_first_example_prints_what_the_doc_says(daemon: Daemon, tmp_path: Path) -> None:
    found = re.search(r"```python\n(.*?)```", DOC, re.DOTALL)
    assert found, "docs/client.md has no python block"
    script = tmp_path / "example.py"
    script.write_text(found[1].replace(DOC_URL, daemon.url))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "echo: hello waiting_for_input\n1\n"
