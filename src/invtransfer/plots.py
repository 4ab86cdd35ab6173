"""Plots of per-class quantities against training class size (log x), shared by runs and reports."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def plot_against_class_size(series: dict[str, Sequence[tuple[float, float]]], path: str, *, ylabel: str,
                            title: str, mean_line: bool = False) -> None:
    """One colour per series: its (class size, value) points; with ``mean_line`` also the line
    through the mean value of each class size (several runs of a method on one profile)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, (label, pts) in enumerate(series.items()):
        pts = [(n, v) for n, v in pts if v is not None]
        if not pts:
            continue
        colour = f"C{i % 10}"
        ax.scatter(*zip(*pts), s=12, alpha=0.4 if mean_line else 0.8, color=colour, label=None if mean_line else label)
        if mean_line:
            sizes = sorted({n for n, _ in pts})
            ax.plot(sizes, [float(np.mean([v for n2, v in pts if n2 == n])) for n in sizes], color=colour, lw=1.2,
                    label=label)
    ax.set(xscale="log", xlabel="training images in class", ylabel=ylabel, title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
