"""The paper's figures from a `Sweep`: matplotlib (Agg, object API: no pyplot state), no torch.

Every point is the mean over demo seeds with an error bar (min–max by default, or a 95 % CI / std); bands do the
same for per-layer curves. `draw(kind, sweep)` returns a Figure; `report.figure` saves it. It reads only the
`Sweep` it is given (its runs frame and `layers()`), never files. Kinds:

* `accuracy_vs_shots` — accuracy and memory size vs number of shots, zero-shot as a reference line;
* `accuracy_vs_param` — accuracy and retention vs the sweep's parameter (JS threshold, chunk size, keep ladder);
* `kept_heatmap` — kept entries per layer × chunk, as % of the chunk's tokens (mean, and its spread over seeds);
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

from emloc.analysis.frame import PARAM_LABELS, SEED, Sweep, SweepError, fmt_value, point_label, same_value, t975
from emloc.analysis.stats import aggregate

# figure kind → PNG file name
KINDS = {
    "accuracy_vs_shots": "accuracy_vs_shots",
    "accuracy_vs_param": "accuracy_retention_vs_param",
    "kept_heatmap": "kept_tokens_heatmap",
    "js_per_layer": "accepted_js_per_layer",
    "token_kinds": "pruned_token_kinds",
    "cost_pareto": "cost_vs_accuracy_pareto",
}
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
    return kinds


def filename(kind: str, sweep: Sweep) -> str:
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


def _param(sweep: Sweep) -> str:
    params = [c for c in sweep.by if c != "method"]
    if not params:
        raise SweepError(f"sweep {sweep.name!r} varies only the method: no parameter for an x axis (grid: {sweep.by})")
    return params[0]


def _hue(sweep: Sweep) -> list[str]:
    return [c for c in sweep.by if c != _param(sweep)]


def _suptitle(fig: Figure, sweep: Sweep, what: str, err: str | None, spread: str = "bars") -> None:
    """Title: what, then sweep · model · task · what the points and their spread are (· partial, if so)."""
    runs = sweep.runs
    about = [sweep.name, ", ".join(sorted(runs["model"].unique())), "task " + ", ".join(sorted(runs["task"].unique()))]
    about.append("mean over demo seeds" + (f", {spread}: {ERR_TEXT[err]}" if err else ""))
    if sweep.missing:
        about.append(f"partial: {len(sweep.missing)} expected runs missing")
    fig.suptitle(f"{what}\n" + " · ".join(about), fontsize=12)


def _legend_below(fig: Figure, ax) -> None:
    """One legend for the figure's panels, under them (it never hides a point)."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4))


def _grid(n: int, width: float, height: float) -> tuple[Figure, list]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols + 0.8, height * rows + 0.9), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _per_layer(sweep: Sweep) -> list[dict]:
    """The memory_stats rows of the runs with a pruned memory, per grid point (with its aggregate row and label)."""
    lf = sweep.layers()
    lf = lf[lf["compresses"]]
    if lf.empty:
        raise SweepError(f"sweep {sweep.name!r} has no pruned memories (only zero-shot / full context runs)")
    groups = []
    for _, point in aggregate(sweep.runs[sweep.runs["signature"].isin(lf["signature"])], sweep.by).iterrows():
        mask = np.logical_and.reduce([lf[c].map(lambda v, w=point[c]: same_value(v, w)) for c in sweep.by])
        groups.append({"point": point, "label": point_label(point, sweep.by), "rows": lf[mask]})
    return groups


def _band(ax, x, per_seed: pd.DataFrame, colour, label, marker, err: str) -> None:
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


# ------------------------------------------------------------------------------------------------ figures
def accuracy_vs_param(sweep: Sweep, err: str) -> Figure:
    param, hue = _param(sweep), _hue(sweep)
    agg = aggregate(sweep.runs, sweep.by)
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
                yerr=_yerr(g, m, err, 100),
                marker=MARKERS[j],
                ms=6,
                capsize=4,
                lw=1.8,
                label=f"{name} ({_n_text(g['n'])} seeds)",
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
    _legend_below(fig, axes[0])
    axes[1].set_ylim(0, max(5, float((agg["retention_max"] * 100).max()) * 1.15))
    _suptitle(fig, sweep, f"Accuracy and retention vs {xlabel.split(' (')[0]} (small dots: single seeds)", err)
    return fig


