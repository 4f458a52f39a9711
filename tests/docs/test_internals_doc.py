"""docs/internals.md lists every module of flow/, actors/ and runtime/."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_module_is_in_the_module_map() -> None:
    doc = (ROOT / "docs" / "internals.md").read_text()
    modules = sorted(
        str(path.relative_to(ROOT))
        for package in ("flow", "actors", "runtime")
        for path in (ROOT / package).rglob("*.py")
    )
    assert len(modules) > 40
    missing = [module for module in modules if f"`{module}`" not in doc]
    assert missing == []
