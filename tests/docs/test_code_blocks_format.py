"""Every Python block of README and docs is as ``ruff format`` writes it.

bin/test runs only ``ruff check`` on the code; this keeps the docs to the same format.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [
    pytest.param(block, id=f"{path.name}-{n}")
    for path in FILES
    for n, block in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(), re.S))
]


def _ruff() -> str:
    found = shutil.which("ruff", path=str(Path(sys.executable).parent))
    assert found is not None, "ruff is in the dev extra: ./bin/test installs it"
    return found


def test_the_docs_hold_python_blocks() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("block", BLOCKS)
def test_a_docs_python_block_is_ruff_formatted(block: str) -> None:
    checked = subprocess.run(
        [_ruff(), "format", "--diff", "--stdin-filename", "block.py", "-"],
        input=block,
        text=True,
        capture_output=True,
        cwd=ROOT,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
