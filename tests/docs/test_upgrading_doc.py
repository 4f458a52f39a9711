"""docs/upgrading.md's walkthrough, run as written, so that it cannot rot.

The ``python`` blocks after ``<!-- walkthrough -->`` comments run as one script in
a fresh interpreter; its output must be the block after ``<!-- walkthrough-output -->``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "upgrading.md").read_text()


def _blocks(marker: str) -> list[str]:
    return re.findall(rf"<!-- {marker} -->\s*```[a-z]*\n(.*?)```", DOC, re.DOTALL)


def test_the_upgrade_walkthrough_prints_what_the_doc_says(tmp_path: Path) -> None:
    script = tmp_path / "walkthrough.py"
    script.write_text("\n".join(_blocks("walkthrough")))
    [expected] = _blocks("walkthrough-output")
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected


def test_the_walkthrough_covers_each_step_of_an_upgrade() -> None:
    code = "\n".join(_blocks("walkthrough"))
    for needed in ("version=", "migrations=", "GraphVersionUnavailable", "update_session"):
        assert needed in code
