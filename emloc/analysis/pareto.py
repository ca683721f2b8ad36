"""The accuracy–retention Pareto front of a search (e.g. the Optuna sweep `sweeps/search/optuna_emloc.yaml`).

* `pareto_front(runs)` — the runs no other run beats on both objectives (accuracy at least as high AND retention
  at least as low, one of them strictly), sorted by retention;
* `pareto_figure(runs)` — a matplotlib Figure of accuracy vs retention: every run as a grey point, the front as
  coloured points joined by a step line, each front point labelled with the searched parameters that vary.

Input is the run frame of `emloc.analysis.loading` (one row per run, flattened config columns such as
`method.js_threshold`); each row is one point (a search evaluates each setting once; aggregate over seeds first
if a frame holds several). pandas, numpy and matplotlib only: no torch, no engine, no file access.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from emloc.analysis.frame import SHORT, fmt_value

SEARCHED = ("method.js_threshold", "method.chunk_size", "method.keep_ratios", "method.keep_ratio", "task.num_shots")


def _clean(runs: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    missing = [c for c in (x, y) if c not in runs]
    if missing:
        raise ValueError(f"the run frame lacks the column(s) {missing} (columns: {sorted(runs.columns)})")
    return runs[runs[x].notna() & runs[y].notna()]


def pareto_front(runs: pd.DataFrame, x: str = "retention", y: str = "accuracy") -> pd.DataFrame:
    """The non-dominated rows (minimise `x`, maximise `y`), sorted by `x`; ties on both objectives all stay."""
    df = _clean(runs, x, y)
    xs, ys = df[x].to_numpy(float), df[y].to_numpy(float)
    keep = [
        not np.any((xs <= xs[i]) & (ys >= ys[i]) & ((xs < xs[i]) | (ys > ys[i])))  # nobody at least as good and better
        for i in range(len(df))
    ]
    return df[keep].sort_values([x, y], ascending=[True, False])


def _label(row: pd.Series, columns: list[str]) -> str:
    return ", ".join(f"{SHORT.get(c, c.split('.')[-1])}={fmt_value(row[c])}" for c in columns)


def pareto_figure(runs: pd.DataFrame, x: str = "retention", y: str = "accuracy", title: str | None = None) -> Figure:
    """Accuracy (%) vs retention (% of the context's KV entries) of every run, the Pareto front marked and labelled."""
    df = _clean(runs, x, y)
    if df.empty:
        raise ValueError(f"no run with both {x} and {y}")
    front = pareto_front(df, x, y)
    varying = [c for c in SEARCHED if c in df and df[c].astype(str).nunique() > 1]
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.subplots()
    others = df.drop(index=front.index)
    ax.scatter(others[x] * 100, others[y] * 100, s=28, color="0.65", label=f"dominated ({len(others)})", zorder=2)
    fx, fy = front[x].to_numpy(float) * 100, front[y].to_numpy(float) * 100
    ax.step(fx, fy, where="post", color="black", ls=":", lw=1.3, zorder=1)
    ax.scatter(fx, fy, s=46, color="C3", edgecolor="black", lw=0.6, label=f"Pareto front ({len(front)})", zorder=3)
    for (_, row), px, py in zip(front.iterrows(), fx, fy):
        if varying:
            ax.annotate(_label(row, varying), (px, py), xytext=(6, 4), textcoords="offset points", fontsize=8)
    ax.set_xlabel("retention (% of the context's KV entries)")
    ax.set_ylabel("accuracy (%)")
    names = sorted(df["sweep_name"].dropna().unique()) if "sweep_name" in df else []
    ax.set_title(title or f"Accuracy vs retention{': ' + ', '.join(names) if names else ''} ({len(df)} runs)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    return fig


__all__ = ["pareto_figure", "pareto_front"]