def accuracy_vs_shots(sweep: Sweep, err: str) -> Figure:
    """Categorical shots axis (0 = zero-shot, then every shot count), methods dodged so their bars do not overlap."""
    agg = aggregate(sweep.runs, sweep.by if "method" in sweep.by else ["method", *sweep.by])
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
        name = f"{method} ({_n_text(g['n'])} seeds)"
        for ax, m, scale in zip(axes, ("accuracy", "memory_tokens"), (100, 1)):
            ax.errorbar(
                x,
                g[f"{m}_mean"] * scale,
                yerr=_yerr(g, m, err, scale),
                marker=MARKERS[j],
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
    _legend_below(fig, axes[0])
    axes[1].set_ylim(bottom=0)
    _suptitle(fig, sweep, "Accuracy vs number of shots: zero-shot / full context / EMLoC (dashed: zero-shot)", err)
    return fig


def _spread(per_seed: pd.DataFrame, err: str) -> pd.Series:
    """Per row, the spread of the columns (seeds): max − min, std, or the 95 % CI half-width."""
    n = per_seed.notna().sum(axis=1)
    if err == "minmax":
        spread = per_seed.max(axis=1) - per_seed.min(axis=1)
    else:
        spread = per_seed.std(axis=1, ddof=1) * (n.map(t975) / np.sqrt(n) if err == "ci95" else 1)
    return spread.where(n > 1)  # one seed: no spread (drawn grey)


def _heat(ax, frame: pd.DataFrame, cmap: str, vmax: float):
    """frame: index = layer, columns = chunk."""
    colours = matplotlib.colormaps[cmap].with_extremes(bad="lightgrey")
    image = ax.imshow(
        frame.to_numpy(), origin="lower", aspect="auto", cmap=colours, vmin=0, vmax=vmax, interpolation="nearest"
    )
    step = max(1, math.ceil(frame.shape[1] / 8))
    ax.set_xticks(range(0, frame.shape[1], step), [str(c) for c in frame.columns[::step]])
    ax.set_yticks(range(0, frame.shape[0], max(1, round(frame.shape[0] / 8))))
    ax.set_xlabel("chunk (compression order)")
    ax.set_ylabel("layer (0 = input side)")
    ax.grid(False)
    return image


def kept_heatmap(sweep: Sweep, err: str) -> Figure:
    """Per grid point: the mean kept share per layer × chunk (top) and its spread over the seeds (below)."""
    groups = _per_layer(sweep)
    cols = min(len(groups), 3)
    rows = math.ceil(len(groups) / cols)
    fig = Figure(figsize=(3.7 * cols + 1.6, 7.4 * rows + 0.9), layout="constrained")
    axes = fig.subplots(2 * rows, cols, squeeze=False)
    for i in range(len(groups), rows * cols):
        axes[2 * (i // cols), i % cols].set_visible(False)
        axes[2 * (i // cols) + 1, i % cols].set_visible(False)
    for i, g in enumerate(groups):
        top, bottom = axes[2 * (i // cols), i % cols], axes[2 * (i // cols) + 1, i % cols]
        kept = g["rows"].assign(pct=lambda d: 100 * d["kept"] / d["num_tokens"])
        per_seed = kept.pivot_table(index=["layer", "chunk"], columns=SEED, values="pct")
        mean_image = _heat(top, per_seed.mean(axis=1).unstack("chunk"), "viridis", 100)
        spread_image = _heat(bottom, _spread(per_seed, err).unstack("chunk"), "Reds", 100)
        n = int(g["point"]["n"])
        seeds = f"{n} seed" + "s" * (n > 1)
        top.set_title(
            f"{g['label']}\nretention {g['point']['retention_mean'] * 100:.0f} %, mean of {seeds}", fontsize=10.5
        )
        bottom.set_title(f"{g['label']}: spread over {seeds}" + (" (none: grey)" if n < 2 else ""), fontsize=10.5)
    for r in range(rows):  # one pair of colour bars per row of panels
        fig.colorbar(mean_image, ax=list(axes[2 * r]), label="kept, mean (% of chunk)", shrink=0.9)
        fig.colorbar(spread_image, ax=list(axes[2 * r + 1]), label=f"spread: {SPREAD_TEXT[err]} (pp)", shrink=0.9)
    _suptitle(fig, sweep, "Kept tokens per layer × chunk (top: mean; below: spread over demo seeds)", None)
    return fig


def js_per_layer(sweep: Sweep, err: str) -> Figure:
    groups = _per_layer(sweep)
    groups = [g for g in groups if g["rows"]["js"].notna().any()]
    if not groups:
        raise SweepError(f"no accepted JS values in sweep {sweep.name!r} (only methods without a JS search, or δ = 0)")
    fig = Figure(figsize=(8.5, 4.8), layout="constrained")
    ax = fig.subplots()
    positive = []
    for j, g in enumerate(groups):
        per_run = g["rows"].groupby([SEED, "layer"])["js"].mean().unstack(SEED)
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
    _legend_below(fig, ax)
    _suptitle(fig, sweep, "Accepted JS divergence per layer", err, "bands")
    return fig


def token_kinds(sweep: Sweep, err: str) -> Figure:
    groups = _per_layer(sweep)
    rows = pd.concat([g["rows"] for g in groups])
    kinds = [k for k in KIND_COLOURS if rows.get(f"tokens_{k}", pd.Series(dtype=float)).sum() > 0]
    absent = [k for k in KIND_COLOURS if k not in kinds]
    fig, axes = _grid(len(groups), 4.4, 3.6)
    for ax, g in zip(axes, groups):
        per = g["rows"].groupby([SEED, "layer"])[[f"tokens_{k}" for k in kinds] + [f"kept_{k}" for k in kinds]].sum()
        for k in kinds:
            pruned = (100 * (1 - per[f"kept_{k}"] / per[f"tokens_{k}"])).unstack(SEED)
            _band(ax, pruned.index, pruned, KIND_COLOURS[k], k, None, err)
        ax.set_ylim(-3, 103)
        ax.set_xlabel("layer (0 = input side)")
        ax.set_ylabel("pruned (% of that kind's tokens)")
        ax.set_title(f"{g['label']} (n={int(g['point']['n'])})")
    fig.legend(*axes[0].get_legend_handles_labels(), title="token kind", loc="outside right center")
    note = f" (no {', '.join(absent)} tokens in this task)" if absent else ""
    _suptitle(fig, sweep, f"Kinds of pruned tokens per layer{note}", err, "bands")
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
    agg = aggregate(sweep.runs, sweep.by)
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
                xerr=_yerr(agg.iloc[[j]], m, err, scale),
                yerr=_yerr(agg.iloc[[j]], "accuracy", err, 100),
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
    _suptitle(fig, sweep, "Cost vs accuracy (up and to the left is better)", err)
    return fig


DRAW = {
    "accuracy_vs_shots": accuracy_vs_shots,
    "accuracy_vs_param": accuracy_vs_param,
    "kept_heatmap": kept_heatmap,
    "js_per_layer": js_per_layer,
    "token_kinds": token_kinds,
    "cost_pareto": cost_pareto,
}
