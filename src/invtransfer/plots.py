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


def labelled_grid_png(grid: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], *,
                      cell: tuple[int, int], pad: int = 2, title: str = "") -> bytes:
    """PNG bytes of an image grid (uint8 (H, W, 3): cells of ``cell`` = (height, width) pixels, each
    preceded by ``pad`` separator pixels above and to the left) with a label per row and column.

    The grid's pixels are drawn one to one (no resampling); the labels go in the margins."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = grid.shape[:2]
    dpi = 100
    left = max(len(s) for s in row_labels) * 6 + 12 if row_labels else 0
    top, bottom = 34 if title else 18, 4
    width = max(w + left + 4, len(title) * 5 + 8)  # room for the title (about 5 px a character at size 8)
    fig = plt.figure(figsize=(width / dpi, (h + top + bottom) / dpi), dpi=dpi)
    ax = fig.add_axes((left / width, bottom / (h + top + bottom), w / width, h / (h + top + bottom)))
    ax.imshow(grid, interpolation="nearest")
    ax.set_yticks([pad + r * (cell[0] + pad) + cell[0] / 2 for r in range(len(row_labels))], list(row_labels),
                  fontsize=8)
    ax.set_xticks([pad + c * (cell[1] + pad) + cell[1] / 2 for c in range(len(col_labels))], list(col_labels),
                  fontsize=7)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=8, y=1 - 4 / (h + top + bottom), va="top")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
