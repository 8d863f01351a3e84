"""Plots in the style of the paper's figures: accuracy vs % of training data, and vs model size."""
from __future__ import annotations

import io
import os
from typing import Mapping, Optional, Sequence, Tuple

from dsbs_jax.data import fs
from dsbs_jax.experiments.results import METHOD_LABELS, aggregate

SIZE_ORDER = ("tiny", "mini", "small", "base", "large", "xl", "xxl")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_data_size(runs: Sequence[Mapping], path: str, title: str = "", size: Optional[str] = None,
                   baseline: Optional[Tuple[str, float]] = None) -> str:
    """Accuracy (mean ± std over seeds, as error bars) against % of training data, one line per method.

    `baseline` = (label, accuracy %) draws a dashed horizontal line, e.g. a constant guess's accuracy.
    """
    plt = _pyplot()
    table = aggregate(runs)
    size = size or sorted({k[1] for k in table})[0]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for method in sorted({k[0] for k in table if k[1] == size}, key=lambda m: list(METHOD_LABELS).index(m)
                         if m in METHOD_LABELS else 99):
        points = sorted((f, v) for (m, s, f), v in table.items() if m == method and s == size)
        xs = [f for f, _ in points]
        ax.errorbar(xs, [v["mean"] for _, v in points], yerr=[v["std"] for _, v in points], marker="o", capsize=3,
                    label=METHOD_LABELS.get(method, method))
    if baseline is not None:
        ax.axhline(baseline[1], color="gray", linestyle="--", linewidth=1, label=baseline[0])
    return _save(plt, fig, ax, path, "% of training data", title or f"Accuracy vs training data ({size})")


def plot_model_size(runs: Sequence[Mapping], path: str, title: str = "",
                    baseline: Optional[Tuple[str, float]] = None) -> str:
    """Accuracy against model size at the largest data fraction, one line per method (`baseline` as above)."""
    plt = _pyplot()
    table = aggregate(runs)
    fraction = max(k[2] for k in table)
    sizes = sorted({k[1] for k in table}, key=lambda s: SIZE_ORDER.index(s) if s in SIZE_ORDER else 99)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for method in sorted({k[0] for k in table}):
        ys = [table.get((method, s, fraction), {}).get("mean", float("nan")) for s in sizes]
        ax.plot(sizes, ys, marker="o", label=METHOD_LABELS.get(method, method))
    if baseline is not None:
        ax.axhline(baseline[1], color="gray", linestyle="--", linewidth=1, label=baseline[0])
    return _save(plt, fig, ax, path, "model size", title or f"Accuracy vs model size ({fraction:g} % data)")


def _save(plt, fig, ax, path: str, xlabel: str, title: str) -> str:
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    if fs.is_url(path):  # a grid in gs://: matplotlib writes local files only
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        with fs.GFile(path, "wb") as f:
            f.write(buffer.getvalue())
    else:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fig.savefig(path)
    plt.close(fig)
    return path
