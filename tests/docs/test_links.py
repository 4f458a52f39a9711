"""The docs link only to files that a clone has, by relative path."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_every_relative_link_in_the_docs_resolves() -> None:
    broken = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert broken == []


def test_the_docs_name_no_path_of_the_machine_that_wrote_them() -> None:
    machine_paths = re.compile(r"(?<![\w.])/(?:work|home|Users|tmp/pytest)[/\w.-]*")
    found = [
        f"{doc.relative_to(ROOT)}: {match}"
        for doc in DOCS
        for match in machine_paths.findall(doc.read_text())
    ]
    assert found == []
    assert "bench/out/" not in (ROOT / "docs" / "benchmarks.md").read_text()
