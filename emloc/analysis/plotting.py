"""Shared drawing vocabulary of the analysis figures: style, error bars over demo seeds, bands, titles, legends.

matplotlib's object API only (no pyplot state); it draws nothing by itself and reads no files.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from emloc.analysis.frame import Sweep, t975

STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 9.5,
    "figure.titlesize": 13,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "savefig.facecolor": "white",
}
ERR_TEXT = {"minmax": "min–max over seeds", "ci95": "95 % CI of the mean", "std": "± 1 std"}
SPREAD_TEXT = {"minmax": "max − min", "ci95": "95 % CI half-width", "std": "std"}
MARKERS = "osD^vP*Xh<>"
KIND_COLOURS = {"template": "#7f7f7f", "image": "#2ca02c", "question": "#1f77b4", "answer": "#d62728"}


@contextmanager
def style():
    with matplotlib.rc_context(STYLE):
        yield


def save(fig: Figure, path) -> None:
    with style():
        fig.savefig(path, dpi=150, bbox_inches="tight")


def yerr(agg: pd.DataFrame, m: str, err: str, scale: float = 1.0) -> np.ndarray:
    mean = agg[f"{m}_mean"].to_numpy(float)
    if err == "minmax":
        lo, hi = mean - agg[f"{m}_min"].to_numpy(float), agg[f"{m}_max"].to_numpy(float) - mean
    elif err == "ci95":
        lo, hi = mean - agg[f"{m}_ci_low"].to_numpy(float), agg[f"{m}_ci_high"].to_numpy(float) - mean
    else:
        lo = hi = agg[f"{m}_std"].to_numpy(float)
    return np.nan_to_num(np.vstack([lo, hi]) * scale)


def n_text(n: pd.Series) -> str:
    lo, hi = int(n.min()), int(n.max())
    return f"n={lo}" if lo == hi else f"n={lo}–{hi}"


def suptitle(fig: Figure, sweep: Sweep, what: str, err: str | None, spread: str = "bars") -> None:
    """Title: what, then sweep · model · task · what the points and their spread are (· partial, if so)."""
    runs = sweep.runs
    about = [sweep.name, ", ".join(sorted(runs["model"].unique())), "task " + ", ".join(sorted(runs["task"].unique()))]
    about.append("mean over demo seeds" + (f", {spread}: {ERR_TEXT[err]}" if err else ""))
    if sweep.missing:
        about.append(f"partial: {len(sweep.missing)} expected runs missing")
    fig.suptitle(f"{what}\n" + " · ".join(about), fontsize=12)


def legend_below(fig: Figure, *axes) -> None:
    """One legend for the figure's panels, under them (it never hides a point): each label once, from whichever of
    `axes` has it."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncols=min(len(seen), 4))


def grid(n: int, width: float, height: float) -> tuple[Figure, list]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols + 0.8, height * rows + 0.9), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def band(ax, x, per_seed: pd.DataFrame, colour, label, marker, err: str) -> None:
    """per_seed: index = layer, columns = seeds."""
    mean = per_seed.mean(axis=1)
    if err == "minmax":
        lo, hi = per_seed.min(axis=1), per_seed.max(axis=1)
    else:
        n = per_seed.shape[1]
        half = per_seed.std(axis=1, ddof=1).fillna(0) * (t975(n) / math.sqrt(n) if err == "ci95" else 1)
        lo, hi = mean - half, mean + half
    ax.plot(x, mean, marker=marker, ms=3.5, lw=1.6, color=colour, label=label)
    ax.fill_between(x, lo, hi, color=colour, alpha=0.2, lw=0)
