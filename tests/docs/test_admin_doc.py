"""docs/admin.md names every key the admin socket's ``stats`` answers."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from runtime import RuntimeStats

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "admin.md").read_text()


def test_every_stats_key_is_documented() -> None:
    row = next(line for line in DOC.splitlines() if line.startswith("| `stats` |"))
    documented = set(re.findall(r'"(\w+)"', row))
    assert documented == {field.name for field in dataclasses.fields(RuntimeStats)}
