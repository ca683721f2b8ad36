"""The paper's figures from a `Sweep`: matplotlib (Agg, object API: no pyplot state), no torch.

Every point is the mean over demo seeds with an error bar (min–max by default, or a 95 % CI / std); bands do the
same for per-layer curves. `draw(kind, sweep)` returns a Figure; `report.figure` saves it. It reads only the
`Sweep` it is given, never files. Run-level kinds here, per-layer kinds in `layer_figures`:

* `accuracy_vs_shots` — accuracy and memory size vs number of shots, zero-shot as a reference line;
* `accuracy_vs_param` — accuracy and retention vs the sweep's parameter (JS threshold, chunk size, keep ladder);
* `cost_pareto` — accuracy vs per-query latency and vs memory tokens, with the Pareto front;
* `kept_heatmap`, `js_per_layer`, `token_kinds`, `drift` — see `emloc.analysis.layer_figures`;
* `pareto_front` — accuracy vs retention of a search's runs with their Pareto front (`emloc.analysis.pareto`).
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from emloc.analysis import layer_figures
from emloc.analysis.frame import PARAM_LABELS, Sweep, SweepError, fmt_value, point_label
from emloc.analysis.frontier import frontier_figure
from emloc.analysis.pareto import pareto_figure
from emloc.analysis.plotting import ERR_TEXT, MARKERS, STYLE, legend_below, n_text, save, style, suptitle, yerr
from emloc.analysis.stats import aggregate

__all__ = ["KINDS", "applicable", "draw", "filename", "save"]

# figure kind → PNG file name
KINDS = {
    "accuracy_vs_shots": "accuracy_vs_shots",
    "accuracy_vs_param": "accuracy_retention_vs_param",
    "kept_heatmap": "kept_tokens_heatmap",
    "js_per_layer": "accepted_js_per_layer",
    "token_kinds": "pruned_token_kinds",
    "cost_pareto": "cost_vs_accuracy_pareto",
    "drift": "heldout_js_drift",
    "pareto_front": "accuracy_retention_pareto",
    "frontier": "fidelity_retention_frontier",
}


def draw(kind: str, sweep: Sweep, err: str = "minmax") -> Figure:
    """Figure `kind` (a key of `KINDS`) of the sweep; `err`: the spread over seeds ("minmax", "ci95" or "std")."""
    if kind not in KINDS:
        raise ValueError(f"unknown figure {kind!r}; one of {sorted(KINDS)}")
    if err not in ERR_TEXT:
        raise ValueError(f"err must be one of {sorted(ERR_TEXT)}, got {err!r}")
    with style():
        fig = DRAW[kind](sweep, err)
        for ax in fig.axes:
            ax.tick_params(labelsize=STYLE["xtick.labelsize"])
            if ax.get_xlabel().startswith("layer"):
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return fig


def applicable(sweep: Sweep) -> list[str]:
    """The figures that make sense for a sweep of no known stem (the others would be empty or trivial)."""
    kinds = ["cost_pareto"]
    if sweep.runs["num_shots"].nunique() > 1:
        kinds.insert(0, "accuracy_vs_shots")
    if any(c != "method" for c in sweep.by):
        kinds.insert(0, "accuracy_vs_param")
    if sweep.runs["compresses"].any():  # a memory that is not pruned has nothing to show per layer
        kinds += ["kept_heatmap", "js_per_layer", "token_kinds"]
        if sweep.fidelity is not None and not sweep.fidelity.empty:
            kinds += ["drift", "frontier"]
    return kinds


def filename(kind: str, sweep: Sweep) -> str:
    if kind == "accuracy_vs_param":
        return f"accuracy_retention_vs_{_param(sweep).split('.')[-1]}"
    return KINDS[kind]


def _param(sweep: Sweep) -> str:
    params = [c for c in sweep.by if c != "method"]
    if not params:
        raise SweepError(f"sweep {sweep.name!r} varies only the method: no parameter for an x axis (grid: {sweep.by})")
    return params[0]


def _hue(sweep: Sweep) -> list[str]:
    return [c for c in sweep.by if c != _param(sweep)]


def accuracy_vs_param(sweep: Sweep, err: str) -> Figure:
    param, hue = _param(sweep), _hue(sweep)
    agg = aggregate(sweep.runs, sweep.by, per_query=sweep.per_query())
    values = sorted(agg[param].unique(), key=lambda v: (len(v), v) if isinstance(v, tuple) else v)
    pos = {fmt_value(v): i for i, v in enumerate(values)}
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    axes = fig.subplots(1, 2)
    lines = agg.groupby(hue, sort=False) if hue else [((), agg)]
    for j, (key, g) in enumerate(lines):
        key = key if isinstance(key, tuple) else (key,)
        name = point_label(dict(zip(hue, key)), hue) if hue else "EMLoC"
        x = np.array([pos[fmt_value(v)] for v in g[param]])
        for ax, m in zip(axes, ("accuracy", "retention")):
            ax.errorbar(
                x,
                g[f"{m}_mean"] * 100,
                yerr=yerr(g, m, err, 100),
                marker=MARKERS[j % len(MARKERS)],
                ms=6,
                capsize=4,
                lw=1.8,
                label=f"{name} ({n_text(g['n'])} seeds)",
            )
            runs = sweep.runs[sweep.runs[param].map(lambda v: fmt_value(v) in pos)]
            for h, kv in zip(hue, key):
                runs = runs[runs[h] == kv]
            ax.scatter(
                [pos[fmt_value(v)] for v in runs[param]],
                runs[m] * 100,
                s=14,
                alpha=0.35,
                color=ax.lines[-1].get_color(),
                zorder=1,
            )
    xlabel = PARAM_LABELS.get(param, param)
    for ax, m, title in zip(axes, ("accuracy", "retention"), ("Accuracy", "Retention (memory / context tokens)")):
        ax.set_xticks(range(len(values)), [fmt_value(v) for v in values])
        ax.set_xlim(-0.4, len(values) - 0.6)
        ax.set_xlabel(xlabel + " — categorical axis")
        ax.set_ylabel(f"{m} (%)")
        ax.set_title(title)
    legend_below(fig, axes[0])
    axes[1].set_ylim(0, max(5, float((agg["retention_max"] * 100).max()) * 1.15))
    suptitle(fig, sweep, f"Accuracy and retention vs {xlabel.split(' (')[0]} (small dots: single seeds)", err)
    return fig


def accuracy_vs_shots(sweep: Sweep, err: str) -> Figure:
    """Categorical shots axis (0 = zero-shot, then every shot count), methods dodged so their bars do not overlap."""
    agg = aggregate(
        sweep.runs, sweep.by if "method" in sweep.by else ["method", *sweep.by], per_query=sweep.per_query()
    )
    if not agg["uses_demos"].any():
        raise SweepError(f"sweep {sweep.name!r} has only zero-shot runs: no shots axis")
    zero = set(agg.loc[~agg["uses_demos"], "method"])
    shots = sorted(set(agg["num_shots_mean"].round().astype(int)))
    pos = {n: i for i, n in enumerate(shots)}
    methods = list(dict.fromkeys(agg["method"]))
    dodged = [m for m in methods if m not in zero]  # zero-shot sits alone at 0 shots
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for j, method in enumerate(methods):
        g = agg[agg["method"] == method].sort_values("num_shots_mean")
        shift = 0.12 * (dodged.index(method) - (len(dodged) - 1) / 2) if method in dodged else 0.0
        x = np.array([pos[round(n)] for n in g["num_shots_mean"]]) + shift
        colour = "black" if method in zero else f"C{j}"
        name = f"{method} ({n_text(g['n'])} seeds)"
        for ax, m, scale in zip(axes, ("accuracy", "memory_tokens"), (100, 1)):
            ax.errorbar(
                x,
                g[f"{m}_mean"] * scale,
                yerr=yerr(g, m, err, scale),
                marker=MARKERS[j % len(MARKERS)],
                ms=6,
                capsize=4,
                lw=1.8,
                color=colour,
                label=name,
            )
            if method in zero:  # the reference every number of shots is compared with
                ax.axhline(g[f"{m}_mean"].iloc[0] * scale, color=colour, ls="--", lw=1, alpha=0.6)
    ticks = [f"{n}\n(zero-shot)" if n == 0 else str(n) for n in shots]
    for ax, ylabel, title in zip(
        axes, ("accuracy (%)", "memory (tokens per layer)"), ("Accuracy", "Task-memory size (mean entries per layer)")
    ):
        ax.set_xticks(range(len(shots)), ticks)
        ax.set_xlim(-0.5, len(shots) - 0.5)
        ax.set_xlabel("number of shots (demonstrations in context; categorical axis)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    legend_below(fig, axes[0])
    axes[1].set_ylim(bottom=0)
    suptitle(fig, sweep, "Accuracy vs number of shots: zero-shot / full context / EMLoC (dashed: zero-shot)", err)
    return fig


def _front(x: np.ndarray, y: np.ndarray) -> list[int]:
    """Indices of the points no other point beats (lower-or-equal cost and higher accuracy), by increasing cost."""
    order = sorted(range(len(x)), key=lambda i: (x[i], -y[i]))
    out, best = [], -math.inf
    for i in order:
        if y[i] > best:
            out.append(i)
            best = y[i]
    return out


def cost_pareto(sweep: Sweep, err: str) -> Figure:
    agg = aggregate(sweep.runs, sweep.by, per_query=sweep.per_query())
    fig = Figure(figsize=(11.5, 4.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    panels = (
        ("query_seconds_mean", 1000, "per-query latency (ms, wall)", "Accuracy vs per-query latency"),
        ("memory_tokens", 1, "memory (tokens per layer)", "Accuracy vs task-memory size"),
    )
    for ax, (m, scale, xlabel, title) in zip(axes, panels):
        x, y = agg[f"{m}_mean"].to_numpy(float) * scale, agg["accuracy_mean"].to_numpy(float) * 100
        for j, (_, p) in enumerate(agg.iterrows()):
            ax.errorbar(
                x[j],
                y[j],
                xerr=yerr(agg.iloc[[j]], m, err, scale),
                yerr=yerr(agg.iloc[[j]], "accuracy", err, 100),
                marker=MARKERS[j % len(MARKERS)],
                ms=7,
                capsize=3,
                lw=1.4,
                color=f"C{j % 10}",
                ls="none",
                label=f"{point_label(p, sweep.by)} (n={int(p['n'])})",
            )
        front = _front(x, y)
        ax.plot(x[front], y[front], color="black", ls=":", lw=1.3, label="Pareto front", zorder=0)
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.set_xlim(left=0)
    axes[0].set_ylabel("accuracy (%)")
    axes[1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
    suptitle(fig, sweep, "Cost vs accuracy (up and to the left is better)", err)
    return fig


DRAW = {
    "frontier": frontier_figure,
    "accuracy_vs_shots": accuracy_vs_shots,
    "accuracy_vs_param": accuracy_vs_param,
    "kept_heatmap": layer_figures.kept_heatmap,
    "js_per_layer": layer_figures.js_per_layer,
    "token_kinds": layer_figures.token_kinds,
    "cost_pareto": cost_pareto,
    "drift": layer_figures.drift,
    "pareto_front": lambda sweep, err: pareto_figure(sweep.runs),
}
