"""Plot helpers shared by the benchmarks: grouped bar charts as PNG files (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["grouped_bars"]


def grouped_bars(
    path: Path,
    *,
    title: str,
    ylabel: str,
    groups: Sequence[str],
    series: Mapping[str, Sequence[float]],
) -> Path:
    """Write a grouped bar chart: one group per entry of ``groups``, one bar per series.

    Args:
        path: the PNG to write (its directory is created).
        title: the chart's title.
        ylabel: the y axis label.
        groups: the x axis labels, e.g. ``["8 writers", "64 writers"]``.
        series: label → one value per group, e.g. ``{"group commit": [...], ...}``.

    Returns:
        ``path``.
    """
    try:
        import matplotlib
    except ImportError as exc:
        raise SystemExit(
            "matplotlib is missing: install the bench extra (pip install -e '.[bench]')"
        ) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(series), 1)
    for i, (label, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(xs, values, width, label=label)
        ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=8)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
