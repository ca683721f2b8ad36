"""The paper's figures from a `report.Sweep`: matplotlib (Agg, object API: no pyplot state), no torch.

Every point is the mean over demo seeds with an error bar (min–max by default, or a 95 % CI / std); bands do the
same for per-layer curves. `draw(kind, sweep)` returns a Figure; `report.figure` saves it. Kinds:

* `accuracy_vs_shots` — accuracy and memory size vs number of shots, zero-shot as a reference line;
* `accuracy_vs_param` — accuracy and retention vs the sweep's parameter (JS threshold, chunk size, keep ladder);
* `kept_heatmap` — kept entries per layer × chunk, as % of the chunk's tokens;
* `js_per_layer` — the accepted JS divergence per layer against the threshold δ;
* `token_kinds` — % of each token kind (template / image / question / answer) pruned per layer (paper Fig. 5);
* `cost_pareto` — accuracy vs per-query latency and vs memory tokens, with the Pareto front.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from emloc import report
from emloc.report import SweepError

KINDS = {"accuracy_vs_shots": "accuracy_vs_shots", "accuracy_vs_param": "accuracy_retention_vs_param",
         "kept_heatmap": "kept_tokens_heatmap", "js_per_layer": "accepted_js_per_layer",
         "token_kinds": "pruned_token_kinds", "cost_pareto": "cost_vs_accuracy_pareto"}
STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "xtick.labelsize": 10, "ytick.labelsize": 10,
         "legend.fontsize": 9.5, "figure.titlesize": 13, "axes.grid": True, "grid.alpha": 0.3, "savefig.facecolor": "white"}
ERR_TEXT = {"minmax": "bars: min–max", "ci95": "bars: 95 % CI of the mean", "std": "bars: ± 1 std"}
MARKERS = "osD^vP*Xh<>"
KIND_COLOURS = {"template": "#7f7f7f", "image": "#2ca02c", "question": "#1f77b4", "answer": "#d62728"}
NO_MEMORY_SEARCH = {"zeroshot", "fullcontext"}  # methods whose memory is not pruned: nothing per layer to show


@contextmanager
def style():
    with matplotlib.rc_context(STYLE):
        yield


def draw(kind: str, sweep: report.Sweep, err: str = "minmax") -> Figure:
    if kind not in KINDS:
        raise ValueError(f"unknown figure {kind!r}; one of {sorted(KINDS)}")
    with style():
        fig = globals()[kind](sweep, err)
        for ax in fig.axes:
            ax.tick_params(labelsize=STYLE["xtick.labelsize"])
            if ax.get_xlabel().startswith("layer"):
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return fig


def applicable(sweep: report.Sweep) -> list[str]:
    """The figures that make sense for a sweep of no known stem (the others would be empty or trivial)."""
    kinds = ["cost_pareto"]
    if sweep.runs["num_shots"].nunique() > 1:
        kinds.insert(0, "accuracy_vs_shots")
    if any(c != "method" for c in sweep.by):
        kinds.insert(0, "accuracy_vs_param")
    if not set(sweep.runs["method"]) <= NO_MEMORY_SEARCH:
        kinds += ["kept_heatmap", "js_per_layer", "token_kinds"]
    return kinds


def filename(kind: str, sweep: report.Sweep) -> str:
    if kind == "accuracy_vs_param":
        return f"accuracy_retention_vs_{_param(sweep).split('.')[-1]}"
    return KINDS[kind]


def save(fig: Figure, path) -> None:
    with style():
        fig.savefig(path, dpi=150, bbox_inches="tight")


# ------------------------------------------------------------------------------------------------ helpers
def _yerr(agg: pd.DataFrame, m: str, err: str, scale: float = 1.0) -> np.ndarray:
    mean = agg[f"{m}_mean"].to_numpy(float)
    if err == "minmax":
        lo, hi = mean - agg[f"{m}_min"].to_numpy(float), agg[f"{m}_max"].to_numpy(float) - mean
    elif err == "ci95":
        lo, hi = mean - agg[f"{m}_ci_low"].to_numpy(float), agg[f"{m}_ci_high"].to_numpy(float) - mean
    else:
        lo = hi = agg[f"{m}_std"].to_numpy(float)
    return np.nan_to_num(np.vstack([lo, hi]) * scale)


def _n_text(n: pd.Series) -> str:
    lo, hi = int(n.min()), int(n.max())
    return f"n={lo}" if lo == hi else f"n={lo}–{hi}"


def _param(sweep: report.Sweep) -> str:
    params = [c for c in sweep.by if c != "method"]
    if not params:
        raise SweepError(f"sweep {sweep.name!r} varies only the method: no parameter for an x axis (grid: {sweep.by})")
    return params[0]


def _hue(sweep: report.Sweep) -> list[str]:
    return [c for c in sweep.by if c != _param(sweep)]


def _suptitle(fig: Figure, sweep: report.Sweep, what: str, err: str | None) -> None:
    model = ", ".join(sorted(sweep.runs["model"].unique()))
    tail = f"mean over demo seeds, {ERR_TEXT[err]}" if err else "mean over demo seeds"
    fig.suptitle(f"{what}\n{sweep.name} · {model} · {tail}", fontsize=12)


def _grid(n: int, width: float = 4.6, height: float = 3.8) -> tuple[Figure, list]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols + 0.8, height * rows + 0.9), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _per_layer(sweep: report.Sweep, methods_excluded=NO_MEMORY_SEARCH) -> tuple[pd.DataFrame, list[dict]]:
    """The memory_stats rows of the runs with a pruned memory, split by grid point (with its aggregate row)."""
    lf = report.layer_frame(sweep)
    if "method" in lf:
        lf = lf[~lf["method"].isin(methods_excluded)]
    if lf.empty:
        raise SweepError(f"sweep {sweep.name!r} has no pruned memories (only {sorted(methods_excluded)}): nothing per layer")
    groups = []
    agg = report.aggregate(sweep.runs[sweep.runs["signature"].isin(lf["signature"])], sweep.by)
    for _, point in agg.iterrows():
        mask = np.logical_and.reduce([lf[c].map(lambda v, w=point[c]: report._same(v, w)) for c in sweep.by])
        groups.append({"point": point, "label": report.point_label(point, sweep.by), "rows": lf[mask]})
    return agg, groups


def _band(ax, x, per_seed: pd.DataFrame, colour, label, marker, err: str) -> None:
    """per_seed: index = layer, columns = seeds."""
    mean = per_seed.mean(axis=1)
    if err == "minmax":
        lo, hi = per_seed.min(axis=1), per_seed.max(axis=1)
    else:
        half = per_seed.std(axis=1, ddof=1).fillna(0) * (report.t975(per_seed.shape[1]) / math.sqrt(per_seed.shape[1]) if err == "ci95" else 1)
        lo, hi = mean - half, mean + half
    ax.plot(x, mean, marker=marker, ms=3.5, lw=1.6, color=colour, label=label)
    ax.fill_between(x, lo, hi, color=colour, alpha=0.2, lw=0)


# ------------------------------------------------------------------------------------------------ figures
def accuracy_vs_param(sweep: report.Sweep, err: str) -> Figure:
    param, hue = _param(sweep), _hue(sweep)
    agg = report.aggregate(sweep.runs, sweep.by)
    values = sorted(agg[param].unique(), key=lambda v: (len(v), v) if isinstance(v, tuple) else v)
    pos = {report._fmt_value(v): i for i, v in enumerate(values)}
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    axes = fig.subplots(1, 2)
    lines = agg.groupby(hue, sort=False) if hue else [((), agg)]
    for j, (key, g) in enumerate(lines):
        key = key if isinstance(key, tuple) else (key,)
        name = report.point_label(dict(zip(hue, key)), hue) if hue else "EMLoC"
        x = np.array([pos[report._fmt_value(v)] for v in g[param]])
        for ax, m in zip(axes, ("accuracy", "retention")):
            ax.errorbar(x, g[f"{m}_mean"] * 100, yerr=_yerr(g, m, err, 100), marker=MARKERS[j], ms=6, capsize=4,
                        lw=1.8, label=f"{name} ({_n_text(g['n'])} seeds)")
            runs = sweep.runs[sweep.runs[param].map(lambda v: report._fmt_value(v) in pos)]
            for h, kv in zip(hue, key):
                runs = runs[runs[h] == kv]
            ax.scatter([pos[report._fmt_value(v)] for v in runs[param]], runs[m] * 100, s=14, alpha=0.35,
                       color=ax.lines[-1].get_color(), zorder=1)
    xlabel = report.PARAM_LABELS.get(param, param)
    for ax, m, title in zip(axes, ("accuracy", "retention"), ("Accuracy", "Retention (memory / context tokens)")):
        ax.set_xticks(range(len(values)), [report._fmt_value(v) for v in values])
        ax.set_xlim(-0.4, len(values) - 0.6)
        ax.set_xlabel(xlabel + (" — categorical axis" if param == "method.keep_ratios" else ""))
        ax.set_ylabel(f"{m} (%)")
        ax.set_title(title)
        ax.legend(loc="best")
    axes[1].set_ylim(0, max(5, float((agg["retention_max"] * 100).max()) * 1.15))
    _suptitle(fig, sweep, f"Accuracy and retention vs {xlabel.split(' (')[0]} (small dots: single seeds)", err)
    return fig


def accuracy_vs_shots(sweep: report.Sweep, err: str) -> Figure:
    by = sweep.by if "method" in sweep.by else ["method", *sweep.by]
    agg = report.aggregate(sweep.runs, by)
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    axes = fig.subplots(1, 2)
    zero = agg[agg["method"] == "zeroshot"]
    rest = agg[agg["method"] != "zeroshot"]
    if rest.empty:
        raise SweepError(f"sweep {sweep.name!r} has only zero-shot runs: no shots axis")
    for j, (method, g) in enumerate(rest.groupby("method", sort=False)):
        g = g.sort_values("num_shots_mean")
        name = f"{report.METHOD_LABELS.get(method, method)} ({_n_text(g['n'])} seeds)"
        for ax, m, scale in zip(axes, ("accuracy", "memory_tokens"), (100, 1)):
            ax.errorbar(g["num_shots_mean"], g[f"{m}_mean"] * scale, yerr=_yerr(g, m, err, scale), marker=MARKERS[j],
                        ms=6, capsize=4, lw=1.8, label=name)
    if not zero.empty:
        z = zero.iloc[0]
        for ax, m, scale in zip(axes, ("accuracy", "memory_tokens"), (100, 1)):
            lo, hi = _yerr(zero, m, err, scale)[:, 0]
            mean = z[f"{m}_mean"] * scale
            ax.axhline(mean, color="black", ls="--", lw=1.3, label=f"zero-shot ({_n_text(zero['n'])} seeds)")
            ax.axhspan(mean - lo, mean + hi, color="black", alpha=0.08, lw=0)
    shots = sorted(set(rest["num_shots_mean"].round().astype(int)))
    for ax, ylabel, title in zip(axes, ("accuracy (%)", "memory (tokens per layer)"),
                                 ("Accuracy", "Task-memory size (mean entries per layer)")):
        ax.set_xticks(shots)
        ax.set_xlabel("number of shots (demonstrations in context)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.set_xlim(0, max(shots) * 1.08)
        ax.legend(loc="best")
    axes[1].set_ylim(bottom=0)
    _suptitle(fig, sweep, "Accuracy vs number of shots: zero-shot / full context / EMLoC", err)
    return fig


def kept_heatmap(sweep: report.Sweep, err: str) -> Figure:
    agg, groups = _per_layer(sweep)
    fig, axes = _grid(len(groups), 3.6, 4.4)
    image = None
    for ax, g in zip(axes, groups):
        rows = g["rows"].assign(pct=lambda d: 100 * d["kept"] / d["num_tokens"])
        per_seed = rows.pivot_table(index=["layer", "chunk"], columns=report.SEED, values="pct")
        mean = per_seed.mean(axis=1).unstack("chunk")
        spread = float((per_seed.max(axis=1) - per_seed.min(axis=1)).max()) if per_seed.shape[1] > 1 else 0.0
        image = ax.imshow(mean.to_numpy(), origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=100,
                          interpolation="nearest")
        ax.set_xticks(range(mean.shape[1]), [str(c) for c in mean.columns])
        step = max(1, round(mean.shape[0] / 8))
        ax.set_yticks(range(0, mean.shape[0], step))
        ax.set_xlabel("chunk (compression order)")
        ax.set_ylabel("layer (0 = input side)")
        ax.grid(False)
        ax.set_title(f"{g['label']}\nretention {g['point']['retention_mean'] * 100:.0f} %, n={int(g['point']['n'])}, "
                     f"max seed range {spread:.0f} pp", fontsize=10.5)
    fig.colorbar(image, ax=axes, label="kept entries (% of the chunk's tokens)", shrink=0.9)
    _suptitle(fig, sweep, "Kept tokens per layer × chunk", None)
    return fig


def js_per_layer(sweep: report.Sweep, err: str) -> Figure:
    agg, groups = _per_layer(sweep)
    groups = [g for g in groups if g["rows"]["js"].notna().any()]
    if not groups:
        raise SweepError(f"no accepted JS values in sweep {sweep.name!r} (only methods without a JS search, or δ = 0)")
    fig = Figure(figsize=(8.5, 4.8), layout="constrained")
    ax = fig.subplots()
    positive = []
    for j, g in enumerate(groups):
        per_run = g["rows"].groupby([report.SEED, "layer"])["js"].mean().unstack(report.SEED)
        colour = f"C{j}"
        _band(ax, per_run.index, per_run, colour, f"{g['label']} (n={int(g['point']['n'])})", MARKERS[j], err)
        runs = sweep.runs[sweep.runs["signature"].isin(g["rows"]["signature"])]
        delta = runs["method.js_threshold"].iloc[0] if "method.js_threshold" in runs else None
        if delta is not None and not (isinstance(delta, float) and math.isnan(delta)):
            ax.axhline(delta, color=colour, ls="--", lw=1.1)
            positive.append(delta)
        positive += [v for v in per_run.stack().tolist() if v > 0]
    if positive and max(positive) / max(min(positive), 1e-12) > 20:
        ax.set_yscale("log")
    ax.plot([], [], color="grey", ls="--", label="threshold δ (same colour)")
    ax.set_xlabel("layer (0 = input side)")
    ax.set_ylabel("accepted JS divergence (nats / answer token)")
    ax.set_title("JS divergence of the accepted pruning per layer (mean over chunks)")
    ax.legend(loc="best")
    _suptitle(fig, sweep, "Accepted JS divergence per layer", None)
    fig.suptitle(fig.get_suptitle().replace("mean over demo seeds", f"mean over demo seeds, band: {ERR_TEXT[err].split(': ')[1]}"))
    return fig


def token_kinds(sweep: report.Sweep, err: str) -> Figure:
    agg, groups = _per_layer(sweep)
    kinds = [k for k in KIND_COLOURS if f"tokens_{k}" in groups[0]["rows"] and groups[0]["rows"][f"tokens_{k}"].sum() > 0]
    absent = [k for k in KIND_COLOURS if k not in kinds]
    fig, axes = _grid(len(groups), 4.4, 3.6)
    for ax, g in zip(axes, groups):
        per = g["rows"].groupby([report.SEED, "layer"])[[f"tokens_{k}" for k in kinds] + [f"kept_{k}" for k in kinds]].sum()
        for k in kinds:
            pruned = (100 * (1 - per[f"kept_{k}"] / per[f"tokens_{k}"])).unstack(report.SEED)
            _band(ax, pruned.index, pruned, KIND_COLOURS[k], k, None, err)
        ax.set_ylim(-3, 103)
        ax.set_xlabel("layer (0 = input side)")
        ax.set_ylabel("pruned (% of that kind's tokens)")
        ax.set_title(f"{g['label']} (n={int(g['point']['n'])})")
    fig.legend(*axes[0].get_legend_handles_labels(), title="token kind", loc="outside right center")
    note = f" (no {', '.join(absent)} tokens in this task)" if absent else ""
    _suptitle(fig, sweep, f"Kinds of pruned tokens per layer{note}", None)
    fig.suptitle(fig.get_suptitle().replace("mean over demo seeds", f"mean over demo seeds, band: {ERR_TEXT[err].split(': ')[1]}"))
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


def cost_pareto(sweep: report.Sweep, err: str) -> Figure:
    agg = report.aggregate(sweep.runs, sweep.by)
    fig = Figure(figsize=(11.5, 4.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, m, scale, xlabel, title in zip(
            axes, ("query_seconds_mean", "memory_tokens"), (1000, 1), ("per-query latency (ms)", "memory (tokens per layer)"),
            ("Accuracy vs per-query latency", "Accuracy vs task-memory size")):
        x, y = agg[f"{m}_mean"].to_numpy(float) * scale, agg["accuracy_mean"].to_numpy(float) * 100
        for j, (_, p) in enumerate(agg.iterrows()):
            ax.errorbar(x[j], y[j], xerr=_yerr(agg.iloc[[j]], m, err, scale), yerr=_yerr(agg.iloc[[j]], "accuracy", err, 100),
                        marker=MARKERS[j % len(MARKERS)], ms=7, capsize=3, lw=1.4, color=f"C{j % 10}", ls="none",
                        label=f"{report.point_label(p, sweep.by)} (n={int(p['n'])})")
        front = _front(x, y)
        ax.plot(x[front], y[front], color="black", ls=":", lw=1.3, label="Pareto front", zorder=0)
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.set_xlim(left=0)
    axes[0].set_ylabel("accuracy (%)")
    axes[1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
    _suptitle(fig, sweep, "Cost vs accuracy (up and to the left is better)", err)
    return fig
