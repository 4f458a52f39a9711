"""docs/benchmarks.md: one generated section per benchmark of ./bin/bench, and a re-run of
some benchmarks (``--only``) keeps the others' sections and the hand-written part."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_page_has_one_generated_section_per_benchmark_in_order() -> None:
    report = _report()
    generated, marker, _ = (ROOT / "docs" / "benchmarks.md").read_text().partition(report.KEEP)
    assert marker
    headings = re.findall(r"^## ([\w-]+): ", generated, re.MULTILINE)
    assert headings == [name for name, _, _ in report.BENCHES]


def test_a_partial_run_replaces_only_its_sections() -> None:
    report = _report()
    names = [name for name, _, _ in report.BENCHES]
    old = report.page("old machine", {}, report.KEEP + "\n\n## By hand\n\nkept as written\n")
    first, second = names[0], names[1]
    rerun = report.section(
        second, "bench/x.py", "X", ["one figure: 2x", "plot: bench/out/x.png"], "run now"
    )
    new = report.page("new machine", {second: rerun}, old)
    generated, _, kept = new.partition(report.KEEP)
    sections = report.sections_of(generated)
    assert list(sections) == names
    assert sections[first] == report.sections_of(old.partition(report.KEEP)[0])[first]
    assert "| one figure: 2x |" in sections[second]
    assert "| plot: [x.png](benchmarks/x.png) |" in sections[second]
    assert "![x](benchmarks/x.png)" in sections[second]
    assert kept == "\n\n## By hand\n\nkept as written\n"
    assert "Machine: new machine." in generated
