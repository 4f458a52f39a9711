"""bin/actorflow: installs into .venv when pyproject.toml changes, then execs the command."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FAKE_PYTHON = """#!/usr/bin/env bash
echo "python $*" >> "$(dirname "$0")/../calls.log"
if [ "$1 $2 $3" = "-m pip install" ]; then
    printf '#!/usr/bin/env bash\\necho "actorflow ran with: $*"\\n' > "$(dirname "$0")/actorflow"
    chmod +x "$(dirname "$0")/actorflow"
fi
"""


def _fake_checkout(tmp_path: Path) -> Path:
    """A checkout whose .venv's python only records how it was called."""
    root = tmp_path / "checkout"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(ROOT / "bin" / "actorflow", root / "bin" / "actorflow")
    (root / "pyproject.toml").write_text('[project]\nname = "x"\n')
    venv_bin = root / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text(FAKE_PYTHON)
    (venv_bin / "python").chmod(0o755)
    return root


def _run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(root / "bin" / "actorflow"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=root,
    )


def _installs(root: Path) -> int:
    log = root / ".venv" / "calls.log"
    calls = log.read_text().splitlines() if log.exists() else []
    return sum(1 for call in calls if call.startswith("python -m pip install --quiet -e"))


def test_installs_once_per_pyproject_and_passes_arguments_through(tmp_path: Path) -> None:
    root = _fake_checkout(tmp_path)
    first = _run(root, "admin", "ls", "--data-dir", "my var")
    assert first.returncode == 0, first.stderr
    assert first.stdout == "actorflow ran with: admin ls --data-dir my var\n"
    assert _installs(root) == 1
    stamp = (root / ".venv" / ".installed-hash").read_text().strip()
    assert stamp == hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()

    assert _run(root, "shell").returncode == 0
    assert _installs(root) == 1

    (root / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "2"\n')
    assert _run(root, "sessions", "ls").stdout == "actorflow ran with: sessions ls\n"
    assert _installs(root) == 2
